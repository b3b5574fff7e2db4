"""sha256 of files and streams, read in 1 MiB chunks so a shard of any size costs bounded memory."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO


def stream_digest(fh: BinaryIO) -> tuple[int, str]:
    """``(bytes read, sha256 hex)`` of ``fh`` from its position to its end."""
    h, size = hashlib.sha256(), 0
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        h.update(chunk)
        size += len(chunk)
    return size, h.hexdigest()


def file_digest(path: str | Path) -> str:
    """sha256 hex of a file (a ``Path``, a ``UPath`` of an object store, or a local path string)."""
    with (path.open("rb") if isinstance(path, Path) else open(path, "rb")) as fh:
        return stream_digest(fh)[1]
