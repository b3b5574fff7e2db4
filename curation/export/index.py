"""The document index sidecar: ``index/PREFIX.parquet``, one row per exported document of a domain.

Columns, in the domain's export order (source shards in manifest order, rows in shard order):

    doc          int64   ordinal in the domain (= Megatron sequence index = MDS sample index in mds/PREFIX)
    id           string  the document id in the source run
    token_start  int64   first token of the document in the domain's token stream (its ids, then one EOD)
    token_end    int64   one past its EOD; token_end - token_start = its tokens + 1
    run          string  the source run's fingerprint (export_manifest.json ``source`` says where the run is)
    shard        string  the source Parquet shard, relative to the run
    row          int64   the document's row in that shard
    part         string  the output file or folder holding it (megatron/web.bin, mds/web/00003, jsonl/...)
    part_row     int64   its position in that part (Megatron sequence, MDS sample, JSON line; 0-based)

For megatron the stream is exactly the ``.bin``: token ``t`` of the prefix lies in the document whose
``[token_start, token_end)`` holds ``t``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.io.atomic import atomic_open

INDEX_SCHEMA = pa.schema([
    pa.field("doc", pa.int64()), pa.field("id", pa.string()), pa.field("token_start", pa.int64()),
    pa.field("token_end", pa.int64()), pa.field("run", pa.string()), pa.field("shard", pa.string()),
    pa.field("row", pa.int64()), pa.field("part", pa.string()), pa.field("part_row", pa.int64()),
])


def assemble(parts: list[tuple[str, pa.Table]], run_fingerprint: str, megatron: bool) -> pa.Table:
    """The domain's index from its per-shard index parts ``[(source shard, part table), ...]`` in shard order."""
    tables = []
    for shard, t in parts:
        tables.append(t.append_column("shard", pa.array([shard] * len(t), pa.string())))
    t = pa.concat_tables(tables)
    n = len(t)
    ends = np.cumsum(t.column("n_tokens").to_numpy(), dtype=np.int64)
    starts = ends - t.column("n_tokens").to_numpy()
    doc = np.arange(n, dtype=np.int64)
    return pa.table({
        "doc": doc, "id": t.column("id"), "token_start": starts, "token_end": ends,
        "run": pa.array([run_fingerprint] * n, pa.string()),  # Parquet's dictionary encoding stores it once
        "shard": t.column("shard"), "row": t.column("row"), "part": t.column("part"),
        # A Megatron prefix is one part: a document's position in it is its ordinal.
        "part_row": doc if megatron else t.column("part_row"),
    }, schema=INDEX_SCHEMA)


def write_index(path: Path, table: pa.Table) -> None:
    with atomic_open(path) as fh:
        pq.write_table(table, fh, compression="zstd")


def read_index(path: Path, columns: list[str] | None = None) -> pa.Table:
    from curation.io.regular import open_regular

    with open_regular(path, "rb") as fh:
        return pq.read_table(fh, columns=columns)
