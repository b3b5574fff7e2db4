#!/usr/bin/env bash
# The prepared GPU check (docs/gpu.md): CUDA scoring, GPU rephrasing, NCCL training + resume, GPU benchmarks.
#   bash scripts/gpu_check.sh --dry-run                       # CPU/CI: every step up to its first CUDA call
#   bash scripts/gpu_check.sh --prepare .gpucheck             # CPU: build the tiny model and run to carry over
#   bash scripts/gpu_check.sh --workdir .gpucheck --out summary.json   # on the GPU machine (no internet)
# Python: $GPU_PYTHON, else the project's .venv, else python3 (a GPU image's own torch). Wheels of packages the
# image lacks (e.g. zstandard) may be put in .whl/ and are installed offline into a private target first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${GPU_PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpucheck-site .whl/*.whl
  export PYTHONPATH="/tmp/gpucheck-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
exec "$PY" scripts/gpu_check.py "$@"
