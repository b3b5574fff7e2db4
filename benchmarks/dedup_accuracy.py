"""Near-dedup accuracy against an exact-Jaccard oracle (all pairs, exact shingle sets).

    .venv/bin/python benchmarks/dedup_accuracy.py                 # natural corpus, ~2,700 docs
    .venv/bin/python benchmarks/dedup_accuracy.py --corpus DIR    # any folder of *.jsonl.gz with id/text

The oracle's clusters are the connected components of pairs with exact Jaccard >= threshold over
5-word shingles (the same tokenisation as the stage). Precision and recall are pairwise over
clusters: of the document pairs the stage put in one cluster, the share the oracle also puts in
one cluster, and the converse. Rows: the default stage (128 permutations, bands chosen for the
threshold, signature verification) and the same without verification at datatrove's 14 x 8.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._dedup_common import labels_from_clusters, natural_corpus, read_corpus, run_ours, tmpdir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path)
    ap.add_argument("--thresholds", default="0.7,0.8")
    ap.add_argument("--margins", help="also sweep verify_margin, e.g. 0,0.02,0.04 (default bands, 128 perms)")
    args = ap.parse_args()
    from curation.stages.dedup.evaluate import cluster_accuracy, jaccard_pairs, oracle_clusters
    from curation.stages.dedup.near import NearDedup, NearDedupConfig

    folder = args.corpus or natural_corpus(tmpdir("da-corpus-"))
    ids, texts = read_corpus(folder)
    t0 = time.perf_counter()
    i, j, jac = jaccard_pairs(texts, 5)
    print(f"corpus: {folder}: {len(ids)} docs; oracle: {len(jac)} pairs sharing a shingle, exact Jaccard in "
          f"{time.perf_counter() - t0:.1f} s")
    print(f"{'threshold':>9s} {'setting':34s} {'precision':>9s} {'recall':>7s} {'pairs found/true':>17s} {'removed found/true':>19s}")
    settings = [("128 perms, chosen bands, verified", {}),
                ("112 perms, 14 x 8, unverified", {"num_perm": 112, "bands": 14, "rows": 8, "verify": False}),
                ("256 perms, chosen bands, verified", {"num_perm": 256})]
    if args.margins:
        settings = [(f"128 perms, verify_margin {m}", {"verify_margin": float(m)}) for m in args.margins.split(",")]
    for threshold in (float(x) for x in args.thresholds.split(",")):
        truth = oracle_clusters(len(ids), i, j, jac, threshold)
        for name, extra in settings:
            stage = NearDedup(NearDedupConfig(threshold=threshold, **extra))
            clusters = run_ours(folder, tmpdir("da-run-"), "local", threshold, verify=extra.get("verify", True),
                                num_perm=extra.get("num_perm", 128),
                                extra={k: v for k, v in extra.items() if k in ("bands", "rows", "verify_margin")})
            acc = cluster_accuracy(truth, labels_from_clusters(ids, clusters))
            label = f"{name} ({stage.bands}x{stage.rows})"
            print(f"{threshold:9.2f} {label:34s} {acc.precision:9.3f} {acc.recall:7.3f} "
                  f"{acc.pairs_found:>8d}/{acc.pairs_true:<8d} {acc.removed_found:>9d}/{acc.removed_true:<9d}", flush=True)


if __name__ == "__main__":
    main()
