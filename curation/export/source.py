"""The run an export reads: its manifest (``curation.io.manifest.RunManifest``) and its shards, each verified.

A run directory is untrusted input: shard paths go through ``safe_shard_path`` (inside the run), and a shard's
bytes are read once, checked against the manifest's size and sha256, and parsed from those same bytes, so what
is exported is exactly what the manifest (and its fingerprint, recorded in the export) describes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import ConfigError
from curation.io.digest import DigestMismatch, read_checked
from curation.io.manifest import RunManifest, safe_shard_path
from curation.io.storage import is_url, run_path


class ExportError(ConfigError):
    """An export cannot be made or read as asked; the message names the run, file or option."""


@dataclass(frozen=True)
class SourceShard:
    """One Parquet shard of the source run, as its manifest lists it."""

    index: int  # position in the manifest: the export's task number and its order of documents
    rel: str  # path relative to the run (``shards/00000-000.parquet``)
    path: str  # full local path or URL, checked to lie inside the run
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class SourceRun:
    root: str
    name: str
    fingerprint: str
    manifest_sha256: str
    shards: list[SourceShard]
    domains: dict[str, dict[str, int]]  # the manifest's per-domain docs/chars/tokens
    docs: int

    def identity(self) -> dict[str, Any]:
        """What an export records of its source (the run is found again by ``root``, checked by fingerprint)."""
        return {"run": self.root, "name": self.name, "fingerprint": self.fingerprint,
                "manifest_sha256": self.manifest_sha256, "shards": len(self.shards), "documents": self.docs}


def open_source(run: str | os.PathLike[str]) -> SourceRun:
    """The finished run at ``run``; ``ExportError`` when it has no manifest, a malformed one or no kept document."""
    root = run_path(run)
    root_str = str(root) if is_url(str(root)) else str(root.resolve())
    try:
        manifest, raw = RunManifest.read_bytes(root_str)  # shard entries vetted: plain relative paths, sizes, sha256
    except (ConfigError, FileNotFoundError) as exc:
        raise ExportError(str(exc)) from exc
    shards: list[SourceShard] = []
    for i, entry in enumerate(manifest.shards):
        try:
            path = safe_shard_path(root_str, entry.path)  # follows symlinks: a link out of the run is refused
        except ValueError as exc:
            raise ExportError(f"{root_str}/manifest.json: shard {i}: {exc}") from exc
        shards.append(SourceShard(i, entry.path, path, entry.rows, entry.bytes, entry.sha256))
    docs = manifest.totals.docs_out
    if docs == 0 or not any(s.rows for s in shards):
        raise ExportError(f"run {root_str} kept no documents: nothing to export (curate stats {root_str})")
    return SourceRun(root=root_str, name=manifest.name, fingerprint=manifest.fingerprint,
                     manifest_sha256=hashlib.sha256(raw).hexdigest(), shards=shards,
                     domains={d: c.to_json() for d, c in manifest.domains.items()}, docs=docs)


def read_shard(shard: SourceShard, columns: list[str]) -> pa.Table:
    """``columns`` of a shard, parsed from bytes whose size and sha256 equal the manifest's (else ExportError)."""
    try:
        data = read_checked(shard.path, shard.bytes, shard.sha256)
    except DigestMismatch as exc:
        raise ExportError(f"{shard.path}: {exc}") from None
    return pq.read_table(pa.BufferReader(data), columns=columns)
