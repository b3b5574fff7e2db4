"""Effectively-once file writes: write to ``NAME.tmp`` in the same folder, fsync, rename.

A reader never sees a half-written file: every reader in this package ignores ``*.tmp``, and
the executor deletes stale temp files of a task before rerunning it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

TMP_SUFFIX = ".tmp"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """Open ``path + '.tmp'`` for binary writing; on success fsync and rename onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        with open(tmp, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def publish(tmp: str | Path, final: str | Path) -> None:
    """Rename a finished temp file onto its final name (same folder, atomic)."""
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    _fsync_dir(Path(final).parent)


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    with atomic_open(path) as fh:
        fh.write(json.dumps(data, indent=2, sort_keys=True, default=str).encode())


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
