"""A run's dedup index on disk: what later runs read instead of the run's documents.

Every run writes ``RUN/dedup_index/`` beside its shards, describing the documents it *kept* (the
shards' final text): per document a position ``pos`` (its ordinal in shard order, 0-based), and

* ``exact/BBB.parquet``: ``hash`` (uint64, exact-dedup's hash of the normalised text), ``pos``, ``id``;
* ``bands/BBB.parquet``: ``key`` (int64, one MinHash LSH band key), ``pos``; one row per band;
* ``docs/BBB.parquet``: ``pos``, ``id``, ``sig`` (the MinHash signature and the shingle set's hash);
* ``shingles/BBB.parquet``: ``pos``, ``sh`` (the sorted shingle hashes the exact Jaccard check of
  verified near-dedup needs; absent for an index of unverified near-dedup). Apart from ``docs``
  because the signature joins need no shingles, and shingles are most of an index's bytes.

``BBB`` is a bucket: ``exact`` by hash, ``bands`` by band key, ``docs`` and ``shingles`` by ``pos``, each with the
same mixing function as the global stages' shuffles (``curation.stages.frame.bucket_of``) and a
power-of-two count of at most ``MAX_BUCKETS``. A later run groups its own keys by the same buckets
and reads, for each of its groups, only the files of those buckets: band keys are matched where
they lie, and signatures and shingles are read only from the ``docs`` buckets holding a matched
document. Empty buckets have no file.

The manifest's ``dedup_index`` entry names every file with its rows, bytes and sha256, plus the
hashing parameters. A reader (``CorpusIndex.read``) hashes the bytes it then parses, so an edited
or truncated file is refused with an error naming it (``DedupIndexError``), never used; ``curate
verify`` checks the same (``verify_index``).

This module knows files, not hashing: ``curation.stages.dedup.index`` computes the rows and the
bucket numbers.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import ConfigError
from curation.io.atomic import publish
from curation.io.digest import file_digest
from curation.io.layout import Layout
from curation.io.manifest import (
    DEDUP_INDEX,
    ManifestError,
    check_relative,
    check_schema,
    read_any_manifest,
    safe_shard_path,
)
from curation.io.regular import NotRegularFileError, read_bytes
from curation.io.storage import is_remote, local_temp, remove_tree, run_path

#: The index folder inside a run and its three kinds of bucket files.
INDEX_DIR = "dedup_index"
KINDS = ("exact", "bands", "docs", "shingles")
#: Most buckets per kind. Always a power of two and at most this, so that the buckets of every index
#: refine into ``MAX_BUCKETS`` (``h % n == (h % MAX_BUCKETS) % n``): a reader grouping by the finest
#: bucket meets each index's files whatever its size.
MAX_BUCKETS = 64
#: Documents per bucket the bucket count aims at (a 1M-document run gets 64 buckets, 100k gets 8).
DOCS_PER_BUCKET = 16_384
#: Rows per Parquet row group, per kind. Fixed counts (not bytes) keep the bytes of an index a
#: function of its rows alone, whatever batches they arrived in: ``curate index`` rebuilds the
#: same files a run wrote.
ROW_GROUP_ROWS = {"exact": 16_384, "bands": 16_384, "docs": 2048, "shingles": 512}
#: Columns whose values repeat enough to gain from Parquet's dictionary encoding (hashes do not).
_DICTIONARY = ["id"]
#: What this process keeps of index files it read, least recently used evicted first: verified bytes,
#: and key-sorted tables of exact and band files. A join's groups are keyed finer than a small index's
#: buckets (``MAX_BUCKETS``), and a document file serves three joins (signatures, shingles, keepers):
#: without it one file would be read, hashed and searched many times.
CACHE_BYTES = 256 * 1024 * 1024
_cache: OrderedDict[tuple[Any, ...], bytes | pa.Table] = OrderedDict()
#: Bytes of index files this process read from storage (cache misses): what a benchmark reports.
read_stats = {"bytes": 0, "files": 0}


class DedupIndexError(ConfigError):
    """An earlier run's dedup index is missing, malformed, changed on disk or hashed with other
    parameters; the message names the run or the file."""


def index_buckets(docs: int) -> int:
    """Buckets per kind for an index of ``docs`` documents: a power of two, 1 to ``MAX_BUCKETS``."""
    want = max(1, -(-docs // DOCS_PER_BUCKET))
    return min(MAX_BUCKETS, 1 << (want - 1).bit_length())


def bucket_file(kind: str, bucket: int) -> str:
    """The path of one bucket file relative to the run directory."""
    return f"{INDEX_DIR}/{kind}/{bucket:03d}.parquet"


def index_dir(run_root: Path) -> Path:
    return run_root / INDEX_DIR


class _BucketFile:
    """One bucket file being written: rows are buffered and written in row groups of exactly
    ``rows_per_group`` rows (the last one shorter), published by rename when closed."""

    def __init__(self, path: Path, schema: pa.Schema, rows_per_group: int) -> None:
        self.path, self.schema, self.rows_per_group = path, schema, rows_per_group
        self.parts: list[pa.Table] = []
        self.buffered = 0
        self.rows = 0
        self.tmp: Path | None = None
        self.writer: pq.ParquetWriter | None = None

    def add(self, table: pa.Table) -> None:
        self.parts.append(table)
        self.buffered += len(table)
        if self.buffered >= self.rows_per_group:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self.parts:
            return
        table = pa.concat_tables(self.parts).combine_chunks()
        whole = len(table) if final else len(table) - len(table) % self.rows_per_group
        if self.writer is None:
            if not is_remote(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = local_temp(self.path)
            cols = [c for c in _DICTIONARY if c in self.schema.names]
            self.writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd", use_dictionary=cols)
        for start in range(0, whole, self.rows_per_group):
            self.writer.write_table(table.slice(start, min(self.rows_per_group, whole - start)),
                                    row_group_size=self.rows_per_group)
        self.rows += whole
        rest = table.slice(whole)
        self.parts, self.buffered = ([rest], len(rest)) if len(rest) else ([], 0)

    def close(self) -> dict[str, Any]:
        self._flush(final=True)
        assert self.writer is not None and self.tmp is not None
        self.writer.close()
        size, digest = self.tmp.stat().st_size, file_digest(self.tmp)
        publish(self.tmp, self.path)
        return {"rows": self.rows, "bytes": size, "sha256": digest}

    def abort(self) -> None:
        if self.writer is not None and self.tmp is not None:
            self.writer.close()
            self.tmp.unlink(missing_ok=True)


class IndexWriter:
    """Writes ``RUN/dedup_index/`` from rows that arrive in ``pos`` order, split by bucket.

    Holds at most one row group per open bucket file in memory (``ROW_GROUP_ROWS``)."""

    def __init__(self, run_root: Path, schemas: dict[str, pa.Schema], buckets: int) -> None:
        self.root, self.schemas, self.buckets = run_root, schemas, buckets
        self.files: dict[tuple[str, int], _BucketFile] = {}
        self.started = time.time()
        remove_tree(index_dir(run_root))  # a rebuild or a crashed attempt: start from nothing

    def add(self, kind: str, bucket: np.ndarray, table: pa.Table) -> None:
        """Append ``table``'s rows to their buckets (``bucket[i]`` for row ``i``), keeping their order."""
        if len(table) == 0:
            return
        order = np.argsort(bucket, kind="stable")
        bucket = bucket[order]
        table = table.take(pa.array(order, pa.int64()))
        starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
        ends = np.r_[starts[1:], len(bucket)]
        for s, e in zip(starts, ends):
            b = int(bucket[s])
            f = self.files.get((kind, b))
            if f is None:
                f = self.files[(kind, b)] = _BucketFile(self.root / bucket_file(kind, b), self.schemas[kind],
                                                        ROW_GROUP_ROWS[kind])
            f.add(table.slice(int(s), int(e - s)).select(self.schemas[kind].names).cast(self.schemas[kind]))

    def close(self) -> dict[str, dict[str, Any]]:
        """Publish every file; returns ``{relative path: {rows, bytes, sha256}}`` in path order."""
        out = {}
        try:
            for (kind, b) in sorted(self.files):
                out[bucket_file(kind, b)] = self.files[(kind, b)].close()
        except BaseException:
            self.abort()
            raise
        return out

    def abort(self) -> None:
        for f in self.files.values():
            f.abort()


def manifest_entry(params: dict[str, Any], docs: int, buckets: int, files: dict[str, dict[str, Any]],
                   seconds: float) -> dict[str, Any]:
    """The manifest's ``dedup_index`` entry (``files`` from ``IndexWriter.close``)."""
    sizes = {k: sum(f["bytes"] for p, f in files.items() if p.startswith(f"{INDEX_DIR}/{k}/")) for k in KINDS}
    return {DEDUP_INDEX.key: DEDUP_INDEX.version, "params": params, "docs": docs, "buckets": buckets,
            "bytes": sum(sizes.values()),
            "bytes_by_kind": sizes, "seconds": round(seconds, 3),
            "files": [{"path": p, **f} for p, f in sorted(files.items())]}


# -- reading: an earlier run's index, as a new run sees it --------------------------------------

@dataclass
class CorpusIndex:
    """One earlier run's index: where it lives and what its manifest says of each file. Plain data,
    pickled to the workers of a global step, which read bucket files with ``read``."""

    run: str  # the run as the config names it (decisions name it so)
    root: str  # absolute local path or URL of the run directory
    params: dict[str, Any]
    docs: int
    buckets: int
    files: dict[str, dict[str, Any]] = field(repr=False)  # relative path -> {rows, bytes, sha256}

    def has(self, kind: str, bucket: int) -> bool:
        return bucket_file(kind, bucket) in self.files

    def read(self, kind: str, bucket: int, columns: list[str] | None = None) -> pa.Table | None:
        """One bucket file (None when the bucket is empty), parsed from the very bytes whose size and
        sha256 were checked against the manifest; ``DedupIndexError`` naming the file otherwise."""
        rel = bucket_file(kind, bucket)
        entry = self.files.get(rel)
        if entry is None:
            return None
        path = run_path(safe_shard_path(self.root, rel))
        key = (str(path), entry["sha256"])
        data = _cache.get(key)
        if data is None:
            data = self._fetch(path, entry)
            _remember(key, data)  # verified: these bytes may be parsed again without a re-read
        else:
            _cache.move_to_end(key)
        assert isinstance(data, bytes)
        return pq.read_table(io.BytesIO(data), columns=columns)

    def _fetch(self, path: Any, entry: dict[str, Any]) -> bytes:
        """The file's bytes from storage, checked against its manifest entry (size, sha256)."""
        try:
            data = read_bytes(path)
        except (FileNotFoundError, NotRegularFileError, OSError) as exc:
            raise DedupIndexError(f"dedup index of {self.run}: {path}: cannot be read ({exc}); rebuild it with "
                                  f"`curate index {self.run} --force`") from exc
        read_stats["bytes"] += len(data)
        read_stats["files"] += 1
        problem = _mismatch(data, entry)
        if problem:
            raise DedupIndexError(f"dedup index of {self.run}: {path}: {problem}: the file changed after the "
                                  f"run wrote it and is not used; rebuild it with `curate index {self.run} --force`")
        return data

    def kind_files(self, kind: str) -> dict[int, int]:
        """Bucket -> bytes of each bucket file of ``kind`` (what a join that meets every bucket reads)."""
        return {b: int(self.files[bucket_file(kind, b)]["bytes"]) for b in range(self.buckets) if self.has(kind, b)}

    def timed_read(self, kind: str, bucket: int) -> tuple[int, float]:
        """``(bytes, seconds)`` of reading, verifying and parsing one bucket file from storage, past this
        process's cache and without touching it: what ``curate plan`` prices a join with."""
        rel = bucket_file(kind, bucket)
        entry = self.files.get(rel)
        if entry is None:
            return 0, 0.0
        t0 = time.perf_counter()
        pq.read_table(io.BytesIO(self._fetch(run_path(safe_shard_path(self.root, rel)), entry)))
        return int(entry["bytes"]), time.perf_counter() - t0

    def read_sorted(self, kind: str, bucket: int, by: str, columns: list[str]) -> pa.Table | None:
        """``read``, sorted by ``by`` (kept in this process's cache): a join then finds its keys with a
        binary search each instead of testing every row of the file."""
        rel = bucket_file(kind, bucket)
        entry = self.files.get(rel)
        if entry is None:
            return None
        key = (str(run_path(self.root)), rel, entry["sha256"], by, tuple(columns))
        t = _cache.get(key)
        if t is None:
            t = self.read(kind, bucket, columns)
            assert t is not None
            t = t.take(pa.array(np.argsort(t.column(by).to_numpy(), kind="stable"), pa.int64())).combine_chunks()
            _remember(key, t)
        else:
            _cache.move_to_end(key)
        assert isinstance(t, pa.Table)
        return t


def _size(v: bytes | pa.Table) -> int:
    return len(v) if isinstance(v, bytes) else v.nbytes


def _remember(key: tuple[Any, ...], value: bytes | pa.Table) -> None:
    if _size(value) > CACHE_BYTES // 4:
        return
    _cache[key] = value
    total = sum(_size(v) for v in _cache.values())
    while total > CACHE_BYTES:
        total -= _size(_cache.popitem(last=False)[1])


def _mismatch(data: bytes, entry: dict[str, Any]) -> str | None:
    if len(data) != entry["bytes"]:
        return f"{len(data)} bytes, the manifest says {entry['bytes']}"
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        return f"sha256 {digest[:16]}.. differs from the manifest's {entry['sha256'][:16]}.."
    return None


def _checked_files(where: str, entry: Any) -> tuple[dict[str, Any], int, int, dict[str, dict[str, Any]]]:
    """(params, docs, buckets, files) of a manifest's ``dedup_index`` entry, or ValueError saying what is wrong
    (``SchemaVersionError``, one, for an entry of another version)."""
    if not isinstance(entry, dict):
        raise ValueError("dedup_index is not an object")  # noqa: TRY004 (one error type for every bad entry)
    check_schema(entry, DEDUP_INDEX, "dedup_index")
    params, docs, buckets, files = entry.get("params"), entry.get("docs"), entry.get("buckets"), entry.get("files")
    if not isinstance(params, dict) or not isinstance(docs, int) or not isinstance(files, list):
        raise ValueError("dedup_index needs params (object), docs (integer) and files (list)")  # noqa: TRY004
    if not isinstance(buckets, int) or buckets < 1 or buckets > MAX_BUCKETS or buckets & (buckets - 1):
        raise ValueError(f"dedup_index.buckets {buckets!r} is not a power of two up to {MAX_BUCKETS}")
    out: dict[str, dict[str, Any]] = {}
    for i, f in enumerate(files):
        if not isinstance(f, dict):
            raise ValueError(f"dedup_index.files[{i}] is not an object")  # noqa: TRY004
        rel = check_relative(where, f.get("path"))
        if not rel.startswith(INDEX_DIR + "/"):
            raise ValueError(f"dedup_index.files[{i}]: {rel!r} is not under {INDEX_DIR}/")
        sha, size, rows = f.get("sha256"), f.get("bytes"), f.get("rows")
        if not (isinstance(sha, str) and len(sha) == 64 and isinstance(size, int) and isinstance(rows, int)):
            raise ValueError(f"dedup_index.files[{i}] ({rel}) has no valid sha256/bytes/rows")
        if rel in out:
            raise ValueError(f"dedup_index.files lists {rel} twice")
        out[rel] = {"rows": rows, "bytes": size, "sha256": sha}
    return params, docs, buckets, out


def open_index(run: str) -> CorpusIndex:
    """The index of finished run ``run`` (a local folder or URL), from its manifest; ``DedupIndexError``
    naming the run when it has none or the entry is malformed. Reads no index file."""
    root = run_path(run)
    absolute = str(root) if is_remote(root) else str(Path(os.path.abspath(root)))
    try:
        # Either kind: ``curate skill-order`` output, once ``curate index`` gave it an index, is a corpus too.
        manifest = read_any_manifest(absolute)
    except ManifestError as exc:
        raise DedupIndexError(f"against: {run}: {exc}") from exc
    entry = manifest.dedup_index
    if entry is None:
        raise DedupIndexError(f"against: {run} has no dedup index (a dataset `curate run` did not write, such as "
                              f"`curate skill-order` output): build one with `curate index {run}`")
    try:
        params, docs, buckets, files = _checked_files(absolute, entry)
    except ValueError as exc:
        raise DedupIndexError(f"against: {run}: manifest.json: {exc}") from exc
    return CorpusIndex(run=run, root=absolute, params=params, docs=docs, buckets=buckets, files=files)


def verify_index(root: Path, manifest: dict[str, Any]) -> tuple[list[str], int]:
    """``curate verify``'s check of the index: every file the manifest's ``dedup_index`` lists has its
    size and sha256, and no other file lies under ``dedup_index/``. Returns (problems, files checked)."""
    problems: list[str] = []
    entry = manifest.get("dedup_index")
    listed: dict[str, dict[str, Any]] = {}
    if entry is not None:
        try:
            _, _, _, listed = _checked_files(str(root), entry)
        except ValueError as exc:
            problems.append(f"manifest.json: {exc}")
    good = 0
    for rel, f in listed.items():
        path = run_path(safe_shard_path(root, rel))
        try:
            data = read_bytes(path)
        except FileNotFoundError:
            problems.append(f"{rel}: missing (manifest.json dedup_index lists it)")
            continue
        except (NotRegularFileError, OSError) as exc:
            problems.append(f"{rel}: {exc}")
            continue
        problem = _mismatch(data, f)
        if problem:
            problems.append(f"{rel}: {problem}")
        else:
            good += 1
    for rel in _files_under(root, INDEX_DIR):
        if rel not in listed:
            problems.append(f"{rel}: unexpected file (not listed in manifest.json dedup_index)")
    return problems, good


def _files_under(root: Path, sub: str) -> list[str]:
    if is_remote(root):
        fs, base = root.fs, root.path.rstrip("/")  # type: ignore[attr-defined]
        return sorted(p[len(base) + 1:] for p in fs.find(f"{base}/{sub}")) if fs.exists(f"{base}/{sub}") else []
    folder = root / sub
    return sorted(str(p.relative_to(root)) for p in folder.rglob("*") if not p.is_dir()) if folder.is_dir() else []


def iter_part_tables(paths: Iterable[Path], batch_rows: int = 65_536) -> Iterable[pa.Table]:
    """The rows of index part files (``Layout.index_part``), file by file, in batches."""
    for p in paths:
        with p.open("rb") as fh:
            for rb in pq.ParquetFile(fh).iter_batches(batch_size=batch_rows):
                yield pa.Table.from_batches([rb])


def part_paths(layout: Layout, tasks: int) -> list[Path]:
    return [layout.index_part(t) for t in range(tasks)]
