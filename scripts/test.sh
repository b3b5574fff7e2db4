#!/usr/bin/env bash
# Set up (first time only) and run the whole test suite, slow, Ray and fault tests included.
#   bash scripts/test.sh  [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
exec .venv/bin/python -m pytest tests -q "$@"
