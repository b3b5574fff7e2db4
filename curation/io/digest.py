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


class DigestMismatch(ValueError):
    """A file's bytes are not the ones its manifest records (size or sha256); the message names both."""


def read_checked(path: str, size: int, sha256: str) -> bytes:
    """The bytes of ``path`` (a local path or an fsspec URL), read once, whose size and sha256 equal ``size`` and
    ``sha256``; ``DigestMismatch`` otherwise.

    Callers parse these bytes, never the file again: a file replaced by other bytes between a check and a read
    cannot slip through. At most ``size + 1`` bytes are read (a file that grew is a mismatch, not an unbounded
    read), and a local FIFO or device is refused rather than waited on (``open_regular``).
    """
    if "://" in path:
        import fsspec

        fs, inner = fsspec.core.url_to_fs(path)
        fh = fs.open(inner, "rb")
    else:
        from curation.io.regular import open_regular

        fh = open_regular(path, "rb")
    with fh:
        data = fh.read(size + 1)
    if len(data) != size:
        raise DigestMismatch(f"size mismatch: manifest says {size} bytes, {path} has "
                             f"{len(data) if len(data) <= size else 'more'}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise DigestMismatch(f"sha256 mismatch: manifest says {sha256}, {path} has {digest}")
    return data

