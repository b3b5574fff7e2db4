"""Semantic dedup (``semantic_dedup_v1``) on the labelled pair set, beside MinHash near-dedup at 0.8.

    .venv/bin/python benchmarks/semdedup.py                      # P/R per eps and per category, throughput
    .venv/bin/python benchmarks/semdedup.py --chunks 1,4         # also the mean-over-windows embedding
    .venv/bin/python benchmarks/semdedup.py --json out.json

The set (``benchmarks/data/semdedup_pairs.jsonl``, built and labelled as ``semdedup_pairs_README.md``
says) holds document pairs labelled duplicate / not duplicate. A method calls a pair a duplicate:

* semantic, at ``eps``: the cosine of the two documents' embeddings (the stage's own ``embed_texts``
  with the bundled MiniLM, first 256 tokens, or ``chunks`` windows averaged) is >= 1 - eps: the rule
  the stage applies within a k-means cluster;
* MinHash: ``near_dedup_v1`` (threshold 0.8, its defaults: 128 permutations, bands chosen for the
  threshold, verified) run on the two documents alone marks one as the other's near duplicate;
  ``jaccard>=0.8`` is the exact Jaccard of the stage's shingle sets, the rule MinHash estimates.

Precision and recall are over pairs. Per category, the share of pairs called duplicates (recall on
duplicate categories, false-positive rate on the others). Beside the pair rule, the stage's own
clustering: the share of duplicate pairs whose two documents k-means (over all the set's documents,
``n_clusters`` sqrt(n)) put in different clusters, which the stage then never compares.

Throughput: documents embedded per second of this process's CPU time with one torch thread (so per
CPU core), over the set's distinct documents, and tokens per second.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAIRS = Path(__file__).resolve().parent / "data" / "semdedup_pairs.jsonl"
EPS = (0.01, 0.02, 0.03, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)


def load(path: Path) -> tuple[list[dict[str, Any]], list[str], np.ndarray]:
    """(pairs, distinct texts, (n_pairs, 2) indexes of each pair's texts)."""
    pairs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    index: dict[str, int] = {}
    texts: list[str] = []
    ab = np.zeros((len(pairs), 2), dtype=np.int64)
    for k, p in enumerate(pairs):
        for j, t in enumerate((p["a"], p["b"])):
            if t not in index:
                index[t] = len(texts)
                texts.append(t)
            ab[k, j] = index[t]
    return pairs, texts, ab


def embed(texts: list[str], chunks: int) -> tuple[np.ndarray, dict[str, float]]:
    """The stage's embeddings of ``texts`` and the throughput figures (one torch thread)."""
    import torch

    from curation.stages.dedup.semantic import Embedder, embed_texts

    torch.set_num_threads(1)
    emb = Embedder()
    tok = emb.load()[0]
    embed_texts(emb, texts[:8], chunks)  # warm up (first-call allocations), not timed
    cpu0, wall0 = time.process_time(), time.perf_counter()
    x = embed_texts(emb, texts, chunks)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    width = int(emb.max_tokens or 256)
    tokens = sum(min(len(ids), width * chunks) for ids in tok(texts, add_special_tokens=False, verbose=False)["input_ids"])
    return x, {"docs": len(texts), "cpu_s": round(cpu, 2), "wall_s": round(wall, 2),
               "docs_per_cpu_s": round(len(texts) / cpu, 2), "tokens_per_cpu_s": round(tokens / cpu, 1),
               "tokens": tokens}


def minhash_calls(pairs: list[dict[str, Any]], threshold: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """(near_dedup_v1 on each pair alone, exact Jaccard of its shingle sets >= threshold)."""
    from curation.stages.dedup.minhash import shingle_strings
    from curation.stages.dedup.near import NearDedup, NearDedupConfig
    from curation.stages.frame import LocalFrame

    stage = NearDedup(NearDedupConfig(threshold=threshold, max_source_removal_fraction=None, num_buckets=4))
    calls, exact = [], []
    for p in pairs:
        texts = pa.array([p["a"], p["b"]], pa.large_string())
        batch = pa.table({"id": ["a", "b"], "text": texts, "n_chars": pa.array([len(p["a"]), len(p["b"])], pa.int64()),
                          "source": ["s", "s"], "domain": ["d", "d"], "_task": pa.array([0, 0], pa.int32()),
                          "_row": pa.array([0, 1], pa.int64())})
        keys = stage.add_keys(batch)
        res = stage.run_global(LocalFrame(keys, num_buckets=4)).collect()
        calls.append(bool(len(res)) and any(d is not None for d in res.column("dup_of").to_pylist()))
        sa, sb = shingle_strings(texts, stage.config.ngram)
        exact.append(len(sa & sb) / max(len(sa | sb), 1) >= threshold)
    return np.array(calls), np.array(exact)


def scores(pred: np.ndarray, gold: np.ndarray) -> dict[str, Any]:
    tp, fp, fn = int((pred & gold).sum()), int((pred & ~gold).sum()), int((~pred & gold).sum())
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    return {"precision": round(p, 3), "recall": round(r, 3), "f1": round(2 * p * r / (p + r), 3) if p + r else 0.0,
            "tp": tp, "fp": fp, "fn": fn}


def same_cluster(x: np.ndarray, ab: np.ndarray) -> tuple[np.ndarray, int]:
    """Whether the stage's k-means (its defaults: k = sqrt(n), seed 0, one init, 50 iterations) over all
    the set's documents puts each pair's two documents in one cluster; and k."""
    from curation.scoring.kmeans import spherical_kmeans
    from curation.stages.dedup.semantic import assign_clusters

    k = max(1, round(len(x) ** 0.5))
    fit = spherical_kmeans(x, k, seed=0, n_init=1, max_iter=50)
    lab = assign_clusters(x, fit.centroids)
    return lab[ab[:, 0]] == lab[ab[:, 1]], k


def templates(pairs: list[dict[str, Any]], gold: np.ndarray) -> np.ndarray:
    """Non-duplicate pairs whose texts share at least 75% of their words in order (difflib ratio over
    words, roff escapes dropped): instances of one template about different subjects (sha256sum vs
    sha512sum, numpy.maximum vs numpy.minimum), which no text-similarity rule can tell apart."""
    import difflib

    from benchmarks.data.semdedup_pairs_build import _plain

    out = np.zeros(len(pairs), dtype=bool)
    for k, p in enumerate(pairs):
        if not gold[k]:
            a, b = _plain(p["a"]), _plain(p["b"])
            out[k] = difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= 0.75
    return out


def synthetic_keys(n: int, dim: int = 384, seed: int = 0) -> pa.Table:
    """Key rows of ``n`` unit vectors: topics (one per 50 documents) plus noise, a few near copies each."""
    from curation.stages.dedup.semantic import EMB, SCORE

    rng = np.random.default_rng(seed)
    topics = rng.normal(size=(max(1, n // 50), dim))
    x = topics[rng.integers(len(topics), size=n)] + rng.normal(scale=1.2, size=(n, dim))
    x[1::10] = x[::10][: len(x[1::10])] + rng.normal(scale=0.05, size=(len(x[1::10]), dim))  # near copies
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * dim)
    return pa.table({"id": [f"d{i}" for i in range(n)], "_task": pa.array(np.arange(n) // 10000, pa.int32()),
                     "_row": pa.array(np.arange(n) % 10000, pa.int64()),
                     EMB: pa.ListArray.from_arrays(offsets, pa.array(x.reshape(-1))),
                     SCORE: pa.array(np.full(n, np.nan))})


def global_scaling(small: int, large: int) -> dict[str, Any]:
    """The planner's cost model of the corpus-wide step (``global_seconds_at``), fitted on ``small``
    documents and checked against a measured run over ``large``, both in process."""
    from curation.stages.dedup.semantic import SemanticDedup, SemanticDedupConfig
    from curation.stages.frame import LocalFrame

    out: dict[str, Any] = {}
    for n in (small, large):
        stage = SemanticDedup(SemanticDedupConfig())
        keys = synthetic_keys(n)
        t0 = time.process_time()
        stage.run_global(LocalFrame(keys, num_buckets=stage.num_buckets)).collect()
        out[n] = (time.process_time() - t0, stage)
    sec_small, stage_small = out[small]
    predicted = stage_small.global_seconds_at(sec_small, large)
    nlogn = sec_small * (large * np.log(large)) / (small * np.log(small))
    return {"small": small, "large": large, "cpu_s_small": round(sec_small, 2), "cpu_s_large": round(out[large][0], 2),
            "predicted_large": round(predicted or 0.0, 2), "nlogn_predicted_large": round(float(nlogn), 2),
            "report_small": stage_small.report, "report_large": out[large][1].report}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default=str(PAIRS))
    ap.add_argument("--chunks", default="1", help="comma-separated chunk counts to evaluate (1: first window)")
    ap.add_argument("--eps", default=",".join(map(str, EPS)))
    ap.add_argument("--cache", default=None, help="npz of embeddings to reuse (keyed by chunks)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--scaling", default=None, metavar="SMALL,LARGE",
                    help="only check the planner's cost model of the global step on synthetic vectors, e.g. 2000,20000")
    args = ap.parse_args()
    if args.scaling:
        small, large = (int(v) for v in args.scaling.split(","))
        res = global_scaling(small, large)
        print(json.dumps(res, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1))
        return
    pairs, texts, ab = load(Path(args.pairs))
    gold = np.array([p["label"] == 1 for p in pairs])
    cats = sorted({p["category"] for p in pairs})
    print(f"{len(pairs)} labelled pairs ({int(gold.sum())} duplicates, {int((~gold).sum())} not), "
          f"{len(texts)} distinct documents")
    out: dict[str, Any] = {"pairs": len(pairs), "duplicates": int(gold.sum()), "documents": len(texts), "rows": []}

    t0 = time.perf_counter()
    mh, jac = minhash_calls(pairs)
    out["minhash_seconds"] = round(time.perf_counter() - t0, 1)
    rows: list[tuple[str, np.ndarray]] = [("minhash near_dedup_v1 @0.8", mh), ("exact jaccard >= 0.8", jac)]
    cache = dict(np.load(args.cache)) if args.cache and Path(args.cache).exists() else {}
    for chunks in (int(c) for c in args.chunks.split(",")):
        key = f"chunks{chunks}"
        if key in cache:
            x, thr = cache[key], json.loads(str(cache[key + "_thr"]))
        else:
            x, thr = embed(texts, chunks)
            cache[key], cache[key + "_thr"] = x, np.array(json.dumps(thr))
        out[f"throughput_{key}"] = thr
        print(f"embedding ({key}): {thr}")
        cos = (x[ab[:, 0]] * x[ab[:, 1]]).sum(1)
        out[f"cosine_{key}"] = [round(float(c), 4) for c in cos]
        for e in (float(v) for v in args.eps.split(",")):
            rows.append((f"semantic {key} eps {e:g}", cos >= 1 - e))
        together, k = same_cluster(x, ab)
        out[f"kmeans_{key}"] = {"k": k, "dup_pairs_split": int((gold & ~together).sum()),
                                "pairs_split": int((~together).sum())}
        print(f"k-means ({key}): {out[f'kmeans_{key}']}")
        for e in (float(v) for v in args.eps.split(",")):
            rows.append((f"semantic stage {key} eps {e:g} (pair rule and one k-means cluster)",
                         (cos >= 1 - e) & together))
        for e in (float(v) for v in args.eps.split(",")):
            # pipelines/semantic.yaml: MinHash first, then semantic dedup on what it kept.
            rows.append((f"minhash 0.8 then semantic stage {key} eps {e:g}", mh | ((cos >= 1 - e) & together)))
    if args.cache:
        np.savez(args.cache, **cache)

    print("\n| method | precision | recall | F1 | TP | FP | FN |\n|---|---:|---:|---:|---:|---:|---:|")
    for name, pred in rows:
        s = scores(pred, gold)
        out["rows"].append({"method": name, **s})
        print(f"| {name} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['tp']} | {s['fp']} | {s['fn']} |")
    tmpl = templates(pairs, gold)
    keep = ~tmpl
    print(f"\nwithout the {int(tmpl.sum())} template pairs (non-duplicates sharing >= 75% of their words in order)")
    print("| method | precision | recall | F1 | TP | FP | FN |\n|---|---:|---:|---:|---:|---:|---:|")
    out["templates"] = [p["id"] for p, t in zip(pairs, tmpl) if t]
    for name, pred in rows:
        s = scores(pred[keep], gold[keep])
        out["rows"].append({"method": name, "without_templates": True, **s})
        print(f"| {name} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['tp']} | {s['fp']} | {s['fn']} |")
    print("\nshare of pairs called duplicate, per category (label: d duplicates / n not)")
    header = "| method | " + " | ".join(f"{c} ({int(gold[[p['category'] == c for p in pairs]].sum())}d/"
                                        f"{int((~gold)[[p['category'] == c for p in pairs]].sum())}n)" for c in cats)
    print(header + " |\n|---|" + "---:|" * len(cats))
    per_cat: dict[str, dict[str, float]] = defaultdict(dict)
    for name, pred in rows:
        cells = []
        for c in cats:
            m = np.array([p["category"] == c for p in pairs])
            share = float(pred[m].mean())
            per_cat[name][c] = round(share, 3)
            cells.append(f"{share:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    out["per_category"] = per_cat
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
