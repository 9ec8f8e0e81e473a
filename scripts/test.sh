#!/usr/bin/env bash
# Install what the tests need (system packages, venv, plugin) and run the suite under
# a virtual X display (napari's canvas needs OpenGL, which Xvfb + Mesa provide).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "all,testing"
VENV=${VOLSR_VENV:-.venv}
export QT_QPA_PLATFORM=xcb
# One test process per core, at most 4 (pytest-xdist): every test runs torch on one
# thread (tests/conftest.py), so two cores run the suite in about half the time; more
# workers mostly add start-up (each imports napari and torch). VOLSR_TEST_WORKERS=0 runs
# in this process; a later -n among the arguments wins.
cores=$(nproc 2>/dev/null || echo 1)
WORKERS=${VOLSR_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}
exec xvfb-run -a -s "-screen 0 1280x1024x24" "$VENV/bin/python" -m pytest -n "$WORKERS" "$@"
