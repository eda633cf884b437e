#!/usr/bin/env bash
# The main job, end to end on the embedded default, from a fresh machine:
#   set up -> inspect the real data -> train the default edge model on GRID -> export INT8 through the gate
#   -> replay the recorded stream, scored against its segment labels -> run the field daemon over it (detection log
#   + evidence clips) -> show what it logged.
# Everything it writes goes under $OUT (default runs/quickstart).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DATA="${EDGEAV_DATA:-$(cd .. && pwd)/shared/data}"
OUT="${OUT:-runs/quickstart}"
mkdir -p "$OUT"
EDGEAV=.venv/bin/edgeav
step() { echo; echo "[quickstart] $*"; }
T0=$(date +%s)

if [ -d "$DATA/grid" ] && [ -d "$DATA/streams" ]; then
  GRID="$DATA/grid"
  STREAM="$DATA/streams/grid_stream_120s.mp4"
  TRUTH="$DATA/streams/grid_stream_120s.csv"
  TEST_NOISE="$DATA/streams/birdnet_soundscape_120s.flac"  # the OTHER field recording: noise it never trained on
  step "1. inspect the real data sets (sheets under $OUT)"
  if [ -d "$DATA/birds" ]; then
    $EDGEAV data inspect "$DATA/birds" --config train/birds.yaml --sheet "$OUT/birds_sheet.png"
  fi
  $EDGEAV data inspect "$GRID" --config train/grid.yaml --sheet "$OUT/grid_sheet.png"
else
  echo "[quickstart] no real data at $DATA (set EDGEAV_DATA): using a SMALL SYNTHETIC set that edgeav generates;"
  echo "[quickstart] its figures say nothing about real recordings"
  SYN="$OUT/synthetic"
  .venv/bin/python -m edgeav.train.synthetic_video "$SYN"
  GRID="$SYN/videos"
  STREAM="$SYN/stream.mp4"
  TRUTH="$SYN/stream.csv"
  TEST_NOISE=""
  step "1. inspect the SYNTHETIC data set"
  $EDGEAV data inspect "$GRID" --config train/grid.yaml --sheet "$OUT/synthetic_sheet.png"
fi

step "2. train the default edge model (edgeav-small) on $GRID"
$EDGEAV train --config train/grid.yaml --data "$GRID" --out "$OUT/grid"

step "3. evaluate it on the held-out split"
$EDGEAV eval "$OUT/grid/best.pt" --data "$GRID" --split test
if [ -n "$TEST_NOISE" ]; then
  step "3b. robustness: the same clips with field noise (a bird soundscape), fused vs sound alone vs picture alone"
  $EDGEAV eval "$OUT/grid/best.pt" --data "$GRID" --split test --noise "$TEST_NOISE" --snr-db=20,10,0,-5 \
    --out "$OUT/robustness"
fi

step "4. export INT8 for the cpu profile, through the accuracy gate"
rm -rf "$OUT/bundle"
$EDGEAV export "$OUT/grid/best.pt" --out "$OUT/bundle" --int8 --calib-data "$GRID" --device cpu

step "5. replay the recorded stream through GStreamer, scored against its segment labels"
$EDGEAV run --bundle "$OUT/bundle" --source "file://$(realpath "$STREAM")" --ground-truth "$TRUTH"

step "6. the field daemon (edgeav run --config) over the same stream: detection log + evidence clips"
rm -rf "$OUT/daemon"
mkdir -p "$OUT/daemon"
D="$(realpath "$OUT/daemon")"
cat > "$D/daemon.yaml" <<EOF
# written by scripts/quickstart.sh; runtime/daemon.example.yaml is the template for a field unit
runtime:
  source:
    uri: file://$(realpath "$STREAM")
daemon:
  bundle: $(realpath "$OUT/bundle")
  sensors: combined   # one file holds both; on a unit, camera and microphone run apart (split)
  realtime: false     # as fast as it decodes; a camera and a microphone set the pace themselves
  store:
    db_path: $D/detections.db
  evidence:
    dir: $D/evidence
  metrics:
    enabled: false
EOF
$EDGEAV run --config "$D/daemon.yaml"

step "7. what the daemon logged (evidence: the WAV + JPEG of each detection)"
$EDGEAV detections --db "$D/detections.db" --limit 20
echo "[quickstart] in a browser (photo, spectrogram, sound, reviews): $EDGEAV serve --db $D/detections.db  -> http://127.0.0.1:8080"

echo; echo "[quickstart] done in $(( $(date +%s) - T0 )) s after set-up: see $OUT"
