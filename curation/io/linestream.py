"""Bounded-memory line streams over plain or compressed input files.

A file is read in fixed-size decompressed chunks and split on ``\\n`` here, never with
``readline``/``for line in fh``: those hold a whole line in memory, so a multi-gigabyte line
without a newline would be read whole. A line over ``max_line_bytes`` is skipped up to its
newline and comes out as an :class:`Oversize` marker that keeps only its first bytes.

A decompressor failure (truncated stream, garbage bytes, bad CRC) becomes :class:`StreamCorrupt`;
a failure of the underlying file object (network, permissions) is re-raised as it is, so a
transient read error is never mistaken for a corrupt file.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import fsspec

#: Decompressed bytes per read: the unit of work and of memory besides the current line.
CHUNK_BYTES = 1 << 20
#: Compressed bytes fed to the zstd decompressor per call. Its output per call is bounded by
#: this times zstd's maximum expansion, so even a decompression bomb cannot return gigabytes at once.
_ZSTD_FEED = 16 * 1024
#: Bytes of an over-long line kept for the quarantine excerpt.
OVERSIZE_HEAD = 4096


class StreamCorrupt(Exception):
    """The compressed stream cannot be decoded past this point (truncated or damaged)."""


@dataclass
class Oversize:
    """A line longer than the cap: its size in bytes and its first ``OVERSIZE_HEAD`` bytes."""

    size: int
    head: bytes


class TrackedFile:
    """File-object proxy that remembers whether the underlying file itself raised.

    Lets callers tell a transport failure (re-raised, retryable) from a decoder failure on bytes
    that were read fine (a corrupt file).
    """

    def __init__(self, fh: Any) -> None:
        self._fh = fh
        self.failed = False

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self._fh, name)(*args)
        except BaseException:
            self.failed = True
            raise

    def read(self, size: int = -1) -> bytes:
        return self._call("read", size)

    def readinto(self, buf: Any) -> int:
        return self._call("readinto", buf)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._call("seek", offset, whence)

    def tell(self) -> int:
        return self._call("tell")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return bool(self._fh.seekable())

    @property
    def closed(self) -> bool:
        return bool(self._fh.closed)

    def close(self) -> None:  # the opener's context manager closes the real file
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


_DECOMPRESSORS: dict[str, Any] = {".gz": gzip.GzipFile, ".bz2": bz2.BZ2File, ".xz": lzma.LZMAFile}


@contextmanager
def open_chunks(path: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Iterator[bytes]]:
    """Decompressed chunks of ``path`` (codec by extension: gz, bz2, xz, zst/zstd, else plain)."""
    name = path.lower()
    with fsspec.open(path, "rb") as fh:
        raw = TrackedFile(fh)
        if name.endswith((".zst", ".zstd")):
            yield _zstd_chunks(raw)
            return
        for ext, cls in _DECOMPRESSORS.items():
            if name.endswith(ext):
                yield _checked_chunks(cls(fileobj=raw, mode="rb") if ext == ".gz" else cls(raw, mode="rb"),
                                      raw, chunk_bytes)
                return
        yield _checked_chunks(raw, raw, chunk_bytes)


def _checked_chunks(stream: IO[bytes] | TrackedFile, raw: TrackedFile, chunk_bytes: int) -> Iterator[bytes]:
    # read1 on a decompressor returns after one step, so a failure loses only that step's
    # output; read(n) would throw away everything it had gathered towards n.
    read = getattr(stream, "read1", stream.read)
    while True:
        try:
            chunk = read(chunk_bytes)
        except MemoryError:
            raise
        except Exception as exc:
            if raw.failed:
                raise
            raise StreamCorrupt(f"{type(exc).__name__}: {exc}") from exc
        if not chunk:
            return
        yield chunk


def _zstd_chunks(raw: TrackedFile) -> Iterator[bytes]:
    """zstd frames decoded one after another. Done by hand because ``zstandard``'s stream reader
    returns a clean end of file for a truncated frame, which would lose the tail silently."""
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    dobj = dctx.decompressobj()
    in_frame = False
    pending: list[bytes] = []  # small outputs gathered into about CHUNK_BYTES (fewer, larger splits)
    size = 0
    while True:
        data = raw.read(_ZSTD_FEED)
        if not data:
            if pending:
                yield b"".join(pending)
            if in_frame:
                raise StreamCorrupt("truncated zstd stream: the last frame has no end")
            return
        while data:
            try:
                out = dobj.decompress(data)
            except zstandard.ZstdError as exc:
                if pending:
                    yield b"".join(pending)
                raise StreamCorrupt(f"ZstdError: {exc}") from exc
            in_frame = True
            pending.append(out)
            size += len(out)
            if size >= CHUNK_BYTES:
                yield b"".join(pending)
                pending, size = [], 0
            if dobj.eof:  # frame complete: the rest belongs to the next frame
                data = dobj.unused_data
                dobj = dctx.decompressobj()
                in_frame = False
            else:
                data = b""


def iter_lines(chunks: Iterator[bytes], max_line_bytes: int) -> Iterator[bytes | Oversize]:
    """Lines split on ``\\n`` (without it), holding at most ``max_line_bytes`` of one line.

    A final line without a newline is yielded when non-empty, as ``for line in fh`` does.
    """
    cap = max_line_bytes
    parts: list[bytes] = []  # pieces of the line that spans chunks, total under the cap
    size = 0  # bytes of that line so far
    head: bytes | None = None  # set once that line went over the cap

    def extend(piece: bytes) -> None:
        nonlocal parts, size, head
        size += len(piece)
        if head is None and size > cap:
            head = b"".join(parts)[:OVERSIZE_HEAD]
            head += piece[: OVERSIZE_HEAD - len(head)]
            parts = []
        elif head is None:
            parts.append(piece)

    for chunk in chunks:
        pieces = chunk.split(b"\n")
        extend(pieces[0])
        if len(pieces) == 1:
            continue  # no newline: the line goes on in the next chunk
        yield (b"".join(parts) if len(parts) != 1 else parts[0]) if head is None else Oversize(size, head)
        parts, size, head = [], 0, None
        middle = pieces[1:-1]  # whole lines inside this chunk: the hot path
        if middle and max(map(len, middle)) <= cap:
            yield from middle
        else:
            for piece in middle:
                yield piece if len(piece) <= cap else Oversize(len(piece), piece[:OVERSIZE_HEAD])
        extend(pieces[-1])
    if head is not None:
        yield Oversize(size, head)
    elif size:
        yield b"".join(parts)
