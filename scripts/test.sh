#!/usr/bin/env bash
# Set up (with test tools and chromium), then run the whole test suite, browser tests included.
# Two worker processes (pytest-xdist), a test module to each at a time (--dist loadfile, so module fixtures are
# built once): on 2 cores the suite took 14:35 against 24:58 in one process, since browser, server and
# subprocess tests wait more than they compute; each worker's torch gets one thread (tests/conftest.py).
# MEDWB_TEST_WORKERS=0 runs it in one process; extra arguments go to pytest (a later -n wins).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh dev
. .venv/bin/activate
python -m pytest -q -n "${MEDWB_TEST_WORKERS:-2}" --dist loadfile "$@"
