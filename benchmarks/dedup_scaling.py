"""Near-dedup scaling: wall time at 10k, 100k and 1M short documents.

    .venv/bin/python benchmarks/dedup_scaling.py                          # 10k, 100k, 1M; local and ray
    .venv/bin/python benchmarks/dedup_scaling.py --sizes 10000,100000 --methods ours-local

Documents are short (40-120 words) synthetic mutations of real text: sentences of the bundled
sample corpus are drawn into new documents, and 20% of documents are copies of an earlier one
with 0.5-3% of their words replaced (near-duplicates around J = 0.8), 5%
exact copies. Files hold 50,000 documents each. Every method runs in its own subprocess.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._dedup_common import REPO, peak_rss_mb, run_child, run_ours, tmpdir  # noqa: E402


def sentences() -> list[str]:
    out = []
    for f in sorted((REPO / "curation" / "data" / "sample").glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                out += [s.strip() for s in re.split(r"(?<=[.!?])\s+", json.loads(line)["text"]) if 20 < len(s) < 400]
    return sorted(set(out))


def make_corpus(n: int, folder: Path, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    pool = sentences()
    vocab = sorted({w for s in pool[:5000] for w in s.split()})
    docs: list[str] = []
    per_file = 50_000
    mb = 0.0
    folder.mkdir(parents=True, exist_ok=True)
    fh = None
    for i in range(n):
        r = rng.random()
        if i > 10 and r < 0.05:
            text = docs[int(rng.integers(0, len(docs)))]
        elif i > 10 and r < 0.25:
            words = docs[int(rng.integers(0, len(docs)))].split()
            k = max(1, int(len(words) * rng.uniform(0.005, 0.03)))
            for p in rng.choice(len(words), size=k, replace=False):
                words[p] = vocab[int(rng.integers(0, len(vocab)))]
            text = " ".join(words)
        else:
            parts, words = [], 0
            target = int(rng.integers(40, 121))
            while words < target:
                s = pool[int(rng.integers(0, len(pool)))]
                parts.append(s)
                words += len(s.split())
            text = " ".join(parts)
        docs.append(text)
        if i % per_file == 0:
            if fh:
                fh.close()
            fh = gzip.open(folder / f"part-{i // per_file:04d}.jsonl.gz", "wt", encoding="utf-8", compresslevel=1)
        fh.write(json.dumps({"id": f"d{i}", "text": text}) + "\n")
        mb += len(text.encode()) / 1e6
    if fh:
        fh.close()
    return mb


def child(method: str, folder: Path) -> None:
    t0 = time.perf_counter()
    if method in ("ours-local", "ours-ray"):
        clusters = run_ours(folder, tmpdir("ds-run-"), method.split("-")[1], 0.8)
        removed = sum(1 for d, c in clusters.items() if d != c)
    else:
        raise SystemExit(f"unknown method {method}")
    print("RESULT " + json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb(), "removed": removed}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--methods", default="ours-local,ours-ray")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.corpus)
        return
    print(f"{'docs':>9s} {'MB':>7s} {'method':12s} {'seconds':>8s} {'docs/s':>8s} {'MB/s/core':>10s} {'peak MB':>8s} {'removed':>8s}")
    for n in (int(x) for x in args.sizes.split(",")):
        folder = tmpdir(f"ds-corpus-{n}-")
        mb = make_corpus(n, folder)
        for method in args.methods.split(","):
            res = run_child(__file__, method, folder)
            if res is None:
                continue
            cores = 2 if method == "ours-ray" else 1
            print(f"{n:9d} {mb:7.1f} {method:12s} {res['seconds']:8.1f} {n / res['seconds']:8.0f} "
                  f"{mb / res['seconds'] / cores:10.2f} {res['peak_rss_mb']:8.0f} {res['removed']:8d}", flush=True)


if __name__ == "__main__":
    main()
