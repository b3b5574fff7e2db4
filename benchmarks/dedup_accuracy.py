"""Near-dedup accuracy against an exact-Jaccard oracle (all pairs, exact shingle sets).

    .venv/bin/python benchmarks/dedup_accuracy.py                 # natural corpus (~2,800 docs), then chains
    .venv/bin/python benchmarks/dedup_accuracy.py --corpus DIR    # any folder of *.jsonl.gz with id/text

The oracle's clusters are the connected components of pairs with exact Jaccard >= threshold over
5-word shingles (the same tokenisation as the stage). Precision and recall are pairwise over
clusters: of the document pairs the stage put in one cluster, the share the oracle also puts in
one cluster, and the converse. Rows: the default stage (128 permutations, bands chosen for the
threshold, signature verification) and the same without verification at datatrove's 14 x 8.
Beside the pairwise figures, document-level removal precision/recall (each cluster keeps its first
document, as the stage runs here with ``keep: first``).

Both ``clustering`` modes of the verified settings (``--clustering``). ``components`` is scored
against the oracle's connected components; ``star`` against the oracle's stars (``oracle_stars``:
in input order, a document joins the earliest centre with exact Jaccard >= threshold, over all
pairs). ``direct``: the share of the stage's drops whose exact Jaccard with the document kept for
them is >= threshold (the rest were dropped through a chain). ``s``: the stage's run time.

Two corpora unless ``--corpus``: the natural
one (built from the installed Python and packages, so its size varies by machine: it is printed) and
a generated chain corpus (``_dedup_common.chain_corpus``: successive small edits, where a single
wrong link merges two chains).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

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
    ap.add_argument("--clustering", default="components,star", help="near_dedup_v1 clustering modes to run")
    args = ap.parse_args()
    folders = [args.corpus] if args.corpus else [natural_corpus(tmpdir("da-corpus-")), chain_corpus(tmpdir("da-chains-"))]
    for folder in folders:
        evaluate(folder, args)


def evaluate(folder: Path, args: argparse.Namespace) -> None:
    from curation.stages.dedup.evaluate import cluster_accuracy, jaccard_pairs, oracle_clusters, oracle_stars
    from curation.stages.dedup.near import NearDedup, NearDedupConfig

    ids, texts = read_corpus(folder)
    t0 = time.perf_counter()
    i, j, jac = jaccard_pairs(texts, 5)
    print(f"corpus: {folder}: {len(ids)} docs; oracle: {len(jac)} pairs sharing a shingle, exact Jaccard in "
          f"{time.perf_counter() - t0:.1f} s")
    print(f"{'threshold':>9s} {'setting':42s} {'clustering':>10s} {'precision':>9s} {'recall':>7s} "
          f"{'pairs found/true':>17s} {'removed found/true':>19s} {'removal P':>9s} {'removal R':>9s} "
          f"{'direct':>6s} {'s':>5s}")
    settings = [("128 perms, chosen bands, verified", {}),
                ("112 perms, 14 x 8, unverified", {"num_perm": 112, "bands": 14, "rows": 8, "verify": False}),
                ("256 perms, chosen bands, verified", {"num_perm": 256})]
    if args.sigmas:
        settings = [(f"128 perms, verify_sigmas {m}", {"verify_sigmas": float(m)}) for m in args.sigmas.split(",")]
    elif args.default_only:
        settings = settings[:1]
    pair_j = dict(zip(zip(i.tolist(), j.tolist()), jac.tolist()))
    modes = args.clustering.split(",")
    for threshold in (float(x) for x in args.thresholds.split(",")):
        truths = {"components": oracle_clusters(len(ids), i, j, jac, threshold),
                  "star": oracle_stars(len(ids), i, j, jac, threshold)}
        for name, extra in settings:
            for mode in modes:
                if mode == "star" and not extra.get("verify", True):
                    continue  # star checks drops on shingle sets: verified settings only
                stage = NearDedup(NearDedupConfig(threshold=threshold, **extra))
                t0 = time.perf_counter()
                clusters = run_ours(folder, tmpdir("da-run-"), "local", threshold, verify=extra.get("verify", True),
                                    num_perm=extra.get("num_perm", 128),
                                    extra={**{k: v for k, v in extra.items() if k in ("bands", "rows", "verify_sigmas")},
                                           "clustering": mode})
                seconds = time.perf_counter() - t0
                found = labels_from_clusters(ids, clusters)
                acc = cluster_accuracy(truths[mode], found)
                label = f"{name} ({stage.bands}x{stage.rows})"
                print(f"{threshold:9.2f} {label:42s} {mode:>10s} {acc.precision:9.3f} {acc.recall:7.3f} "
                      f"{acc.pairs_found:>8d}/{acc.pairs_true:<8d} {acc.removed_found:>9d}/{acc.removed_true:<9d} "
                      f"{acc.removal_precision:9.3f} {acc.removal_recall:9.3f} "
                      f"{direct_share(found, pair_j, threshold):6.3f} {seconds:5.1f}", flush=True)


def direct_share(labels: np.ndarray, pair_j: dict[tuple[int, int], float], threshold: float) -> float:
    """Of the documents dropped (label: the kept document's index, ``keep: first``), the share whose
    exact Jaccard with that kept document is >= threshold (pairs sharing no shingle: 0)."""
    lab = np.asarray(labels)
    dropped = np.flatnonzero(lab != np.arange(len(lab)))
    if len(dropped) == 0:
        return 1.0
    ok = sum(pair_j.get((min(d, k), max(d, k)), 0.0) >= threshold
             for d, k in zip(dropped.tolist(), lab[dropped].tolist()))
    return ok / len(dropped)


if __name__ == "__main__":
    main()
