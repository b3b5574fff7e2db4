"""lm_loss_v1 throughput (tokens/s) and its agreement across devices, with a randomly initialised model.

    .venv/bin/python benchmarks/lm_loss_speed.py                        # CPU, tiny model
    python3 benchmarks/lm_loss_speed.py --layers 12 --dim 768 --docs 400   # on a GPU machine: GPT-2-small size, bf16

No download: a byte-level BPE tokenizer is trained on the bundled sample and a GPT-2 model of the
given size is built with random weights and saved to a temp dir, then loaded through the stage's
real path (AutoModelForCausalLM.from_pretrained). The stage scores the sample's documents with
the paper's windows (block 1900, stride 512 by default). On CUDA it also scores a subset in fp32
and reports the relative difference of bf16 vs fp32 bits-per-character.
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
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=4000)
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--block", type=int, default=1900)
    ap.add_argument("--stride", type=int, default=512)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    import numpy as np
    import pyarrow as pa
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from curation.stages.scoring.lm_loss import LMLoss, LMLossConfig, LMSpec

    texts = []
    for f in sorted((REPO / "curation" / "data" / "sample").glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            texts += [json.loads(line)["text"] for line in fh]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=args.vocab, special_tokens=["<bos>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>")
    out = Path(tempfile.mkdtemp(prefix="lmloss-"))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(hf_tok), n_positions=max(2048, args.block), n_embd=args.dim,
                                       n_layer=args.layers, n_head=max(2, args.dim // 64)))
    model.save_pretrained(out)
    hf_tok.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    docs = texts[: args.docs]
    batch = pa.table({"text": pa.array(docs, pa.large_string())})
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    n_tokens = sum(len(hf_tok(t, add_special_tokens=False)["input_ids"]) + 1 for t in docs)

    def run(dtype: str, table: pa.Table) -> tuple[float, np.ndarray]:
        stage = LMLoss(LMLossConfig(models=[LMSpec(name="m", path=str(out))], block_size=args.block,
                                    stride=args.stride, batch_size=args.batch, device=device, dtype=dtype))
        stage.setup()
        stage.process(table.slice(0, 4))  # warm-up (CUDA context, kernels)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        res = stage.process(table).kept
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, res.column("bpc_m").to_numpy()

    dtype = "bfloat16" if device == "cuda" else "float32"
    secs, bpc = run(dtype, batch)
    print(f"device {name}; model {params:.1f}M params ({args.layers} layers, dim {args.dim}, vocab {len(hf_tok)}), "
          f"{dtype}; {len(docs)} docs, {n_tokens} tokens, windows {args.block}/{args.stride}")
    print(f"lm_loss_v1: {secs:.2f} s, {n_tokens / secs:,.0f} tokens/s, {len(docs) / secs:,.1f} docs/s; "
          f"mean bpc {np.nanmean(bpc):.3f}")
    if device == "cuda":
        sub = batch.slice(0, min(50, len(docs)))
        _, ref = run("float32", sub)
        rel = np.abs(bpc[: len(ref)] - ref) / ref
        print(f"bf16 vs fp32 on {len(ref)} docs: max relative bpc difference {rel.max():.4f}, mean {rel.mean():.4f}")


if __name__ == "__main__":
    main()
