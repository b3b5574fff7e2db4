"""Shared pieces of the dedup benchmarks: the corpus, the oracle, running our stage, peak memory."""

from __future__ import annotations

import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]


def natural_corpus(out: Path) -> Path:
    """The sample corpus at full size (every stdlib docstring, README and licence file, ~2,700 docs):
    real text with natural near-duplicates (licence variants, vendored READMEs)."""
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_sample_corpus.py"), "--out", str(out),
                    "--max-per-domain", "0", "--code-max-bytes", "200000"], check=True, capture_output=True)
    return out


def chain_corpus(out: Path, chains: int = 300, length: int = 8, singles: int = 600, words: int = 150,
                 seed: int = 0) -> Path:
    """Documents made by successive small edits (``chains`` chains of ``length``): each step replaces
    1-6 random words of the previous document (neighbour Jaccard ~0.93 down to ~0.66 over 5-word
    shingles), so documents far apart in a chain are not similar: chaining is the failure mode.
    Plus ``singles`` unrelated documents. Words are drawn from a 20,000-word synthetic vocabulary."""
    rng = np.random.default_rng(seed)
    vocab = np.array([_letters(k) for k in range(20000)])  # letters only: shingling maps digits to 0
    out.mkdir(parents=True, exist_ok=True)
    recs, fresh = [], 0
    for c in range(chains):
        doc = list(rng.choice(vocab, words))
        for step in range(length):
            if step:
                for p in rng.choice(words, int(rng.integers(1, 7)), replace=False):
                    doc[p] = "x" + _letters(fresh)
                    fresh += 1
            recs.append({"id": f"chain{c}-{step}", "text": " ".join(doc)})
    recs += [{"id": f"single{k}", "text": " ".join(rng.choice(vocab, words))} for k in range(singles)]
    with gzip.open(out / "chains.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in recs)
    return out


def _letters(k: int) -> str:
    out = ""
    while True:
        k, r = divmod(k, 26)
        out += chr(97 + r)
        if k == 0:
            return out


def read_corpus(folder: Path) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    for f in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                ids.append(rec["id"])
                texts.append(rec["text"])
    return ids, texts


def labels_from_clusters(ids: list[str], cluster_of: dict[str, str]) -> np.ndarray:
    """One integer label per document (singletons get their own)."""
    index = {d: i for i, d in enumerate(ids)}
    return np.array([index[cluster_of.get(d, d)] for d in ids])


def run_ours(folder: Path, out: Path, kind: str, threshold: float, num_perm: int = 128, verify: bool = True,
             num_cpus: int = 2, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """Run near_dedup_v1 in mark mode through our runner; return {doc id: cluster id}."""
    import duckdb

    from curation.executors import make_executor
    from curation.pipeline import PipelineConfig

    stage = {"stage": "near_dedup_v1", "threshold": threshold, "num_perm": num_perm, "verify": verify,
             "mode": "mark", "keep": "first", **(extra or {})}
    cfg = PipelineConfig.from_mapping({
        "name": "bench", "input": {"paths": [str(folder / "*.jsonl.gz")], "id_field": "id"},
        "stages": [stage], "output": {"dir": str(out), "token_counter": "whitespace"},
        "executor": {"kind": kind, "num_cpus": num_cpus},
    })
    ex = make_executor(cfg, overwrite=True)
    try:
        ex.run()
    finally:
        ex.close()
    rows = duckdb.sql(f"SELECT id, dup_cluster FROM read_parquet('{out}/shards/*.parquet')").fetchall()
    return dict(rows)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM) and of its finished children, in MB.

    ``ru_maxrss`` of this process is not used: on Linux it survives ``exec`` and so would report
    the parent's peak. Ray workers are separate processes and are not included."""
    own = 0.0
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                own = int(line.split()[1]) / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return max(own, kids)


def run_child(script: str, method: str, folder: Path) -> dict[str, Any] | None:
    """Run ``script --child METHOD --corpus FOLDER`` in a fresh process (so its peak memory is its
    own) and return the JSON it prints after ``RESULT ``; None (after printing stderr) on failure."""
    proc = subprocess.run([sys.executable, script, "--child", method, "--corpus", str(folder)],
                          capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        print(f"{method}: failed\n{proc.stderr[-3000:]}")
        return None
    return json.loads(line[len("RESULT "):])


def tmpdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
