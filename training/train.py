"""The training loop: DDP (gloo on CPU, NCCL on GPU), bf16 autocast on CUDA, gradient accumulation,
cosine or warmup-stable-decay schedule, exact checkpoint/resume, per-domain eval loss to JSONL.

    train run training/configs/tiny.yaml                                          # one process
    torchrun --nproc_per_node 2 -m training.cli run training/configs/tiny.yaml   # DDP
    train run CONFIG -o steps=200 -o out_dir=runs/train2                          # overrides

Resume: rerunning with the same ``out_dir`` continues from ``checkpoint.pt`` (model, optimiser,
step, every rank's loader state and RNG state), producing the batches an uninterrupted run would
have. Checkpoints (``checkpoint.pt`` and ``init_from``) are read with ``weights_only=True``: see
``training/checkpoint.py``. Under torchrun each process uses ``cuda:LOCAL_RANK`` (``training/devices.py``).
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist

from curation.config import apply_overrides, check_choices, from_dict, load_yaml
from curation.errors import ConfigError
from training.checkpoint import read_checkpoint, rng_state, set_rng_state, write_checkpoint
from training.data.loader import LoaderConfig, MixtureLoader
from training.data.meco import conditioning_at
from training.devices import setup_distributed
from training.model import GPT, GPTConfig
from training.skillit import SkillGraph, SkillItConfig, SkillItSampler


@dataclass(kw_only=True)
class ScheduleConfig:
    """``cosine``: warmup then cosine to ``min_lr_ratio``; ``wsd``: warmup, stable, then linear decay
    over the last ``decay_fraction`` of steps. ``rewarm``: warm up again from step 0 of this run
    (continual pre-training from a loaded checkpoint)."""

    kind: Literal["cosine", "wsd"] = "cosine"
    lr: float = 3e-3
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    decay_fraction: float = 0.2

    def __post_init__(self) -> None:
        check_choices(self)


def lr_at(step: int, total: int, s: ScheduleConfig) -> float:
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    if s.kind == "cosine":
        p = (step - s.warmup_steps) / max(1, total - s.warmup_steps)
        return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))
    decay_start = int(total * (1 - s.decay_fraction))
    if step < decay_start:
        return s.lr
    p = (step - decay_start) / max(1, total - decay_start)
    return s.lr * (1 - (1 - s.min_lr_ratio) * min(1.0, p))


@dataclass(kw_only=True)
class TrainConfig:
    data: LoaderConfig
    model: GPTConfig = field(default_factory=GPTConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    out_dir: str = "runs/train"
    steps: int = 100
    # A token budget: when set, the run takes ceil(tokens / tokens per step) steps (tokens per step =
    # batch_size x seq_len x grad_accum x ranks) instead of ``steps``, and the schedule spans those.
    tokens: int | None = None
    grad_accum: int = 1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 25
    eval_batches: int = 2
    checkpoint_every: int = 50
    init_from: str | None = None  # a checkpoint.pt to continue pre-training from (weights only)
    skillit: SkillItConfig | None = None  # online mixture updates from per-domain eval losses
    eval_runs: list[str] | None = None  # held-out curation runs for the per-domain eval loss
    # domains to evaluate (default: those of data.ratios); with eval_runs, held-out domains the
    # model never trains on, e.g. a selection target, get a loss curve too
    eval_domains: list[str] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.tokens is not None and self.tokens <= 0:
            raise ValueError(f"tokens must be a positive token budget, got {self.tokens}")

    def total_steps(self, world: int) -> int:
        """Steps of the whole run: ``steps``, or what the ``tokens`` budget buys on ``world`` ranks."""
        if self.tokens is None:
            return self.steps
        return max(1, math.ceil(self.tokens / (self.data.batch_size * self.data.seq_len * self.grad_accum * world)))


def eval_sets(cfg: TrainConfig, rank: int, world: int) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Fixed evaluation batches per domain, built once: from ``eval_runs`` (held-out curation runs)
    when given, else from the training runs with another seed (then not held out). Every listed
    domain gets a set, also those weighted 0 (a skills-graph estimate needs them). They are never
    metadata-conditioned (``meco`` off): the loss is that of plain text, comparable across steps,
    across the MeCo switch and with runs trained without MeCo. A skill-ordered training run (no ratios: a
    curriculum) is not read by domain: it is evaluated on the ``eval_domains`` of ``eval_runs``, or not at all."""
    if cfg.eval_domains and not cfg.eval_runs and not cfg.data.ratios:
        # Only a curriculum trains without ratios (the loader refuses a mixture without them).
        raise ConfigError("eval_domains: the training run is skill-ordered output, read as a curriculum, not by "
                          "domain: name held-out runs to evaluate per domain in eval_runs")
    out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for dom in sorted(cfg.eval_domains or cfg.data.ratios):
        dcfg = LoaderConfig(**{**asdict(cfg.data), "ratios": {dom: 1.0}, "ratios_file": None,
                               "runs": cfg.eval_runs or cfg.data.runs, "seed": cfg.data.seed + 10_007, "meco": None})
        loader = MixtureLoader(dcfg, rank=rank, world_size=world)
        out[dom] = [loader.next_batch()[:2] for _ in range(cfg.eval_batches)]
    return out


def evaluate(model: torch.nn.Module, sets: dict[str, list[tuple[np.ndarray, np.ndarray]]], device: str,
             world: int) -> dict[str, float]:
    """Mean next-token loss per domain on its fixed batches, averaged over ranks."""
    out: dict[str, float] = {}
    model.eval()
    for dom, batches in sets.items():
        with torch.no_grad():
            losses = [float(model(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))[1]) for x, y in batches]
        value = torch.tensor(float(np.mean(losses)), device=device)
        if world > 1:
            dist.all_reduce(value)
            value /= world
        out[dom] = float(value)
    model.train()
    return out


def train(cfg: TrainConfig) -> dict[str, Any]:
    rank, world, backend, device = setup_distributed()
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    # Read (and so vet) a checkpoint before any expensive setup: a refused file fails fast.
    ckpt = read_checkpoint(ckpt_path, map_location=device) if ckpt_path.exists() else None
    init = read_checkpoint(cfg.init_from, map_location=device) if ckpt is None and cfg.init_from else None
    loader = MixtureLoader(cfg.data, rank=rank, world_size=world)
    evals = eval_sets(cfg, rank, world)
    # The model as built (vocabulary from the tokenizer, context from the loader); the config itself stays as given,
    # and what is logged and checkpointed is the config with this model section, so a checkpoint rebuilds it.
    model_cfg = replace(cfg.model, vocab_size=loader.tokenizer.vocab_size, seq_len=cfg.data.seq_len)
    effective = {**asdict(cfg), "model": asdict(model_cfg)}
    model = GPT(model_cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.schedule.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    step = 0
    sampler = None
    if cfg.skillit:
        s = cfg.skillit
        sampler = SkillItSampler(SkillGraph.load(s.graph), eta=s.eta, window=s.window, normalize_loss=s.normalize_loss)
        loader.set_ratios(sampler.mixture())
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        if len(ckpt["loaders"]) != world:
            raise ValueError(f"{ckpt_path}: saved by {len(ckpt['loaders'])} ranks, now {world}")
        loader.load_state_dict(ckpt["loaders"][rank], where=f"{ckpt_path}: loaders[{rank}]")
        if sampler is not None:
            sampler.load_state_dict(ckpt["skillit"])
        set_rng_state(ckpt["rng"][rank])  # dropout draws continue where they stopped
        step = int(ckpt["step"])
    elif init is not None:
        model.load_state_dict(init["model"])
    del ckpt, init  # the model and optimiser hold their own copies now
    if world > 1:
        # DDP on one device: name it, so gradients are bucketed on this rank's GPU (or the CPU).
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[torch.device(device).index] if device.startswith("cuda") else None)
    else:
        ddp = model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else nullcontext()
    log = open(out / "log.jsonl", "a", encoding="utf-8") if rank == 0 else None
    t0, tokens_per_step = time.time(), cfg.data.batch_size * cfg.data.seq_len * cfg.grad_accum * world
    steps = cfg.total_steps(world)
    last_loss = float("nan")
    if step == 0:  # the reference point of loss changes (the CMR fit measures from here)
        base = evaluate(model, evals, device, world)
        if sampler is not None:
            sampler.observe(base)
        if log:
            log.write(json.dumps({"config": effective}) + "\n")
            log.write(json.dumps({"step": 0, "tokens": 0, "eval": base}) + "\n")
    while step < steps:
        lr = lr_at(step, steps, cfg.schedule)
        for g in opt.param_groups:
            g["lr"] = lr
        total = 0.0
        meco_on = cfg.data.meco is not None and conditioning_at(step, steps, cfg.data.meco)
        loader.set_conditioning(meco_on)  # a function of the step: a resumed run switches where this one does
        for micro in range(cfg.grad_accum):
            x, y, _ = loader.next_batch()  # y is IGNORE_INDEX at metadata-prefix targets: the loss skips them
            sync = micro == cfg.grad_accum - 1 or world == 1
            ctx = nullcontext() if sync else ddp.no_sync()  # type: ignore[union-attr]
            with ctx, autocast:
                _, loss = ddp(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))
                (loss / cfg.grad_accum).backward()
            total += loss.item() / cfg.grad_accum
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        last_loss = total
        record: dict[str, Any] = {"step": step, "tokens": step * tokens_per_step, "lr": lr, "train_loss": total,
                                  "tokens_per_s": round(step * tokens_per_step / max(1e-9, time.time() - t0))}
        if cfg.data.meco is not None:
            record["meco_prefix"] = meco_on
        if step % cfg.eval_every == 0 or step == steps:
            record["eval"] = evaluate(model, evals, device, world)
            record["shares"] = loader.realised_shares()
            if sampler is not None:
                sampler.observe(record["eval"])
        if sampler is not None and cfg.skillit and step % cfg.skillit.update_every == 0:
            loader.set_ratios(sampler.update(step))  # every rank computes the same (all-reduced) update
            record["skillit"] = sampler.updates[-1]
        if step % cfg.checkpoint_every == 0 or step == steps:
            mine = {"loader": loader.state_dict(), "rng": rng_state()}
            states: list[Any] = [None] * world
            if world > 1:  # in-process exchange between ranks; what goes to disk is tensors and JSON only
                dist.all_gather_object(states, mine)
            else:
                states = [mine]
            if rank == 0:
                write_checkpoint(ckpt_path, model.state_dict(), opt.state_dict(), rng=[s["rng"] for s in states],
                                 meta={"step": step, "loaders": [s["loader"] for s in states], "config": effective,
                                       "skillit": sampler.state_dict() if sampler else None})
        if log:
            log.write(json.dumps(record) + "\n")
            log.flush()
    if log:
        log.close()
    result = {"step": step, "tokens": step * tokens_per_step, "train_loss": last_loss, "rank": rank, "world_size": world, "backend": backend,
              "device": device, "shares": loader.realised_shares()}
    if world > 1:
        dist.barrier()
    return result


def load_config(path: str, overrides: list[str]) -> TrainConfig:
    """Read, override and validate a training YAML; ``data.ratios_file`` is read here, once."""
    cfg = from_dict(TrainConfig, apply_overrides(load_yaml(path), overrides), where=path)
    try:
        cfg.data = cfg.data.resolved()
    except ValueError as exc:
        raise ConfigError(f"{path}: data.{exc}") from exc
    return cfg
