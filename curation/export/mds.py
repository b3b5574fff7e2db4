"""MosaicML Streaming (MDS) output: ``MDSWriter`` per domain and source shard, one merged ``index.json`` per domain.

Each source shard's documents of a domain go to ``mds/PREFIX/NNNNN/`` (written by streaming's own ``MDSWriter``
into the task's scratch folder, then renamed into place); ``mds/PREFIX/index.json`` lists every such folder's
shards, with basenames prefixed by the folder, exactly as ``streaming.base.util.merge_index`` builds it. So
``StreamingDataset(local="OUT/mds/PREFIX")`` reads the domain's documents in export order (the sidecar index's
``doc`` order). A sample is ``{"id": str, "text": str, "tokens": ndarray}``: the document's token ids without the
end-of-document id, which a packing consumer appends (``export_manifest.json`` ``tokenizer.eod_id``).

Importing ``streaming`` imports ``streaming.vision``, which needs torchvision, for image datasets this module never
uses. Where torchvision cannot be imported (this project's CI installs the CPU torch wheel only, and PyPI's
torchvision wheel is built against CUDA torch), ``import_streaming`` registers an empty ``streaming.vision`` first;
the text path (``MDSWriter``, ``StreamingDataset``) does not touch it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

#: ``--compression`` of an export -> MDS compression name (None: uncompressed shards).
MDS_COMPRESSION = {"none": None, "zstd": "zstd", "gzip": "gz"}


def import_streaming() -> Any:
    """The ``streaming`` package (see the module docstring for the torchvision stand-in)."""
    if "streaming" not in sys.modules and not _torchvision_importable():
        sys.modules.setdefault("streaming.vision", types.ModuleType("streaming.vision"))
    import streaming

    return streaming


def _torchvision_importable() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision  # noqa: F401
    except Exception:  # a CUDA build beside a CPU torch fails while registering its operators
        return False
    return True


def write_part(out: Path, ids: list[str], texts: list[str], tokens: list[list[int]], dtype: str,
               compression: str) -> None:
    """One MDS dataset of these documents at ``out`` (a fresh folder)."""
    streaming = import_streaming()
    columns = {"id": "str", "text": "str", "tokens": f"ndarray:{dtype}"}
    with streaming.MDSWriter(out=str(out), columns=columns, compression=MDS_COMPRESSION[compression],
                             size_limit=1 << 26, progress_bar=False) as w:
        for i, text, toks in zip(ids, texts, tokens):
            w.write({"id": i, "text": text, "tokens": np.asarray(toks, dtype=dtype)})


def merged_index(domain_dir: Path, parts: list[str]) -> dict[str, Any]:
    """The ``index.json`` of ``domain_dir`` over its sub-folders ``parts`` in order (merge_index's layout)."""
    shards = []
    for part in parts:
        obj = json.loads((domain_dir / part / "index.json").read_text())
        for shard in obj["shards"]:
            for key in ("raw_data", "zip_data", "raw_meta", "zip_meta"):
                if shard.get(key):
                    shard[key]["basename"] = f"{part}/{shard[key]['basename']}"
            shards.append(shard)
    return {"version": 2, "shards": shards}
