#!/usr/bin/env bash
# Set up (first time only), run the quickstart pipeline on local Ray, print the stats tables.
#   bash scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/curate run pipelines/quickstart.yaml "$@"
