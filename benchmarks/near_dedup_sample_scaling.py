"""How near-dedup's global step grows from a planner-sized sample to the whole input.

    .venv/bin/python benchmarks/near_dedup_sample_scaling.py --size 100000 --work /tmp/raygap-bench

``curate plan`` times each global step on its 1% sample and scales that time by ``n log n``. This
script shows why that is off for near-dedup: it builds the step's keys for the synthetic corpus of
``benchmarks/pipeline_scale.py`` (documents of at least 200 characters, exact copies removed, no
language filter), draws the planner's coordinated samples of them (``curation.planner.doc_key``)
at several rates, and times the step on each (in one process, warm, the least of 3 runs; 2 at the
two largest rates). It prints documents, candidate groups and pairs per document, seconds, and the
marginal cost per document between rates.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._synthetic import make_corpus  # noqa: E402
from curation.executors.local import key_read_columns  # noqa: E402
from curation.planner import doc_key  # noqa: E402
from curation.stages.dedup.near import NearDedup, NearDedupConfig  # noqa: E402
from curation.stages.frame import LocalFrame  # noqa: E402

RATES = [0.01, 0.03, 0.1, 0.3, 1.0]


def keys_of(corpus: Path, stage: NearDedup) -> tuple[pa.Table, np.ndarray]:
    """The step's key columns for every document that passes text_length and exact dedup, and
    each one's sampling key."""
    cols = key_read_columns(stage)
    parts, sample_keys, seen = [], [], set()
    for task, f in enumerate(sorted(corpus.glob("part-*.jsonl"))):
        rows = []
        for line in f.open():
            r = json.loads(line)
            h = hashlib.md5(" ".join(r["text"].split()).encode()).digest()
            if h not in seen and len(r["text"]) >= 200:
                seen.add(h)
                rows.append(r)
        sample_keys += [doc_key(r["text"], 0) for r in rows]
        for s in range(0, len(rows), 2000):
            chunk = rows[s:s + 2000]
            texts = [r["text"] for r in chunk]
            batch = pa.table({"id": [r["id"] for r in chunk], "text": texts, "n_chars": [len(t) for t in texts],
                              "source": [f.name] * len(chunk), "domain": ["default"] * len(chunk),
                              "_task": pa.array([task] * len(chunk), pa.int32()),
                              "_row": pa.array(range(s, s + len(chunk)), pa.int64())})
            parts.append(stage.add_keys(batch).select(cols))
    return pa.concat_tables(parts), np.array(sample_keys)


def groups_and_pairs(t: pa.Table) -> tuple[int, int]:
    counts = pc.value_counts(pc.list_flatten(t.column("_nd_bands"))).field("counts").to_numpy()
    counts = counts[counts >= 2]
    return len(counts), int((counts * (counts - 1) // 2).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=100000)
    ap.add_argument("--work", type=Path, required=True, help="folder for the corpus (reused when there)")
    args = ap.parse_args()
    corpus = args.work / f"corpus-{args.size}"
    if not (corpus / "truth.jsonl").exists():
        make_corpus(args.size, corpus)
    stage = NearDedup(NearDedupConfig(threshold=0.8))
    table, sample_keys = keys_of(corpus, stage)
    print(f"corpus {corpus}: {table.num_rows} documents after text_length and exact dedup, "
          f"{table.nbytes / 1e6:.0f} MB of keys")
    prev = None
    for rate in RATES:
        t = table.filter(pa.array(sample_keys < rate)) if rate < 1 else table
        runs = []
        for _ in range(3 if rate < 0.3 else 2):
            t0 = time.perf_counter()
            stage.run_global(LocalFrame(t, num_buckets=stage.num_buckets))
            runs.append(time.perf_counter() - t0)
        sec = min(runs)
        groups, pairs = groups_and_pairs(t)
        marginal = "" if prev is None else f"  marginal {(sec - prev[1]) / (t.num_rows - prev[0]) * 1e6:.1f} us/doc"
        print(f"rate {rate:<5} docs {t.num_rows:>7}  groups/doc {groups / t.num_rows:.3f}  "
              f"pairs/doc {pairs / t.num_rows:.3f}  seconds {sec:.3f}{marginal}", flush=True)
        prev = (t.num_rows, sec)


if __name__ == "__main__":
    main()
