#!/usr/bin/env bash
# The test command: set up (apt + .venv), then run pytest. Extra arguments go to pytest, e.g. -m slow.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
