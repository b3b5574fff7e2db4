"""MixtureLoader throughput, startup and resume, against the tiny model's consumption and a plain pyarrow read.

    .venv/bin/python benchmarks/loader.py                 # 1,000 small shards made from the bundled sample

Builds a curation-style run of 1,000 shards (the sample corpus's documents spread over them, domains
kept), then measures on one core:
  startup     MixtureLoader(...) construction: reading every manifest entry and each shard's domain column
  loader      tokens/s of next_batch() (byte tokenizer, seq_len 256, batch 16, 3 domains by ratio)
  pyarrow     tokens/s of reading the same shards' text with pyarrow and encoding to bytes (no packing/mixing)
  model       tokens/s the tiny GPT of training/configs/tiny.yaml consumes (forward + backward + step)
  resume      load_state_dict() after 200 batches plus the first batch after it
  meco        tokens/s of next_batch() with metadata conditioning on (prefix "{domain}\n\n", masked targets)
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_run(root: Path, n_shards: int = 1000) -> Path:
    import gzip
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = []
    for f in sorted((REPO / "curation" / "data" / "sample").glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            docs += [json.loads(line) for line in fh]
    (root / "shards").mkdir(parents=True)
    shards = []
    for k in range(n_shards):
        part = docs[k::n_shards] or docs[:1]
        path = f"shards/{k:05d}-000.parquet"
        pq.write_table(pa.table({"id": [d["id"] for d in part], "text": [d["text"] for d in part],
                                 "domain": [d["domain"] for d in part]}), root / path)
        data = (root / path).read_bytes()
        shards.append({"path": path, "rows": len(part), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    (root / "manifest.json").write_text(json.dumps({"shards": shards}))
    return root


def main() -> None:
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    from training.data.loader import LoaderConfig, MixtureLoader
    from training.model import GPT, GPTConfig

    torch.set_num_threads(1)
    run = make_run(Path(tempfile.mkdtemp(prefix="bench-loader-")) / "run")
    cfg = LoaderConfig(runs=[str(run)], ratios={"python_docs": 0.5, "code": 0.3, "license": 0.2}, seq_len=256, batch_size=16)
    t0 = time.perf_counter()
    loader = MixtureLoader(cfg)
    startup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(200):
        loader.next_batch()
    loader_tps = 200 * 16 * 256 / (time.perf_counter() - t0)
    state = loader.state_dict()
    from training.data.meco import MecoConfig

    meco = MixtureLoader(LoaderConfig(**{**cfg.__dict__, "meco": MecoConfig(field="domain")}))
    meco.set_conditioning(True)
    t0 = time.perf_counter()
    for _ in range(200):
        meco.next_batch()
    meco_tps = 200 * 16 * 256 / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    resumed = MixtureLoader(cfg)
    resumed.load_state_dict(state)
    resumed.next_batch()
    resume = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = 0
    for shard in sorted((run / "shards").glob("*.parquet")):
        for t in pq.read_table(shard, columns=["text"]).column(0).to_pylist():
            n += len(t.encode())
    pyarrow_tps = n / (time.perf_counter() - t0)
    model = GPT(GPTConfig(vocab_size=257, seq_len=256, n_layer=2, n_head=2, d_model=64))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y, _ = loader.next_batch()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    t0 = time.perf_counter()
    for _ in range(10):
        _, loss = model(xt, yt)
        loss.backward()
        opt.step()
        opt.zero_grad()
    model_tps = 10 * 16 * 256 / (time.perf_counter() - t0)
    size = sum(f.stat().st_size for f in (run / "shards").glob("*.parquet"))
    print(f"1000 shards, {size / 1e6:.1f} MB; verify_hashes {cfg.verify_hashes}; startup {startup:.2f} s; resume {resume:.2f} s")
    print(f"loader {loader_tps:,.0f} tokens/s; plain pyarrow read+encode {pyarrow_tps:,.0f} tokens/s; "
          f"tiny model consumes {model_tps:,.0f} tokens/s")
    print(f"loader with MeCo prefixes {meco_tps:,.0f} tokens/s ({meco_tps / loader_tps:.2f}x of plain)")
    print(f"loader / model = {loader_tps / model_tps:.1f}x (target >= 10x); loader / pyarrow = {loader_tps / pyarrow_tps:.2f}x")
    assert np.isfinite(loader_tps)


if __name__ == "__main__":
    main()
