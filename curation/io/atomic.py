"""Effectively-once file writes: write to ``NAME.tmp`` in the same folder, fsync, rename.

A reader never sees a half-written file: every reader in this package ignores ``*.tmp``, and
the executor deletes stale temp files of a task before rerunning it. For an object-store URL the
temp file is local and the finished file is uploaded in one piece (``curation.io.storage``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from curation.io.storage import is_remote, local_temp, run_path, upload


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """Open a temp file for binary writing; on success publish it as ``path`` (``publish``)."""
    path = run_path(path) if isinstance(path, str) else path
    if not is_remote(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = local_temp(path)
    try:
        with open(tmp, "wb") as fh:
            yield fh
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def publish(tmp: str | Path, final: str | Path) -> None:
    """Make a finished temp file visible as ``final``: fsync and rename in the same folder, or
    one upload to an object store (``storage.local_temp`` made ``tmp`` local in that case)."""
    if is_remote(final):  # type: ignore[arg-type]
        upload(Path(tmp), final)  # type: ignore[arg-type]
        return
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    _fsync_dir(Path(final).parent)


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    with atomic_open(path) as fh:
        fh.write(json.dumps(data, indent=2, sort_keys=True, default=str).encode())


def read_json(path: str | Path) -> Any:
    path = run_path(path) if isinstance(path, str) else path
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)
