"""fastText scoring throughput: the fasttext_score_v1 stage vs raw fastText predict on the same texts.

    .venv/bin/python benchmarks/scoring.py                 # bundled sample x 10 (12,650 docs), best of 3

A scorer is trained on the sample (documentation prose vs licence files; PreSelect's settings with
more epochs, 200k buckets). Rows, all single-threaded on one core:
  raw fastText     model.predict(list of texts with newlines replaced, k=-1): the floor
  stage.process    fasttext_score_v1 on Arrow batches of 500 (text column in, score column out)
  runner           the whole pipeline (read JSONL.gz, score, write Parquet shards) with the in-process executor
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicate", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import fasttext
    import pyarrow as pa

    from curation.executors import make_executor
    from curation.pipeline import PipelineConfig
    from curation.scoring.classifier import FastTextSettings, normalise, train_classifier
    from curation.stages.scoring.fasttext_score import FastTextScore, FastTextScoreConfig, ScorerSpec

    sample = REPO / "curation" / "data" / "sample"
    records = []
    for f in sorted(sample.glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            records += [json.loads(line) for line in fh]
    tmp = Path(tempfile.mkdtemp(prefix="bench-score-"))
    pos = [r["text"] for r in records if r["domain"] == "python_docs"]
    neg = [r["text"] for r in records if r["domain"] == "license"]
    train_classifier(tmp / "scorer", pos, neg, FastTextSettings(epoch=25, lr=0.5, bucket=200_000), {"method": "bench"}, 0.0)
    texts = [r["text"] for r in records] * args.replicate
    n = len(texts)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"{n} docs, {mb:.1f} MB of text")
    model = fasttext.load_model(str(tmp / "scorer" / "model.bin"))

    def best(fn) -> float:
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    raw = best(lambda: model.predict([normalise(t) for t in texts], k=-1))
    stage = FastTextScore(FastTextScoreConfig(models=[ScorerSpec(name="q", path=str(tmp / "scorer"))]))
    stage.setup()
    batches = [pa.table({"text": pa.array(texts[i: i + 500], pa.large_string())}) for i in range(0, n, 500)]
    staged = best(lambda: [stage.process(b) for b in batches])
    folder = tmp / "in"
    folder.mkdir()
    with gzip.open(folder / "docs.jsonl.gz", "wt", encoding="utf-8", compresslevel=1) as fh:
        for i, t in enumerate(texts):
            fh.write(json.dumps({"id": f"d{i}", "text": t}) + "\n")

    def runner() -> None:
        cfg = PipelineConfig.from_mapping({
            "name": "bench", "input": {"paths": [str(folder / "*.jsonl.gz")], "batch_size": 500},
            "stages": [{"stage": "fasttext_score_v1", "models": [{"name": "q", "path": str(tmp / "scorer")}]}],
            "output": {"dir": str(tmp / "run"), "token_counter": "whitespace"}, "executor": {"kind": "local"}})
        ex = make_executor(cfg, overwrite=True)
        ex.run()

    whole = best(runner)
    print(f"{'method':16s} {'seconds':>8s} {'docs/s/core':>12s} {'MB/s/core':>10s}")
    for name, secs in (("raw fastText", raw), ("stage.process", staged), ("runner", whole)):
        print(f"{name:16s} {secs:8.3f} {n / secs:12.0f} {mb / secs:10.2f}")
    print(f"ratio stage / raw fastText: {raw / staged:.3f} (1.0 = same speed); runner / raw: {raw / whole:.3f}")


if __name__ == "__main__":
    main()
