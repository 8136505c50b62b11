#!/usr/bin/env bash
# The main job: set up, then run the end-to-end study on the bundled real data; prints where the report is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
medwb demo --out reports "$@"
