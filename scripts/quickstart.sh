#!/usr/bin/env bash
# The main job, end to end on the embedded default, from a fresh machine:
# set up, inspect the real data, train the default edge model on GRID, export INT8 through the gate,
# replay the recorded stream through the daemon and show what it logged.
# Steps that later issues add run only once their command exists; each step's output goes under $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DATA="${EDGEAV_DATA:-$(cd .. && pwd)/shared/data}"
OUT="${OUT:-runs/quickstart}"
mkdir -p "$OUT"
EDGEAV=.venv/bin/edgeav
if [ ! -d "$DATA" ]; then
  echo "[quickstart] no shared data at $DATA (set EDGEAV_DATA); generating a small SYNTHETIC set instead"
  DATA="$OUT/synthetic"
  .venv/bin/python -m edgeav.train.data.synthetic "$DATA"
fi
step() { echo; echo "[quickstart] $*"; }
step "1. inspect the data sets (sheets under $OUT)"
$EDGEAV data inspect "$DATA/birds" --sheet "$OUT/birds_sheet.png"
$EDGEAV data inspect "$DATA/grid" --sheet "$OUT/grid_sheet.png"
echo; echo "[quickstart] done: see $OUT"
