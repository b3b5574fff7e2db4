"""decontaminate_v1 vs a plain Python set of n-gram tuples: throughput and memory, same data.

    .venv/bin/python benchmarks/decontaminate.py                  # ~1M eval 13-grams, bundled sample corpus
    .venv/bin/python benchmarks/decontaminate.py --eval-ngrams 200000 --replicate 2

Documents: the bundled sample corpus (curation/data/sample, real text), ``--replicate`` times.
Eval set: ``--planted`` passages of 40 words copied from corpus documents (so real matches
exist), plus synthetic items of corpus words up to ``--eval-ngrams`` distinct 13-grams. Both
sides use the same normaliser (``ngrams.words``), so timings differ only in n-gram hashing and
lookup; the report checks that both flag the same documents. One process, one thread: docs/s is
docs/s per core. Memory: bytes of the index's numpy arrays (hashes + item ids), and tracemalloc's
retained bytes of each structure once built (for the set: the set, its tuples, and the word strings
the tuples keep alive).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curation.stages.decontam.evalsets import EvalFileSpec  # noqa: E402
from curation.stages.decontam.index import build_index  # noqa: E402
from curation.stages.decontam.ngrams import words  # noqa: E402

N = 13


def load_docs(replicate: int) -> list[str]:
    texts = []
    for f in sorted((REPO / "curation" / "data" / "sample").glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            texts += [json.loads(line)["text"] for line in fh]
    return texts * replicate


def make_eval(docs: list[str], n_ngrams: int, planted: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    items = []
    long_docs = [d for d in docs if len(d.split()) > 60]
    for d in rng.sample(long_docs, min(planted, len(long_docs))):
        ws = d.split()
        start = rng.randrange(0, len(ws) - 40)
        items.append(" ".join(ws[start : start + 40]))
    vocab = sorted({w for d in docs[:500] for w in words(d)})
    planted_ngrams = sum(max(0, len(words(it)) - N + 1) for it in items)
    per_item = 100 + N - 1  # 100 n-grams per synthetic item
    for _ in range(max(0, n_ngrams - planted_ngrams + 99) // 100):
        items.append(" ".join(rng.choice(vocab) for _ in range(per_item)))
    return items


def python_set(eval_items: list[str]) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    for it in eval_items:
        ws = words(it)
        out.update(tuple(ws[i : i + N]) for i in range(len(ws) - N + 1))
    return out


def traced(fn):  # noqa: ANN001, ANN201  (returns (result, retained bytes, seconds))
    tracemalloc.start()
    t = time.perf_counter()
    result = fn()
    dt = time.perf_counter() - t
    retained = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return result, retained, dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eval-ngrams", type=int, default=1_000_000)
    ap.add_argument("--planted", type=int, default=200)
    ap.add_argument("--replicate", type=int, default=1)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    docs = load_docs(args.replicate)
    eval_items = make_eval(docs, args.eval_ngrams, args.planted, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "eval.jsonl"
        path.write_text("".join(json.dumps({"q": q}) + "\n" for q in eval_items))
        words("warm up")  # the punctuation regex is built once per process; not part of either build
        index, idx_bytes, idx_build = traced(lambda: build_index([EvalFileSpec(path=str(path), fields=["q"])], N, 8))
    gram_set, set_bytes, set_build = traced(lambda: python_set(eval_items))
    mb = sum(len(d.encode()) for d in docs) / 1e6
    n_words = sum(len(words(d)) for d in docs)
    print(f"documents: {len(docs):,} ({mb:.1f} MB, {n_words:,} words); eval: {len(eval_items):,} items, "
          f"{index.num_ngrams:,} distinct 13-grams (set: {len(gram_set):,})")

    t = time.perf_counter()
    doc_words = [words(d) for d in docs]
    t_norm = time.perf_counter() - t
    t = time.perf_counter()
    ours = set()
    for b in range(0, len(docs), args.batch):
        m = index.match(doc_words[b : b + args.batch])
        ours |= {b + int(d) for d in (m.ngrams > 0).nonzero()[0]}
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    theirs = set()
    for i, ws in enumerate(doc_words):
        if sum(tuple(ws[j : j + N]) in gram_set for j in range(len(ws) - N + 1)):  # counts all, like ours
            theirs.add(i)
    t_set = time.perf_counter() - t

    print(f"contaminated documents: ours {len(ours)}, set {len(theirs)}, identical: {ours == theirs}")
    print(f"normalisation (shared by both, not in the lookup columns): {len(docs) / t_norm:,.0f} docs/s")
    print("| method | build s | retained MB | lookup docs/s per core | with normalisation docs/s per core |")
    print("|---|---|---|---|---|")
    for name, build, mem, dt in (("numpy uint64 index + bitmap", idx_build, idx_bytes, t_ours),
                                 ("Python set of 13-word tuples", set_build, set_bytes, t_set)):
        print(f"| {name} | {build:.2f} | {mem / 1e6:.1f} | {len(docs) / dt:,.0f} | {len(docs) / (dt + t_norm):,.0f} |")
    print(f"index arrays: {index.nbytes / 1e6:.1f} MB for {index.num_ngrams:,} n-grams "
          f"({index.nbytes / max(1, index.num_ngrams):.1f} bytes each)")


if __name__ == "__main__":
    main()
