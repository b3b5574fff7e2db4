"""Open run files only when they are regular files, without ever blocking on the open.

Anyone who can write a run directory can put a FIFO, a socket or a device where a shard, the manifest
or a marker should be. ``open()`` on a FIFO blocks until a writer appears (forever, for a reader of
someone else's run), and a character device such as ``/dev/zero`` reached through a symlink never ends.
So every reader of a local run file goes through this module:

- ``open_regular`` opens with ``O_NONBLOCK`` (an open of a FIFO returns at once instead of waiting for
  a writer), checks the *opened* descriptor with ``fstat`` + ``S_ISREG`` (no window between the check
  and the open), then clears ``O_NONBLOCK`` and hands back an ordinary file object;
- ``check_regular`` is the ``stat`` + ``S_ISREG`` check for paths handed to code that opens them itself
  (DuckDB's ``read_parquet``): it narrows the window to the time between the check and that open.

Object-store paths (``UPath`` or URLs) hold objects only, which are always regular: they pass through.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path
from typing import IO, Any

from curation.errors import CurationError

_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"))


class NotRegularFileError(CurationError, OSError):
    """A run file is a FIFO, socket, device or directory; the message names the file and what it is."""


def _is_url(path: Any) -> bool:
    if getattr(path, "protocol", "") not in ("", "file", "local"):
        return True  # a UPath of an object store
    s = str(path)
    return "://" in s and not s.startswith("file://")


def _refusal(path: Any, mode: int) -> NotRegularFileError:
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return NotRegularFileError(f"{path}: refused: it is {kind}, not a regular file")


def check_regular(path: str | os.PathLike[str]) -> None:
    """Raise ``NotRegularFileError`` unless the local ``path`` (symlinks followed) is a regular file;
    FileNotFoundError passes through. Object-store paths always pass."""
    if _is_url(path):
        return
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise _refusal(path, mode)


def open_regular(path: str | os.PathLike[str], mode: str = "rb", encoding: str | None = None) -> IO[Any]:
    """``path`` opened for reading (``"rb"`` or ``"r"``), refusing anything but a regular file without
    blocking on it; see the module docstring. Object-store paths open through their filesystem."""
    if mode not in ("rb", "r"):
        raise ValueError(f"open_regular reads only, got mode {mode!r}")
    if _is_url(path):
        if isinstance(path, Path):
            return path.open(mode, encoding=encoding) if mode == "r" else path.open(mode)
        import fsspec

        return fsspec.open(str(path), mode, encoding=encoding).open()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st_mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(st_mode):
            raise _refusal(path, st_mode)
        # Regular files ignore O_NONBLOCK for reads, but leave the descriptor as an ordinary one.
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, mode, encoding=encoding if mode == "r" else None)
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a regular run file (``open_regular``)."""
    with open_regular(path, "rb") as fh:
        return fh.read()


def read_text(path: str | os.PathLike[str]) -> str:
    """The UTF-8 text of a regular run file (``open_regular``)."""
    with open_regular(path, "r", encoding="utf-8") as fh:
        return fh.read()
