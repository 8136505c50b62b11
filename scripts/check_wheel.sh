#!/usr/bin/env bash
# medwb as a user installs it: `pip install .` into a fresh venv outside the repository, then from another folder
# `medwb demo --quick` and `medwb report` on the study the demo wrote. Takes a few minutes (installs every dependency).
# Usage: bash scripts/check_wheel.sh [WORK_DIR]     (default: a new temporary folder; kept for inspection)
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-$(mktemp -d -t medwb-wheel-XXXXXX)}"
mkdir -p "$WORK/elsewhere"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$PY" -m venv "$WORK/venv"
. "$WORK/venv/bin/activate"
pip install -q torch==2.13.0
pip install -q -c "$REPO/constraints.txt" "$REPO"
cd "$WORK/elsewhere"
python -c "import medwb; print('medwb imported from', medwb.__file__)"
case "$(python -c 'import medwb; print(medwb.__file__)')" in
  "$REPO"/*) echo "medwb was imported from the repository, not the installed wheel" >&2; exit 1 ;;
esac
medwb demo --quick --out "$WORK/demo"
medwb report "$WORK/demo/simulation/studies/hybrid-seed0" --out "$WORK/report" --no-pdf
medwb notebooks "$WORK/notebooks"
echo "OK: demo $WORK/demo/index.html, report $WORK/report, notebooks $WORK/notebooks"
