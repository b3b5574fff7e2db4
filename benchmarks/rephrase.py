"""Per-document overhead of rephrase_v1 vs calling the backend directly with the same conversations.

    .venv/bin/python benchmarks/rephrase.py            # 200 sample docs, WRAP medium, 300-token chunks
    python3 benchmarks/rephrase.py --device cuda --max-tokens 128     # on a GPU machine (scripts/gpu_check.sh)

Two backends, each measured both ways on identical chunked conversations (no cache):
  transformers   a randomly initialised 2-layer model built locally, greedy, 16 new tokens
  openai-http    the OpenAI-compatible test server (curation/testing/openai_server.py) in
                 'echo' mode on 127.0.0.1, so the server costs ~nothing and the difference is ours
  vllm           the vLLM engine on the same model, when vllm is importable (CPU figures on a CPU machine)
Overhead = (stage seconds - direct seconds) / documents; tokens/s = generated tokens / stage seconds.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", help="cpu|cuda for the transformers and vllm backends")
    ap.add_argument("--max-tokens", type=int, default=16, help="new tokens per chunk (greedy)")
    args = ap.parse_args()
    import httpx
    import pyarrow as pa

    from curation.rephrase.backends import BackendConfig, SamplingParams
    from curation.rephrase.checks import OutputChecks
    from curation.stages.rephrase.stage import Rephrase, RephraseConfig
    from curation.testing.tiny import PROSE, make_lm, train_tokenizer

    texts = []
    with gzip.open(REPO / "curation" / "data" / "sample" / "python_docs-000.jsonl.gz", "rt", encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for _, line in zip(range(200), fh)]
    batch = pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": pa.array(texts, pa.large_string()),
                      "_task": pa.array([0] * len(texts), pa.int32()), "_row": pa.array(range(len(texts)), pa.int64()),
                      "n_chars": [len(t) for t in texts]})
    tok = train_tokenizer(PROSE * 3)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    model_dir = make_lm(Path(tempfile.mkdtemp()) / "m", tok, n_layer=2, n_embd=64, train_steps=0, seed=0)
    sampling = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    lenient = OutputChecks(min_ratio=0, max_ratio=1e9, leak_ngram=10**6, reject_truncated=False)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "curation.testing.openai_server", "--model", str(model_dir),
                               "--port", str(port)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        for _ in range(300):
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        backends = {
            "transformers": BackendConfig(kind="transformers", model=str(model_dir), device=args.device, batch_size=16),
            "openai-http": BackendConfig(kind="openai", model="echo", base_url=f"http://127.0.0.1:{port}/v1",
                                         api_key_env=None, concurrency=8),
        }
        try:
            import vllm  # noqa: F401

            backends["vllm"] = BackendConfig(kind="vllm", model=str(model_dir), device=args.device)
        except ImportError:
            pass
        print(f"{len(texts)} documents, template wrap_medium, chunks of 300 tokens, {args.max_tokens} new tokens, "
              f"device {args.device}")
        print(f"{'backend':14s} {'chunks':>6s} {'direct s':>9s} {'stage s':>8s} {'overhead ms/doc':>16s} {'tokens/s':>9s}")
        for name, cfg in backends.items():
            stage = Rephrase(RephraseConfig(templates=["wrap_medium"], backend=cfg, sampling=sampling,
                                            tokenizer=str(model_dir), checks=lenient))
            stage.setup()
            stage.process(batch.slice(0, 4))  # warm-up: model load, connection pool
            t0 = time.perf_counter()
            res = stage.process(batch)
            staged = time.perf_counter() - t0
            generated = sum(int(x or 0) for t in (res.kept, res.dropped) if "rephrase_tokens_out" in t.column_names
                            for x in t.column("rephrase_tokens_out").to_pylist())
            # The same conversations, straight to the backend.
            convs = []
            from curation.rephrase.chunking import chunk_text

            for t in texts:
                convs += [stage.templates[0].messages(c.text) for c in chunk_text(t, 300, stage._count)]
            t0 = time.perf_counter()
            stage._backend.generate(convs, sampling)
            direct = time.perf_counter() - t0
            print(f"{name:14s} {len(convs):6d} {direct:9.3f} {staged:8.3f} {1000 * (staged - direct) / len(texts):16.2f} "
                  f"{generated / staged:9.0f}")
    finally:
        server.kill()


if __name__ == "__main__":
    main()
