#!/usr/bin/env bash
# Install the plugin and run the main job: napari with a sample volume and the Restore
# panel; on a machine without a display, the same restore runs headless to a file.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh all
VENV=${VOLSR_VENV:-.venv}
exec "$VENV/bin/volsr" demo "$@"
