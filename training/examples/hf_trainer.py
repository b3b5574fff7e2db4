"""Train a Hugging Face causal LM with transformers' Trainer on a curated run's mixture.

    python -m training.examples.hf_trainer runs/quickstart --ratios python_docs=0.5,code=0.3,license=0.2 \
        --out runs/hf-example --steps 20

Without ``--model`` it builds a tiny random GPT-2 (byte tokenizer, nothing downloaded), so the example runs on a
laptop CPU in seconds; with ``--model DIR --tokenizer hf:DIR`` it fine-tunes a local model instead. Every rank
reads its own documents (``torchrun --nproc_per_node N -m training.examples.hf_trainer ...``); ``--resume``
continues from the last checkpoint in ``--out`` with the same batches as an uninterrupted run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from training.data import LoaderConfig, MixtureDataset


def parse_ratios(text: str) -> dict[str, float]:
    """``a=0.5,b=0.5`` -> {"a": 0.5, "b": 0.5}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if not name or not value:
            raise SystemExit(f"--ratios: {part!r} is not DOMAIN=WEIGHT")
        out[name] = float(value)
    return out


def build(args: argparse.Namespace) -> Any:
    """The Trainer the example runs (returned so tests can look at its state)."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    ds = MixtureDataset(LoaderConfig(runs=args.runs, ratios=parse_ratios(args.ratios), seq_len=args.seq_len,
                                     tokenizer=args.tokenizer, seed=args.seed), with_domain=False)
    if args.model:
        model = AutoModelForCausalLM.from_pretrained(args.model)
    else:
        torch.manual_seed(args.seed)
        eos = ds.loader.tokenizer.eos_id
        model = GPT2LMHeadModel(GPT2Config(vocab_size=ds.vocab_size, n_positions=args.seq_len, n_embd=64,
                                           n_layer=2, n_head=2, bos_token_id=eos, eos_token_id=eos))
    targs = TrainingArguments(
        output_dir=args.out, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, save_strategy="steps", save_steps=args.save_steps, logging_steps=1, report_to=[],
        seed=args.seed, dataloader_num_workers=0, disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
        # Each rank reads its own stream (MixtureDataset splits by rank); Accelerate must not dispatch rank 0's.
        accelerator_config={"dispatch_batches": False})
    return Trainer(model=model, args=targs, train_dataset=ds)


def main(argv: list[str] | None = None) -> Any:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="curation run directories")
    p.add_argument("--ratios", required=True, help="DOMAIN=WEIGHT,... (token shares)")
    p.add_argument("--out", required=True, help="checkpoints and logs")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--save-steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", default="bytes", help="bytes | hf:PATH | tiktoken:NAME")
    p.add_argument("--model", default=None, help="a local Hugging Face causal LM directory (default: tiny GPT-2)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    args = p.parse_args(argv)
    trainer = build(args)
    last = None
    if args.resume:
        ckpts = sorted(Path(args.out).glob("checkpoint-*"), key=lambda c: int(c.name.split("-")[1]))
        last = str(ckpts[-1]) if ckpts else None
    trainer.train(resume_from_checkpoint=last)
    return trainer


if __name__ == "__main__":
    main()
