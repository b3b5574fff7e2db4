"""Run directories on local disk or on an object store (``s3://``, ``gs://``, any fsspec URL).

Local paths stay ``pathlib.Path`` and keep the fsync + rename publication of ``atomic.py``.
URLs become ``upath.UPath`` objects, which offer the same path API over fsspec; there a file is
written to a local temporary file first and uploaded in one ``put`` when complete, because an
object store shows an object only once its upload has finished (no half-written object is ever
visible) while a streamed upload that fails half way would still be committed by fsspec's close.

Endpoints and credentials come from the usual environment (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ... or the instance's role); ``forward_env`` gives what Ray workers need.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

#: Object-store settings forwarded to Ray workers. Never credentials: a runtime_env is visible in
#: the Ray dashboard, so nodes get theirs from their own environment or instance role.
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")

#: Suffix of a file being written; every reader ignores such files (``curation.io.atomic``).
TMP_SUFFIX = ".tmp"


def is_url(path: str | os.PathLike[str]) -> bool:
    """True for ``scheme://...`` paths other than ``file://``."""
    s = str(path)
    return "://" in s and not s.startswith("file://")


def run_path(path: str | os.PathLike[str]) -> Path:
    """A path object for ``path``: ``Path`` locally, a ``UPath`` (a ``Path``-like) for URLs."""
    if not is_url(path):
        return Path(str(path).removeprefix("file://"))
    from upath import UPath

    return UPath(str(path).rstrip("/"))  # type: ignore[return-value]


def is_remote(path: Path) -> bool:
    """True for object-store paths (``UPath`` over a non-local fsspec filesystem)."""
    return getattr(path, "protocol", "") not in ("", "file", "local")


def remove_tree(path: Path) -> None:
    """Delete a folder and everything under it; missing is fine."""
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    fs = path.fs  # type: ignore[attr-defined]
    if fs.exists(path.path):  # type: ignore[attr-defined]
        fs.rm(path.path, recursive=True)  # type: ignore[attr-defined]


def local_temp(final: Path) -> Path:
    """Where a writer puts ``final`` while writing it: beside it locally, in the temp dir for URLs."""
    if not is_remote(final):
        return final.with_name(final.name + TMP_SUFFIX)
    import tempfile

    fd, name = tempfile.mkstemp(prefix="curation-", suffix="-" + final.name + TMP_SUFFIX)
    os.close(fd)
    return Path(name)


def upload(tmp: Path, final: Path) -> None:
    """Publish a finished local temp file as ``final`` (an object-store URL) and delete the temp file."""
    fs = final.fs  # type: ignore[attr-defined]
    try:
        fs.put_file(str(tmp), final.path)  # type: ignore[attr-defined]
    finally:
        tmp.unlink(missing_ok=True)


def arrow_source(path: Path) -> tuple[str, Any]:
    """``(path, filesystem)`` arguments for pyarrow / Ray Data readers and writers."""
    if not is_remote(path):
        return str(path), None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return path.path, PyFileSystem(FSSpecHandler(path.fs))  # type: ignore[attr-defined]


def forward_env() -> dict[str, str]:
    """Object-store settings of this process that workers on other nodes must see too."""
    return {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}


def read_parquet(path: str, columns: list[str] | None = None) -> Any:
    """``pyarrow.parquet.read_table`` for a local path or an fsspec URL."""
    import pyarrow.parquet as pq

    if not is_url(path):
        from curation.io.regular import open_regular

        with open_regular(path, "rb") as fh:  # a FIFO or device in the run is refused, never waited on
            return pq.read_table(fh, columns=columns)
    import fsspec

    fs, inner = fsspec.core.url_to_fs(path)
    return pq.read_table(inner, columns=columns, filesystem=fs)
