"""``curate export`` / ``curate trace``: a finished run as Megatron, MDS or JSON-lines training data, and back.

``export_run`` (``build.py``) tokenizes a run's shards into one output per domain with a document index sidecar
and ``export_manifest.json``; ``trace`` (``trace.py``) names the documents a training step read under the
documented reference sampler, and ``sources`` looks them up in the source run. ``docs/export.md`` describes the
formats, the blend, the sampler and the manifest.

Names are imported on first use: ``curation.cli`` registers the commands (``curation.export.cli``) without
paying for pyarrow and numpy on every ``curate`` start.
"""

from __future__ import annotations

from typing import Any

_NAMES = {"export_run": "curation.export.build", "ExportResult": "curation.export.build",
          "ExportError": "curation.export.source", "trace": "curation.export.trace",
          "sources": "curation.export.trace", "verify_export": "curation.export.verify"}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'curation.export' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_NAMES[name]), name)
