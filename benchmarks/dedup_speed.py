"""Near-dedup speed, memory and accuracy: our stage vs datatrove's four-stage MinHash vs datasketch.

    .venv/bin/python benchmarks/dedup_speed.py                  # natural corpus (~2,700 docs, 8.8 MB)
    .venv/bin/python benchmarks/dedup_speed.py --corpus DIR     # any folder of *.jsonl.gz with id/text

Every method runs in its own subprocess (so peak RSS is its own) on the same files, at Jaccard
threshold 0.8 with 5-word shingles, and is scored against the exact-Jaccard oracle:
  ours-local     near_dedup_v1 through our runner, in-process executor (1 core), 128 perms, verified
  ours-ray       the same on local Ray with 2 CPUs (MB/s per core = MB/s / 2)
  datatrove      MinhashDedupSignature -> Buckets -> Cluster -> Filter, LocalPipelineExecutor,
                 one worker, its default 14 bands x 8 hashes (112), spaCy word tokenizer
  datasketch     MinHash(num_perm=128).update_batch per document + MinHashLSH(threshold=0.8)
                 insert/query + union-find over the query results (single process)
Wall time covers reading the input and producing the per-document cluster decision.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._dedup_common import (  # noqa: E402
    labels_from_clusters, natural_corpus, peak_rss_mb, read_corpus, run_child, run_ours, tmpdir,
)

THRESHOLD = 0.8


def method_ours(folder: Path, kind: str) -> dict[str, str]:
    return run_ours(folder, tmpdir("dd-ours-"), kind, THRESHOLD)


def method_datatrove(folder: Path) -> dict[str, str]:
    import gzip

    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    base = tmpdir("dd-datatrove-")
    cfg = MinhashConfig()  # 14 x 8, 5-grams: FineWeb's settings

    def reader() -> JsonlReader:
        return JsonlReader(str(folder), glob_pattern="*.jsonl.gz", text_key="text", id_key="id")

    LocalPipelineExecutor([reader(), MinhashDedupSignature(str(base / "sigs"), config=cfg)], tasks=1, workers=1,
                          logging_dir=str(base / "logs1")).run()
    LocalPipelineExecutor([MinhashDedupBuckets(str(base / "sigs"), str(base / "buckets"), config=cfg)],
                          tasks=cfg.num_buckets, workers=1, logging_dir=str(base / "logs2")).run()
    LocalPipelineExecutor([MinhashDedupCluster(str(base / "buckets"), str(base / "remove"), config=cfg,
                                               save_cluster_id=True)], tasks=1, workers=1,
                          logging_dir=str(base / "logs3")).run()
    LocalPipelineExecutor([reader(), MinhashDedupFilter(str(base / "remove"), load_cluster_ids=True,
                                                        exclusion_writer=JsonlWriter(str(base / "removed"))),
                           JsonlWriter(str(base / "kept"))], tasks=1, workers=1, logging_dir=str(base / "logs4")).run()
    cluster_of: dict[str, str] = {}
    for f in sorted(base.glob("kept/*.jsonl.gz")) + sorted(base.glob("removed/*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                cid = rec["metadata"].get("minhash_cluster_id", -1)
                if cid != -1:
                    cluster_of[rec["id"]] = f"cluster-{cid}"
    # Name each cluster after one member so labels_from_clusters can index it.
    rep: dict[str, str] = {}
    for doc, cid in sorted(cluster_of.items()):
        rep.setdefault(cid, doc)
    return {doc: rep[cid] for doc, cid in cluster_of.items()}


def method_datasketch(folder: Path) -> dict[str, str]:
    import numpy as np
    import pyarrow as pa
    import scipy.sparse as sp
    from datasketch import MinHash, MinHashLSH
    from scipy.sparse.csgraph import connected_components

    from curation.stages.dedup.minhash import shingle_strings

    ids, texts = read_corpus(folder)
    sets = shingle_strings(pa.array(texts, pa.large_string()), 5)  # the same shingles as ours
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=128)
    sigs = []
    for i, s in enumerate(sets):
        m = MinHash(num_perm=128, seed=1)
        if s:
            m.update_batch([x.encode() for x in s])
            lsh.insert(str(i), m)
        sigs.append(m)
    rows, cols = [], []
    for i, s in enumerate(sets):
        if s:
            for j in lsh.query(sigs[i]):
                rows.append(i)
                cols.append(int(j))
    n = len(ids)
    g = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    labels = connected_components(g, directed=False)[1]
    first: dict[int, str] = {}
    for i, lab in enumerate(labels):
        first.setdefault(int(lab), ids[i])
    return {ids[i]: first[int(lab)] for i, lab in enumerate(labels)}


def child(method: str, folder: Path) -> None:
    t0 = time.perf_counter()
    if method == "ours-local":
        clusters = method_ours(folder, "local")
    elif method == "ours-ray":
        clusters = method_ours(folder, "ray")
    elif method == "datatrove":
        clusters = method_datatrove(folder)
    else:
        clusters = method_datasketch(folder)
    secs = time.perf_counter() - t0
    print("RESULT " + json.dumps({"seconds": secs, "peak_rss_mb": peak_rss_mb(), "clusters": clusters}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path)
    ap.add_argument("--methods", default="ours-local,ours-ray,datatrove,datasketch")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.corpus)
        return
    from curation.stages.dedup.evaluate import cluster_accuracy, jaccard_pairs, oracle_clusters

    folder = args.corpus or natural_corpus(tmpdir("dd-corpus-"))
    ids, texts = read_corpus(folder)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    i, j, jac = jaccard_pairs(texts, 5)
    truth = oracle_clusters(len(ids), i, j, jac, THRESHOLD)
    print(f"corpus: {folder}: {len(ids)} docs, {mb:.2f} MB of text; oracle: {len(ids) - len(set(truth))} "
          f"documents to remove at J >= {THRESHOLD}")
    print(f"{'method':12s} {'seconds':>8s} {'docs/s':>8s} {'MB/s/core':>10s} {'peak MB':>8s} {'precision':>9s} "
          f"{'recall':>7s} {'removed':>8s}")
    rates = {}
    for method in args.methods.split(","):
        res = run_child(__file__, method, folder)
        if res is None:
            continue
        acc = cluster_accuracy(truth, labels_from_clusters(ids, res["clusters"]))
        cores = 2 if method == "ours-ray" else 1
        rates[method] = mb / res["seconds"] / cores
        print(f"{method:12s} {res['seconds']:8.2f} {len(ids) / res['seconds']:8.0f} {rates[method]:10.2f} "
              f"{res['peak_rss_mb']:8.0f} {acc.precision:9.3f} {acc.recall:7.3f} {acc.removed_found:8d}", flush=True)
    for ours in ("ours-local", "ours-ray"):
        for peer in ("datatrove", "datasketch"):
            if ours in rates and peer in rates:
                print(f"ratio {ours} / {peer} (MB/s per core): {rates[ours] / rates[peer]:.2f}x")


if __name__ == "__main__":
    main()
