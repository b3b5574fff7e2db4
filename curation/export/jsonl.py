"""JSON-lines output: ``{"text", "id", "domain", "source", "url", "n_tokens"}`` per document, gzip or zstd.

``n_tokens`` is the document's token count without the end-of-document id; ``url`` is left out when the run has
none. Files are published atomically (``curation.io.atomic``) and compressed deterministically (gzip without a
timestamp), so a rerun of a source shard rewrites the same bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any, BinaryIO

from curation.io.atomic import atomic_open

EXTENSIONS = {"zstd": "zst", "gzip": "gz"}


class _Hashing:
    """A binary sink that hashes and counts what passes to ``fh``."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh, self.h, self.size = fh, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.h.update(data)
        self.size += len(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


def write_file(path: Path, records: list[dict[str, Any]], compression: str) -> dict[str, Any]:
    """Publish ``records`` as compressed JSON lines at ``path``; its ``{bytes, sha256}``."""
    if compression not in EXTENSIONS:
        raise ValueError(f"jsonl compression {compression!r}: use zstd or gzip")
    with atomic_open(path) as raw:
        sink = _Hashing(raw)
        if compression == "gzip":
            stream: Any = gzip.GzipFile(fileobj=sink, mode="wb", mtime=0, filename="")  # type: ignore[arg-type]
        else:
            import zstandard

            stream = zstandard.ZstdCompressor(level=3).stream_writer(sink, closefd=False)  # type: ignore[arg-type]
        for rec in records:
            stream.write(json.dumps(rec, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n")
        stream.close()
    return {"bytes": sink.size, "sha256": sink.h.hexdigest()}
