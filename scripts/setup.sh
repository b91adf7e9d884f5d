#!/usr/bin/env bash
# One-step set-up on a fresh Debian machine (root or sudo, no GPU needed):
#   Debian packages (only the missing ones) -> .venv -> every package of requirements.lock
#   (pointvl[all], CPU torch) -> pointvl itself (editable) -> a Jupyter kernel "PointVL-3D".
#   Re-running is cheap: a stamp of the pins skips pip.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive DS_BUILD_OPS=0 PIP_DISABLE_PIP_VERSION_CHECK=1
# open3d needs libusb; torch/open3d use OpenMP; DeepSpeed's ZeRO-3 CPU op JIT-compiles with
# g++; the page test (tests/test_notebooks.py, pointvl.viz.pagecheck) opens pages in chromium
APT_PACKAGES=(libusb-1.0-0 libgomp1 g++ chromium)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY="$cand"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "[setup] error: Python 3.11 not found (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
# a .venv copied from elsewhere (its prefix is another folder) is rebuilt, never trusted
if [ -x .venv/bin/python ] && [ "$(.venv/bin/python -c 'import sys; print(sys.prefix)')" != "$PWD/.venv" ]; then
  echo "[setup] .venv belongs to another folder: recreating it"; rm -rf .venv
fi
[ -x .venv/bin/python ] || { echo "[setup] creating .venv with $PY"; "$PY" -m venv .venv; }

stamp=.venv/.pointvl-setup
want=$(cat pyproject.toml requirements.lock scripts/setup.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing requirements.lock (pointvl[all], CPU torch) and pointvl into .venv"
  .venv/bin/python -m pip install -q -r requirements.lock
  .venv/bin/python -m pip install -q --no-deps -e .
  .venv/bin/python -m ipykernel install --sys-prefix --name pointvl-3d --display-name "PointVL-3D" >/dev/null
  echo "$want" > "$stamp"
fi
.venv/bin/dvc config --local core.analytics false >/dev/null 2>&1 || true
echo "[setup] ready: $(.venv/bin/python -c 'import torch, pointvl; print("torch", torch.__version__, "| pointvl", pointvl.__version__)')"
