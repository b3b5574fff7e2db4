"""One export task: tokenize one source shard and write its part of every domain's output.

A task is a pure function of its ``ShardJob`` (picklable, so it runs in process or as a Ray task). It writes only
under ``_parts/NNNNN/`` and its own published files (``jsonl/PREFIX/NNNNN.*``, ``mds/PREFIX/NNNNN/``), each file
atomically, and writes ``_parts/NNNNN/done.json`` last: a task with that marker is finished and is never rerun;
one without it is redone from scratch (its leftovers removed first).

Per domain the task writes an index part (``PREFIX.index.parquet``: id, source row, tokens, output part and
position), from which the export's sidecar index is assembled in source-shard order, plus:
megatron ``PREFIX.bin`` (ids + EOD per document, in the export's dtype, concatenated later into the prefix),
mds an MDS dataset, jsonl a compressed JSON-lines file.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.export import jsonl, mds
from curation.export.layout import ExportLayout
from curation.export.megatron import flat_tokens
from curation.export.source import ExportError, SourceShard, read_shard
from curation.export.tokenizer import load_tokenizer
from curation.io.atomic import atomic_open, write_json
from curation.io.digest import file_digest
from curation.io.storage import remove_tree

#: Documents tokenized per call: large enough for a tokenizer's batch speed, small enough to bound memory.
BATCH_DOCS = 512
INDEX_PART_SCHEMA = pa.schema([pa.field("id", pa.string()), pa.field("row", pa.int64()),
                               pa.field("n_tokens", pa.int64()), pa.field("part", pa.string()),
                               pa.field("part_row", pa.int64())])


@dataclass(frozen=True)
class ShardJob:
    """Everything one task needs (no open handles: it is pickled to Ray workers)."""

    root: str  # the export directory
    shard: SourceShard
    fmt: str
    tokenizer: str  # normalized spec
    dtype: str  # token dtype of megatron .bin and MDS arrays
    eod_id: int
    prefixes: dict[str, str]  # domain -> file name
    compression: str  # jsonl: zstd|gzip; mds: none|zstd|gzip


def _tokenize(texts: list[str], spec: str, pool: ThreadPoolExecutor) -> list[list[int]]:
    """Each text's ids (lists of ints for every tokenizer kind), computed on ``pool``'s one thread.

    The thread is for speed, not parallelism (the caller waits on each batch). The Rust tokenizers allocate and
    free per word, and glibc's malloc serves a thread other than the main one from an arena of its own, while the
    main thread's arena is fragmented by what the process loaded before (transformers, loading the tokenizer).
    Measured on cl100k with one tokenizer thread: the same calls (same instruction count under callgrind) took
    1.36x the CPU time on the main thread after transformers had loaded, 1.13x without it (docs/benchmarks.md,
    "Export to trainers"). One batch per call, so an interrupt waits for one batch at most."""
    tok = load_tokenizer(spec)
    out: list[list[int]] = []
    for i in range(0, len(texts), BATCH_DOCS):
        out += pool.submit(tok.encode_batch, texts[i:i + BATCH_DOCS]).result()
    return out


def _clear_outputs(job: ShardJob, lay: ExportLayout) -> None:
    """Remove what a killed attempt of this task may have published, and its scratch folder."""
    remove_tree(lay.part(job.shard.index))
    for prefix in job.prefixes.values():
        if job.fmt == "mds":
            remove_tree(lay.mds_dir(prefix) / f"{job.shard.index:05d}")
        elif job.fmt == "jsonl":
            lay.jsonl_file(prefix, job.shard.index, jsonl.EXTENSIONS[job.compression]).unlink(missing_ok=True)


def _write_domain(job: ShardJob, lay: ExportLayout, prefix: str, rows: np.ndarray, table: pa.Table,
                  tokens: list[list[int]]) -> tuple[str, list[dict[str, Any]]]:
    """The domain's output of this shard; ``(part name for the index, published files)``."""
    task, files = job.shard.index, []
    ids = table.column("id").take(pa.array(rows)).to_pylist()
    if job.fmt == "megatron":
        part = lay.part(task) / f"{prefix}.bin"
        with atomic_open(part) as fh:
            fh.write(flat_tokens(tokens, job.eod_id, job.dtype).tobytes())
        return lay.megatron_prefix(prefix) + ".bin", files
    texts = table.column("text").take(pa.array(rows)).to_pylist()
    if job.fmt == "mds":
        scratch = lay.part(task) / "mds" / prefix
        mds.write_part(scratch, ids, texts, tokens, job.dtype, job.compression)
        final = lay.mds_dir(prefix) / f"{task:05d}"
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(scratch, final)  # one rename: the folder appears whole
        for f in sorted(p for p in final.rglob("*") if p.is_file()):
            files.append({"path": lay.rel(f), "bytes": f.stat().st_size, "sha256": file_digest(f)})
        return lay.rel(final), files
    sub = {k: table.column(k).take(pa.array(rows)).to_pylist() for k in ("domain", "source", "url")}
    records = []
    for j, (i, text, toks) in enumerate(zip(ids, texts, tokens)):
        rec = {"text": text, "id": i, "domain": sub["domain"][j], "source": sub["source"][j]}
        if sub["url"][j] is not None:
            rec["url"] = sub["url"][j]
        rec["n_tokens"] = len(toks)
        records.append(rec)
    path = lay.jsonl_file(prefix, task, jsonl.EXTENSIONS[job.compression])
    files.append({"path": lay.rel(path), **jsonl.write_file(path, records, job.compression)})
    return lay.rel(path), files


def export_shard(job: ShardJob) -> dict[str, Any]:
    """Run one task (see the module docstring); returns its marker: per-domain counts and published files."""
    t0 = time.time()
    lay = ExportLayout(Path(job.root))
    _clear_outputs(job, lay)
    lay.part(job.shard.index).mkdir(parents=True)
    columns = ["id", "text", "domain"] + (["source", "url"] if job.fmt == "jsonl" else [])
    table = read_shard(job.shard, columns)
    domains = table.column("domain").to_numpy(zero_copy_only=False)
    unknown = sorted(set(domains.tolist()) - set(job.prefixes))
    if unknown:
        raise ExportError(f"{job.shard.rel}: domains {unknown[:5]} are not in the run's manifest")
    marker: dict[str, Any] = {"task": job.shard.index, "shard": job.shard.rel, "sha256": job.shard.sha256,
                              "domains": {}, "files": []}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-tokenize") as pool:
        for domain in sorted(set(domains.tolist())):
            marker["files"] += _export_domain(job, lay, table, domains, domain, pool, marker)
    marker["seconds"] = round(time.time() - t0, 3)
    write_json(lay.part_marker(job.shard.index), marker)  # last: the task's commit point
    return marker


def _export_domain(job: ShardJob, lay: ExportLayout, table: pa.Table, domains: np.ndarray, domain: str,
                   pool: ThreadPoolExecutor, marker: dict[str, Any]) -> list[dict[str, Any]]:
    """Tokenize and write one domain of the shard, record its counts in ``marker``; its published files."""
    prefix = job.prefixes[domain]
    rows = np.flatnonzero(domains == domain)
    texts = table.column("text").take(pa.array(rows)).to_pylist()
    tokens = _tokenize(texts, job.tokenizer, pool)
    part, files = _write_domain(job, lay, prefix, rows, table, tokens)
    n_tokens = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens)) + 1  # + EOD
    index = pa.table({"id": table.column("id").take(pa.array(rows)), "row": pa.array(rows, pa.int64()),
                      "n_tokens": n_tokens, "part": pa.array([part] * len(rows), pa.string()),
                      "part_row": pa.array(np.arange(len(rows)), pa.int64())}, schema=INDEX_PART_SCHEMA)
    with atomic_open(lay.part(job.shard.index) / f"{prefix}.index.parquet") as fh:
        pq.write_table(index, fh)
    marker["domains"][domain] = {"documents": len(rows), "tokens": int(n_tokens.sum())}
    return files
