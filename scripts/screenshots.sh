#!/usr/bin/env bash
# Regenerate the service screenshots in docs/img/ (the browser tests take them; the suite itself writes them to
# a temp folder so a test run never changes the repository).
#   bash scripts/screenshots.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
CURATE_SCREENSHOTS_DIR="$PWD/docs/img" .venv/bin/python -m pytest -q \
    tests/curation/service/test_browser.py tests/curation/service/test_browser_submit.py
git status --short docs/img
