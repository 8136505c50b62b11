#!/usr/bin/env bash
# Set up (with test tools and chromium), then run the whole test suite, browser tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh dev
. .venv/bin/activate
python -m pytest -q "$@"
