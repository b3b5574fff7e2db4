"""Built-in stages; importing this package registers them.

Each group is imported on its own, so a worker image that lacks one group's dependencies (a GPU
scoring node without datatrove, say) can still run the others; using a stage of a group that
failed to import names the missing module.
"""

import importlib

#: Stage groups that could not be imported, with the error (reported by ``get_stage``).
UNAVAILABLE: dict[str, ImportError] = {}

for _group in ("filters", "dedup", "scoring", "rephrase", "pii", "decontam"):
    try:
        importlib.import_module(f"curation.stages.{_group}")
    except ImportError as _exc:
        UNAVAILABLE[_group] = _exc
