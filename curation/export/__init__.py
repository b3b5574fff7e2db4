"""``curate export`` / ``curate trace``: a finished run as Megatron, MDS or JSON-lines training data, and back.

``export_run`` (``build.py``) tokenizes a run's shards into one output per domain with a document index sidecar
and ``export_manifest.json``; ``trace`` (``trace.py``) names the documents a training step read under the
documented reference sampler, and ``sources`` looks them up in the source run. ``docs/export.md`` describes the
formats, the blend, the sampler and the manifest.
"""

from curation.export.build import ExportResult, export_run
from curation.export.source import ExportError

__all__ = ["ExportError", "ExportResult", "export_run"]
