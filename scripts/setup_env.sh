#!/usr/bin/env bash
# Create (or reuse) .venv and install medwb with pinned, known-good versions.
# torch 2.13.0 (CPU build) goes in first so nothing pulls the CUDA build.
# Usage: bash scripts/setup_env.sh [dev]     ("dev" adds the test tools and poppler-utils)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q torch==2.13.0
python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
if [ "${1:-}" = "dev" ]; then
  pip install -q -c constraints.txt -e ".[dev]"
else
  pip install -q -c constraints.txt -e .
fi
# Debian's chromium prints the PDF reports (and drives the browser tests); pdftoppm checks PDF pages in tests.
# Never a downloaded browser. Installed with apt when missing and we are root; otherwise say what to install.
need=""
command -v chromium >/dev/null 2>&1 || need="chromium"
if [ "${1:-}" = "dev" ]; then command -v pdftoppm >/dev/null 2>&1 || need="$need poppler-utils"; fi
if [ -n "$need" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages:$need"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
  else
    echo "missing Debian packages:$need (PDF reports and browser tests need them): sudo apt-get install$need" >&2
  fi
fi
python -c "import medwb, torch; print('medwb', medwb.__version__, '| torch', torch.__version__)"
