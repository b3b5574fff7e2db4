"""Near-dedup accuracy against an exact-Jaccard oracle (all pairs, exact shingle sets).

    .venv/bin/python benchmarks/dedup_accuracy.py                 # natural corpus (~2,800 docs), then chains
    .venv/bin/python benchmarks/dedup_accuracy.py --corpus DIR    # any folder of *.jsonl.gz with id/text

The oracle's clusters are the connected components of pairs with exact Jaccard >= threshold over
5-word shingles (the same tokenisation as the stage). Precision and recall are pairwise over
clusters: of the document pairs the stage put in one cluster, the share the oracle also puts in
one cluster, and the converse. Rows: the default stage (128 permutations, bands chosen for the
threshold, signature verification) and the same without verification at datatrove's 14 x 8.
Beside the pairwise figures, document-level removal precision/recall (each cluster keeps its first
document, as the stage runs here with ``keep: first``). Two corpora unless ``--corpus``: the natural
one (built from the installed Python and packages, so its size varies by machine: it is printed) and
a generated chain corpus (``_dedup_common.chain_corpus``: successive small edits, where a single
wrong link merges two chains).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._dedup_common import (  # noqa: E402
    chain_corpus, labels_from_clusters, natural_corpus, read_corpus, run_ours, tmpdir,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path)
    ap.add_argument("--thresholds", default="0.7,0.8,0.9")
    ap.add_argument("--sigmas", help="sweep verify_sigmas instead, e.g. 0,2,4 (default bands, 128 perms)")
    ap.add_argument("--default-only", action="store_true", help="only the default setting")
    args = ap.parse_args()
    folders = [args.corpus] if args.corpus else [natural_corpus(tmpdir("da-corpus-")), chain_corpus(tmpdir("da-chains-"))]
    for folder in folders:
        evaluate(folder, args)


def evaluate(folder: Path, args: argparse.Namespace) -> None:
    from curation.stages.dedup.evaluate import cluster_accuracy, jaccard_pairs, oracle_clusters
    from curation.stages.dedup.near import NearDedup, NearDedupConfig

    ids, texts = read_corpus(folder)
    t0 = time.perf_counter()
    i, j, jac = jaccard_pairs(texts, 5)
    print(f"corpus: {folder}: {len(ids)} docs; oracle: {len(jac)} pairs sharing a shingle, exact Jaccard in "
          f"{time.perf_counter() - t0:.1f} s")
    print(f"{'threshold':>9s} {'setting':42s} {'precision':>9s} {'recall':>7s} {'pairs found/true':>17s} "
          f"{'removed found/true':>19s} {'removal P':>9s} {'removal R':>9s}")
    settings = [("128 perms, chosen bands, verified", {}),
                ("112 perms, 14 x 8, unverified", {"num_perm": 112, "bands": 14, "rows": 8, "verify": False}),
                ("256 perms, chosen bands, verified", {"num_perm": 256})]
    if args.sigmas:
        settings = [(f"128 perms, verify_sigmas {m}", {"verify_sigmas": float(m)}) for m in args.sigmas.split(",")]
    elif args.default_only:
        settings = settings[:1]
    for threshold in (float(x) for x in args.thresholds.split(",")):
        truth = oracle_clusters(len(ids), i, j, jac, threshold)
        for name, extra in settings:
            stage = NearDedup(NearDedupConfig(threshold=threshold, **extra))
            clusters = run_ours(folder, tmpdir("da-run-"), "local", threshold, verify=extra.get("verify", True),
                                num_perm=extra.get("num_perm", 128),
                                extra={k: v for k, v in extra.items() if k in ("bands", "rows", "verify_sigmas")})
            acc = cluster_accuracy(truth, labels_from_clusters(ids, clusters))
            label = f"{name} ({stage.bands}x{stage.rows})"
            print(f"{threshold:9.2f} {label:42s} {acc.precision:9.3f} {acc.recall:7.3f} "
                  f"{acc.pairs_found:>8d}/{acc.pairs_true:<8d} {acc.removed_found:>9d}/{acc.removed_true:<9d} "
                  f"{acc.removal_precision:9.3f} {acc.removal_recall:9.3f}", flush=True)


if __name__ == "__main__":
    main()
