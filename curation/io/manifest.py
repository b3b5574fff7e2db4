"""Paths read from a run's manifest or markers are untrusted input: resolve them only inside the run.

A manifest is a JSON file anyone who can write the run directory (or hand over a copy of it) can
edit. Code that follows its ``path`` fields (shards, decisions, quarantine files) must never be
led outside the run: ``safe_shard_path`` is the one check every such reader goes through.
"""

from __future__ import annotations

import os
from pathlib import Path

from curation.io.storage import is_remote, run_path



def _refuse(run: Path, rel: object, why: str) -> ValueError:
    return ValueError(f"{run / 'manifest.json'}: unsafe path {rel!r}: {why}")


#: Each refusal of the one path rule, worded for ``unsafe path 'X': ...`` (curation's readers) and for
#: ``the path ...`` (the training loader's messages).
_WORDS = {
    "type": ("not a non-empty string", "is not a non-empty string"),
    "nul": ("backslash or NUL character", "contains a NUL character"),
    "backslash": ("backslash or NUL character", "contains a backslash"),
    "colon": ("a URL or drive, not a path relative to the run", "contains ':' (a URL scheme or a drive letter)"),
    "absolute": ("absolute path", "is absolute"),
    "dotdot": ("empty, '.' or '..' component", "contains '..'"),
    "empty": ("empty, '.' or '..' component", "has an empty or '.' component"),
}


def _violation(rel: object) -> str | None:
    """Which rule ``rel`` breaks (a key of ``_WORDS``), or None for a plain relative path."""
    if not isinstance(rel, str) or not rel:
        return "type"
    if "\0" in rel:
        return "nul"
    if "\\" in rel:
        return "backslash"
    if ":" in rel:
        return "colon"
    if rel.startswith(("/", "~")):
        return "absolute"
    parts = rel.split("/")
    if ".." in parts:
        return "dotdot"
    if "" in parts or "." in parts:
        return "empty"
    return None


def unsafe_reason(rel: object) -> str | None:
    """Why ``rel`` is not a plain relative path inside a run, as "the path <reason>" reads (None when it is).
    The one rule every reader of manifest paths applies: curation's readers, ``curate verify``, the loader."""
    rule = _violation(rel)
    return None if rule is None else _WORDS[rule][1]


def check_relative(run: str | os.PathLike[str], rel: object) -> str:
    """``rel`` itself if it is a plain relative path (``a/b.parquet``), else ValueError naming it."""
    rule = _violation(rel)
    if rule is not None:
        raise _refuse(run_path(run), rel, _WORDS[rule][0])
    assert isinstance(rel, str)
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
        raise _refuse(root, rel, f"resolves outside the run (it resolves to {full_path}, outside the run "
                                 f"directory {base_dir})")
    return str(base_dir / rel)
