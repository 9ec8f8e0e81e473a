#!/usr/bin/env bash
# Install what the tests need (system packages, venv, plugin) and run the suite under
# a virtual X display (napari's canvas needs OpenGL, which Xvfb + Mesa provide).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "all,testing"
VENV=${VOLSR_VENV:-.venv}
export QT_QPA_PLATFORM=xcb
exec xvfb-run -a -s "-screen 0 1280x1024x24" "$VENV/bin/python" -m pytest "$@"
