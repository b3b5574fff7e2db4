"""A curation run's shards as the training loader reads them: untrusted input.

The manifest is curation's (``curation.io.manifest.read_any_manifest_bytes``: one reader, one ``ManifestError``),
of either kind (a ``curate run`` run's, or ``curate skill-order`` output's, whose shards are the rounds of a
curriculum), and so are its shard entries (``ShardEntry``): by the time the loader sees them their paths are plain
relative paths, their sizes non-negative integers and their sha256 64 hex digits. Here each entry is located inside
the run (local folder or object-store prefix; locally a symlink out of the run is refused too), its size is checked
when it is opened and, with ``verify_hashes`` (the default), it is read whole and the sha256 of the very bytes the
loader then parses is checked (``read_verified``)::

    {"name": ..., "shards": [{"path": "shards/00000-000.parquet", "rows": 120, "bytes": 48213,
                              "sha256": "<64 hex>"}, ...], ...}
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass

from curation.io.digest import DigestMismatch, read_checked
from curation.io.manifest import (
    ManifestError,
    OrderedRunManifest,
    ShardEntry,
    manifest_path,
    read_any_manifest_bytes,
    safe_shard_path,
)
from curation.io.storage import run_path


@dataclass(frozen=True)
class RunShard:
    """One shard entry of a run's manifest, located: ``path`` is its full path (or URL), checked to lie inside the
    run; ``where`` names it in messages (``<manifest>: shard <i> (<path as listed>)``). ``round``: the curriculum
    round it holds when the run is skill-ordered output, else None."""

    entry: ShardEntry
    path: str
    where: str
    round: int | None = None


def run_shards(run: str) -> tuple[list[RunShard], str]:
    """``run``'s shards in manifest order, located, and the fingerprint of its manifest's bytes (a resumed loader
    refuses a changed run). Raises curation's ``ManifestError`` naming the manifest (and the shard entry) for a
    bad manifest or a run without shards, ``NoManifestError`` (a ``ManifestError``) for an unfinished run."""
    root = run_path(run)  # a local folder or an object-store URL (s3://, gs://)
    manifest, raw = read_any_manifest_bytes(root)
    path = manifest_path(root)
    if not manifest.shards:
        raise ManifestError(f"run {run} has no shards: its curation kept no documents ({path})")
    # The record checked that round i is shard i.
    rounds = [r.round for r in manifest.rounds] if isinstance(manifest, OrderedRunManifest) else None
    shards = []
    for i, entry in enumerate(manifest.shards):
        where = f"{path}: shard {i} ({entry.path!r})"
        try:
            full = safe_shard_path(root, entry.path)  # follows symlinks: a link out of the run is refused
        except ValueError as e:
            raise ManifestError(f"{where}: {e}") from None
        shards.append(RunShard(entry, full, where, None if rounds is None else rounds[i]))
    return shards, hashlib.sha256(raw).hexdigest()[:16]


def check_size(shard: RunShard) -> None:
    """The shard's size on storage equals the manifest's ``bytes`` (a cheap stat, done on every open)."""
    if "://" in shard.path:
        import fsspec

        fs, inner = fsspec.core.url_to_fs(shard.path)
        actual = int(fs.size(inner))
    else:
        try:
            st = os.stat(shard.path)
        except FileNotFoundError:
            raise ManifestError(f"{shard.where}: file {shard.path} is missing") from None
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the reader's open forever
            raise ManifestError(f"{shard.where}: {shard.path} is not a regular file (refused)")
        actual = st.st_size
    if actual != shard.entry.bytes:
        raise ManifestError(f"{shard.where}: size mismatch: manifest says {shard.entry.bytes} bytes, "
                            f"{shard.path} has {actual}")


def read_verified(shard: RunShard) -> bytes:
    """The shard's bytes, read once, whose size and sha256 equal the manifest's.

    The caller parses these bytes (``pyarrow.BufferReader``), never the file again: a shard replaced
    by other bytes of the same size between a check and a read cannot slip through, however long
    after the index was built the read comes. At most ``bytes + 1`` bytes are read (a file that grows
    is a size mismatch, not an unbounded read).
    """
    if "://" not in shard.path:
        check_size(shard)  # missing file, FIFO or other size: the cheap checks' own messages
    try:
        return read_checked(shard.path, shard.entry.bytes, shard.entry.sha256)
    except DigestMismatch as exc:
        raise ManifestError(f"{shard.where}: {exc}") from None
