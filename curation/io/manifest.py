"""Paths read from a run's manifest or markers are untrusted input: resolve them only inside the run.

A manifest is a JSON file anyone who can write the run directory (or hand over a copy of it) can
edit. Code that follows its ``path`` fields (shards, decisions, quarantine files) must never be
led outside the run: ``safe_shard_path`` is the one check every such reader goes through.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from curation.io.storage import is_remote, run_path

#: ``s3:``, ``file:``, ``C:`` ...: anything that looks like a scheme or a drive letter.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _refuse(run: Path, rel: object, why: str) -> ValueError:
    return ValueError(f"{run / 'manifest.json'}: unsafe path {rel!r}: {why}")


def check_relative(run: str | os.PathLike[str], rel: object) -> str:
    """``rel`` itself if it is a plain relative path (``a/b.parquet``), else ValueError naming it."""
    root = run_path(run)
    if not isinstance(rel, str) or not rel:
        raise _refuse(root, rel, "not a non-empty string")
    if "\\" in rel or "\0" in rel:
        raise _refuse(root, rel, "backslash or NUL character")
    if _SCHEME.match(rel) or "://" in rel:
        raise _refuse(root, rel, "a URL or drive, not a path relative to the run")
    if rel.startswith("/") or rel.startswith("~"):
        raise _refuse(root, rel, "absolute path")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise _refuse(root, rel, "empty, '.' or '..' component")
    return rel


def safe_shard_path(run: str | os.PathLike[str], rel: object) -> str:
    """The full path (or URL) of manifest entry ``rel`` of run ``run``, refusing anything that is
    not a plain relative path inside the run: absolute paths, ``..``, backslashes, schemes; locally
    also a symlink that leads out of the run. Raises ValueError naming the manifest and the path."""
    root = run_path(run)
    rel = check_relative(run, rel)
    if is_remote(root):
        base = str(root).rstrip("/")
        full = f"{base}/{rel}"
        if not full.startswith(base + "/"):  # cannot happen after check_relative; kept as the invariant
            raise _refuse(root, rel, "outside the run prefix")
        return full
    base_dir = Path(root).resolve()
    full_path = (base_dir / rel).resolve()
    # is_relative_to compares whole components: /data/out-evil is not inside /data/out.
    if full_path == base_dir or not full_path.is_relative_to(base_dir):
        raise _refuse(root, rel, f"resolves outside the run (to {full_path})")
    return str(base_dir / rel)
