"""A curation run's ``manifest.json`` as the training loader reads it: untrusted input.

A manifest names its shards by path; the loader opens only paths that are plain relative paths
inside the run (local folder or object-store prefix), and checks each shard's size against the
manifest when it opens it and, with ``verify_hashes`` (the default), reads it whole and checks the sha256 of
the very bytes it then parses (``read_verified``). A manifest is what a curation run
wrote (``curation.io.manifest.RunManifest``)::

    {"name": ..., "shards": [{"path": "shards/00000-000.parquet", "rows": 120, "bytes": 48213,
                              "sha256": "<64 hex>"}, ...], ...}
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from typing import Any

from curation.io.manifest import ManifestError as RunManifestError
from curation.io.manifest import NoManifestError, manifest_path, read_manifest_bytes, safe_shard_path, unsafe_reason
from curation.io.digest import DigestMismatch, read_checked, stream_digest
from curation.io.regular import open_regular
from curation.io.storage import run_path

_SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """A manifest or shard the loader refuses; the message names the run, the shard and the field."""


@dataclass(frozen=True)
class Shard:
    path: str  # absolute local path or full URL, checked to lie inside the run
    rel: str  # as the manifest wrote it
    rows: int | None
    bytes: int
    sha256: str | None
    where: str  # "<manifest>: shard <i> (<rel>)", for messages


@dataclass(frozen=True)
class Manifest:
    run: str
    fingerprint: str  # of the manifest's bytes: a resumed loader refuses a changed run
    shards: list[Shard]


def _int_field(entry: dict[str, Any], key: str, where: str, required: bool) -> int | None:
    value = entry.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ManifestError(f"{where}: '{key}' must be a non-negative integer, got {value!r}")
    return value


def read_manifest(run: str) -> Manifest:
    """Parse and vet ``run``'s manifest; raises ``ManifestError`` naming the first bad shard entry."""
    root = run_path(run)  # a local folder or an object-store URL (s3://, gs://)
    path = manifest_path(root)
    try:
        manifest, raw = read_manifest_bytes(root, fields=())
    except NoManifestError:
        raise  # a FileNotFoundError: no finished run there
    except RunManifestError as e:  # not JSON or not an object: the loader's own error type
        raise ManifestError(str(e)) from e
    entries = manifest.get("shards")
    if not isinstance(entries, list):
        raise ManifestError(f"{path}: 'shards' must be a list of shard entries")
    if not entries:
        raise ManifestError(f"run {run} has no shards: its curation kept no documents ({path})")
    shards = []
    for i, entry in enumerate(entries):
        rel = entry.get("path") if isinstance(entry, dict) else None
        where = f"{path}: shard {i} ({rel!r})"
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: entry must be an object")
        why = unsafe_reason(rel)
        if why:
            raise ManifestError(f"{where}: refused: the path {why}; shard paths must be plain relative paths "
                                "inside the run")
        try:
            # Its own name: ``path`` is the manifest's, which every later entry's message names.
            shard_path = safe_shard_path(root, rel)  # also follows symlinks: a link out of the run is refused
        except ValueError as e:
            raise ManifestError(f"{where}: {e}") from None
        sha = entry.get("sha256")
        if sha is not None and not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
            raise ManifestError(f"{where}: 'sha256' must be 64 lowercase hex digits, got {sha!r}")
        shards.append(Shard(path=shard_path, rel=rel, rows=_int_field(entry, "rows", where, False),
                            bytes=_int_field(entry, "bytes", where, True) or 0, sha256=sha, where=where))
    return Manifest(run=run, fingerprint=hashlib.sha256(raw).hexdigest()[:16], shards=shards)


def _fs_and_path(path: str) -> tuple[Any, str]:
    import fsspec

    return fsspec.core.url_to_fs(path)


def check_size(shard: Shard) -> None:
    """The shard's size on storage equals the manifest's ``bytes`` (a cheap stat, done on every open)."""
    if "://" in shard.path:
        fs, inner = _fs_and_path(shard.path)
        actual = int(fs.size(inner))
    else:
        try:
            st = os.stat(shard.path)
        except FileNotFoundError:
            raise ManifestError(f"{shard.where}: file {shard.path} is missing") from None
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the reader's open forever
            raise ManifestError(f"{shard.where}: {shard.path} is not a regular file (refused)")
        actual = st.st_size
    if actual != shard.bytes:
        raise ManifestError(f"{shard.where}: size mismatch: manifest says {shard.bytes} bytes, "
                            f"{shard.path} has {actual}")


def read_verified(shard: Shard) -> bytes:
    """The shard's bytes, read once, whose size and sha256 equal the manifest's.

    The caller parses these bytes (``pyarrow.BufferReader``), never the file again: a shard replaced
    by other bytes of the same size between a check and a read cannot slip through, however long
    after the index was built the read comes. At most ``bytes + 1`` bytes are read (a file that grows
    is a size mismatch, not an unbounded read).
    """
    if shard.sha256 is None:
        raise ManifestError(f"{shard.where}: verify_hashes is on but the manifest records no 'sha256' "
                            f"for {shard.path} (set data.verify_hashes: false to read it unchecked)")
    if "://" not in shard.path:
        check_size(shard)  # missing file, FIFO or other size: the cheap checks' own messages
    try:
        return read_checked(shard.path, shard.bytes, shard.sha256)
    except DigestMismatch as exc:
        raise ManifestError(f"{shard.where}: {exc}") from None


def check_sha256(shard: Shard) -> None:
    """The shard's sha256 equals the manifest's (reads the whole file)."""
    if shard.sha256 is None:
        raise ManifestError(f"{shard.where}: verify_hashes is on but the manifest records no 'sha256'")
    if "://" in shard.path:
        fs, inner = _fs_and_path(shard.path)
        fh = fs.open(inner, "rb")
    else:
        fh = open_regular(shard.path, "rb")
    with fh:
        digest = stream_digest(fh)[1]
    if digest != shard.sha256:
        raise ManifestError(f"{shard.where}: sha256 mismatch: manifest says {shard.sha256}, "
                            f"{shard.path} has {digest}")
