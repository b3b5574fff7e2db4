"""Building a run's dedup index: the keys of every kept document, hashed as the dedup stages hash.

At run time the final pass adds each task's index rows beside its shards (``TaskIndex``, into
``_work/index/TASK.parquet``, published with the task), and once every task is done the executor
splits them into ``dedup_index/`` bucket files (``write_run_index``) before it writes the manifest,
which lists them with their sha256. ``curate index RUN`` (``index_run``) builds the same files from
a finished run's shards, for a dataset ``curate run`` did not write (``curate skill-order`` output), to
rehash one with other parameters or to rebuild one of another version (``--force``). Either way the
rows hash the shards' final text, in shard order, so both give the same files
(``tests/curation/stages/dedup/test_index.py``).

Parameters (``IndexParams``) come from the run's own dedup stages (the last exact and the last
near-dedup stage; the defaults where it has none), so that a later run with the same stages can
read it; ``curate index --like PIPELINE.yaml`` takes them from another pipeline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.config import from_dict
from curation.io.atomic import write_json
from curation.io.dedup_index import (
    INDEX_DIR, DedupIndexError, IndexWriter, index_buckets, iter_part_tables, manifest_entry,
)
from curation.io.layout import Layout
from curation.io.manifest import DEDUP_INDEX, RunManifest, check_schema, read_any_manifest, shard_paths
from curation.io.regular import open_regular
from curation.io.storage import is_remote, run_path
from curation.io.writers import RollingParquetWriter
from curation.stages.base import Stage
from curation.stages.dedup.corpus import IndexParams
from curation.stages.dedup.exact import ExactDedup, ExactDedupConfig, text_hashes
from curation.stages.dedup.minhash import minhash_columns
from curation.stages.dedup.near import NearDedup, NearDedupConfig
from curation.stages.frame import bucket_of

log = logging.getLogger(__name__)


def params_for(stages: Sequence[Stage]) -> IndexParams:
    """What a run with these (built) stages hashes its index with: its last exact-dedup stage's
    ``normalize`` and its last near-dedup stage's hashing, else the stages' defaults."""
    exact = [s for s in stages if isinstance(s, ExactDedup)]
    near = [s for s in stages if isinstance(s, NearDedup)]
    normalize = (exact[-1].config if exact else ExactDedupConfig()).normalize
    nd = near[-1] if near else NearDedup(NearDedupConfig())
    return IndexParams(normalize=normalize, num_perm=nd.config.num_perm, ngram=nd.config.ngram, seed=nd.config.seed,
                       bands=nd.bands, rows=nd.rows, shingles=nd.config.verify)


def params_for_mapping(config: dict[str, Any], where: str) -> IndexParams:
    """``params_for`` from a pipeline's plain mapping (a manifest's ``config``, a YAML), building only
    its dedup stages' configs: the other stages' models need not exist here."""
    built: list[Stage] = []
    for i, spec in enumerate(config.get("stages") or []):
        if not isinstance(spec, dict):
            continue
        params = {k: v for k, v in spec.items() if k not in ("stage", "resources")}
        if spec.get("stage") == "exact_dedup_v1":
            built.append(ExactDedup(from_dict(ExactDedupConfig, params, f"{where}.stages[{i}]")))
        elif spec.get("stage") == "near_dedup_v1":
            built.append(NearDedup(from_dict(NearDedupConfig, params, f"{where}.stages[{i}]")))
    return params_for(built)


def _schemas(params: IndexParams) -> dict[str, pa.Schema]:
    pos = pa.field("pos", pa.int64(), nullable=False)
    return {
        "exact": pa.schema([pa.field("hash", pa.uint64(), nullable=False), pos, pa.field("id", pa.string())]),
        "bands": pa.schema([pa.field("key", pa.int64(), nullable=False), pos]),
        "docs": pa.schema([pos, pa.field("id", pa.string()), pa.field("sig", pa.list_(pa.uint32(), params.num_perm + 2))]),
        "shingles": pa.schema([pos, pa.field("sh", pa.list_(pa.uint32()))]),
    }


def part_schema(params: IndexParams) -> pa.Schema:
    """Rows of an index part: a task's kept documents in output order, with their keys."""
    fields = [pa.field("id", pa.string()), pa.field("hash", pa.uint64()), pa.field("bands", pa.list_(pa.uint64())),
              pa.field("sig", pa.list_(pa.uint32(), params.num_perm + 2))]
    if params.shingles:
        fields.append(pa.field("sh", pa.list_(pa.uint32())))
    return pa.schema(fields)


def index_rows(batch: pa.Table, params: IndexParams) -> pa.Table:
    """The index keys of a batch of kept documents (``id``, ``text``): exact hash, band keys (null for
    a text without words), signature and, with ``params.shingles``, shingle set."""
    texts = batch.column("text").combine_chunks()
    bands, sig, sets = minhash_columns(texts, params.num_perm, params.ngram, params.seed, params.bands, params.rows,
                                       params.shingles)
    cols: dict[str, Any] = {"id": batch.column("id"), "hash": pa.array(text_hashes(texts.to_pylist(), params.normalize)),
                            "bands": bands, "sig": sig}
    if sets is not None:
        cols["sh"] = sets
    return pa.table(cols, schema=part_schema(params))


class TaskIndex:
    """The final pass's writer of one task's index part (``Layout.index_part``).

    ``keyed_by``: the global stage whose resolved rows this pass reads when no stage follows it. If it
    is a near-dedup stage hashing as ``params`` does, its key columns (``_nd_bands``, ``_nd_sig``,
    ``_nd_sh``) are still on the batches, of the very text written: they are reused rather than
    computed a second time (the MinHash is most of an index's cost)."""

    def __init__(self, layout: Layout, task: int, params: IndexParams, keyed_by: Stage | None = None) -> None:
        path = layout.index_part(task)
        self.params = params
        self.reuse = isinstance(keyed_by, NearDedup) and keyed_by.index_needs() == {
            "num_perm": params.num_perm, "ngram": params.ngram, "seed": params.seed, "bands": params.bands,
            "rows": params.rows, "shingles": params.shingles}
        self.writer = RollingParquetWriter(path.parent, "", part_schema(params), compression="zstd",
                                           single_name=path.name)
        self.seconds = 0.0

    def write(self, batch: pa.Table) -> None:
        t0 = time.perf_counter()
        if self.reuse and "_nd_sig" in batch.column_names:
            cols = {"id": batch.column("id"), "hash": pa.array(text_hashes(batch.column("text").to_pylist(),
                                                                           self.params.normalize)),
                    "bands": batch.column("_nd_bands"), "sig": batch.column("_nd_sig")}
            if self.params.shingles:
                cols["sh"] = batch.column("_nd_sh")
            rows = pa.table(cols).cast(part_schema(self.params))
        else:
            rows = index_rows(batch, self.params)
        self.writer.write(rows)
        self.seconds += time.perf_counter() - t0

    def close(self) -> None:
        self.writer.close(write_empty=True)  # an empty part says "this task kept nothing"

    def abort(self) -> None:
        self.writer.abort()


def _write(root: Path, params: IndexParams, docs: int, tables: Iterable[pa.Table]) -> dict[str, Any]:
    """Split part rows (in shard order) into ``root/dedup_index/`` and return the manifest entry."""
    started = time.time()
    buckets = index_buckets(docs)
    writer = IndexWriter(root, _schemas(params), buckets)
    pos0 = 0
    try:
        for t in tables:
            n = len(t)
            if n == 0:
                continue
            pos = np.arange(pos0, pos0 + n, dtype=np.int64)
            pos0 += n
            h = t.column("hash").to_numpy()
            writer.add("exact", bucket_of(h, buckets), pa.table({"hash": t.column("hash"), "pos": pos, "id": t.column("id")}))
            bands = t.column("bands").combine_chunks()
            counts = bands.value_lengths().fill_null(0).to_numpy()
            keys = bands.flatten().to_numpy().view(np.int64)
            writer.add("bands", bucket_of(keys, buckets),
                       pa.table({"key": pa.array(keys, pa.int64()), "pos": pa.array(np.repeat(pos, counts))}))
            writer.add("docs", bucket_of(pos, buckets), pa.table({"pos": pos, "id": t.column("id"), "sig": t.column("sig")}))
            if params.shingles:
                writer.add("shingles", bucket_of(pos, buckets), pa.table({"pos": pos, "sh": t.column("sh")}))
        files = writer.close()
    except BaseException:
        writer.abort()
        raise
    if pos0 != docs:
        raise RuntimeError(f"dedup index of {root}: {pos0} rows for {docs} kept documents")
    return manifest_entry(params.to_json(), docs, buckets, files, time.time() - started)


def write_run_index(layout: Layout, tasks: int, docs: int, params: IndexParams,
                    manifest: RunManifest) -> dict[str, Any]:
    """At the end of a run: ``dedup_index/`` from the final pass's parts (``docs`` kept in all);
    returns the manifest's ``dedup_index`` entry. ``manifest``: the one about to be written (its shards).

    A run resumed after its commit point was lost (its parts were removed once the index was written) has
    parts only for the tasks it ran again: then the index is built from the shards the manifest lists, as
    ``curate index`` does (the same rows, read once)."""
    parts = [layout.index_part(t) for t in range(tasks)]
    if all(p.exists() for p in parts):
        return _write(layout.root, params, docs, iter_part_tables(parts))
    log.info("dedup index of %s: some task parts are gone (a resumed run); building it from the shards", layout.root)
    tables = _shard_tables(shard_paths(layout.root, manifest))
    return _write(layout.root, params, docs, (index_rows(t, params) for t in tables))


def _shard_tables(paths: list[str]) -> Iterable[pa.Table]:
    """The ``id`` and ``text`` of the shards at ``paths`` (full paths, each checked by ``safe_shard_path``)."""
    for path in paths:
        with open_regular(run_path(path), "rb") as fh:
            for rb in pq.ParquetFile(fh).iter_batches(batch_size=4096, columns=["id", "text"]):
                yield pa.Table.from_batches([rb])


def index_run(run: str, params: IndexParams | None = None, force: bool = False) -> tuple[dict[str, Any], bool]:
    """``curate index RUN``: build the dedup index of a finished run from its shards (read once) and
    add it to its manifest. ``params``: None takes them from the run's own config. An index with the
    same parameters is kept unless ``force``; one with other parameters needs ``force``. Returns
    (the manifest entry, whether it was built)."""
    root = run_path(run)
    root = root if is_remote(root) else root.resolve()
    layout = Layout(root)
    # Either kind: ``curate skill-order`` output is a corpus too. It has no pipeline of its own, so it is hashed
    # with the defaults (as a run without dedup stages) unless ``params`` (``--like``) say otherwise.
    manifest = read_any_manifest(root)
    if params is None:
        config = manifest.config if isinstance(manifest, RunManifest) else {}
        params = params_for_mapping(config, f"{layout.manifest}: config")
    old = manifest.dedup_index
    if isinstance(old, dict) and not force:
        check_schema(old, DEDUP_INDEX, f"{layout.manifest}: dedup_index")  # another version's: --force rebuilds it
        if old["params"] == params.to_json():
            return old, False
        raise DedupIndexError(f"{run} has a dedup index hashed with {old['params']}, not {params.to_json()}: "
                              "use --force to replace it (runs made against the old one will refuse to resume)")
    docs = sum(s.rows for s in manifest.shards)
    entry = _write(root, params, docs, (index_rows(t, params) for t in _shard_tables(shard_paths(root, manifest))))
    manifest.dedup_index = entry
    # The manifest is rewritten whole (atomically), with only ``dedup_index`` changed: its bytes change, so a
    # training loader resumed on this run sees a changed manifest (documented in the README's "Growing a corpus").
    write_json(layout.manifest, manifest.to_json())
    log.info("dedup index of %s: %d documents, %d files, %.1f MB", run, docs, len(entry["files"]), entry["bytes"] / 1e6)
    return entry, True


__all__ = ["INDEX_DIR", "IndexParams", "TaskIndex", "index_rows", "index_run", "params_for", "params_for_mapping",
           "write_run_index"]
