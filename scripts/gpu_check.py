"""One prepared check of the GPU paths (CUDA scoring, GPU rephrasing, NCCL training, GPU benchmarks) on one GPU.

    bash scripts/gpu_check.sh --dry-run                      # any machine: every step up to its first CUDA call
    bash scripts/gpu_check.sh --prepare .gpucheck            # CPU machine: build models + a tiny run to carry
    bash scripts/gpu_check.sh --workdir .gpucheck --out summary.json   # the GPU machine (offline, < 8 minutes)

Nothing is downloaded. A tiny byte-level BPE tokenizer and a GPT-2-style model are built from the bundled
sample (random init, trained a few steps on CPU so that its predictions are not uniform), then loaded
through the product's real loading paths (``from_pretrained`` on a local directory). Each step records
pass / fail / skipped with its figures in a JSON summary; the exit code is 1 when any step failed.

Steps (docs/gpu.md says what each proves):
  env            torch, CUDA and GPU name
  lm_loss        lm_loss_v1 on CUDA in bf16 vs CPU fp32 on the same model and 64 documents (mean bpc within 2%)
  rephrase_hf    rephrase_v1 with the transformers backend on CUDA over 200 documents, checks applied
  rephrase_vllm  rephrase_v1 with the vLLM backend over the same documents (skipped when vllm is absent)
  train_nccl     the training loop under torchrun with NCCL (2 ranks on one GPU if NCCL allows, else 1),
                 checkpoint, then resume: a 6+6-step run must equal a 12-step run
  bench          benchmarks/lm_loss_speed.py and benchmarks/rephrase.py on the GPU (tokens/s)
  semdedup_embed semantic_dedup_v1's embedding (bundled MiniLM) of N_EMBED sample documents on CUDA in fp16 vs
                 CPU fp32 on the first 64 (cosine of each pair >= 0.999), and docs/s per GPU
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SAMPLE = REPO / "curation" / "data" / "sample"
N_DOCS = 200


class DryRunStop(Exception):
    """Raised at the first point where a step would touch CUDA, in --dry-run mode."""


def sample_texts(limit: int | None = None) -> list[str]:
    texts: list[str] = []
    for f in sorted(SAMPLE.glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            texts += [json.loads(line)["text"] for line in fh]
    return texts[:limit] if limit else texts


def build_model(out: Path, texts: list[str]) -> Path:
    """A 2-layer GPT-2 with a BPE tokenizer trained on ``texts``, trained 60 steps on CPU, saved to ``out``."""
    if (out / "config.json").exists():
        return out
    from curation.testing.tiny import make_lm, train_tokenizer

    tok = train_tokenizer(texts, vocab_size=2000)
    tok.eos_token = "<bos>"
    # A plain chat template so the rephrase backends can render conversations.
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    return make_lm(out, tok, n_layer=2, n_embd=128, train_steps=60, seed=0, texts=texts[:300], n_positions=2048)


def build_run(out: Path) -> Path:
    """A small curation run (in-process executor) over the bundled sample, for the training step."""
    if (out / "manifest.json").exists():
        return out
    cmd = [sys.executable, "-m", "curation.cli", "run", "pipelines/quickstart.yaml", "-o", "executor.kind=local",
           "-o", f"output.dir={out}"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"building the run failed: {' '.join(cmd)}\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return out


def cuda_or_stop(dry: bool) -> Any:
    import torch

    if dry:
        raise DryRunStop("next: first CUDA call")
    if not torch.cuda.is_available():
        raise RuntimeError("CUDA is not available (torch.cuda.is_available() is False)")
    return torch


# ---------------------------------------------------------------------------------------------------- steps
def step_env(work: Path, dry: bool) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "python": sys.version.split()[0],
                            "cuda_build": torch.version.cuda}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    cuda_or_stop(dry)
    info.update(gpu=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count(),
                bf16=torch.cuda.is_bf16_supported(), nccl=torch.distributed.is_nccl_available())
    return info


def step_lm_loss(work: Path, dry: bool) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa

    from curation.stages.scoring.lm_loss import LMLoss, LMLossConfig, LMSpec

    model = build_model(work / "lm", sample_texts())
    table = pa.table({"text": pa.array(sample_texts(64), pa.large_string())})

    def score(device: str, dtype: str) -> np.ndarray:
        stage = LMLoss(LMLossConfig(models=[LMSpec(name="m", path=str(model))], block_size=512, stride=128,
                                    device=device, dtype=dtype))
        stage.setup()
        return stage.process(table).kept.column("bpc_m").to_numpy()

    cpu = score("cpu", "float32")
    cuda_or_stop(dry)
    gpu = score("cuda", "bfloat16")
    rel = np.abs(gpu - cpu) / cpu
    figures = {"docs": len(cpu), "mean_bpc_cpu_fp32": float(cpu.mean()), "mean_bpc_cuda_bf16": float(gpu.mean()),
               "max_rel_diff": float(rel.max()), "mean_rel_diff": float(rel.mean())}
    if not rel.mean() < 0.02:
        raise AssertionError(f"bf16 on CUDA differs from fp32 on CPU by {rel.mean():.4f} on average (> 0.02): {figures}")
    return figures


def _rephrase(work: Path, dry: bool, kind: str) -> dict[str, Any]:
    import pyarrow as pa

    from curation.rephrase.backends import BackendConfig, SamplingParams
    from curation.rephrase.checks import OutputChecks
    from curation.stages.rephrase.stage import Rephrase, RephraseConfig

    model = build_model(work / "lm", sample_texts())
    texts = sample_texts(N_DOCS)
    table = pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": pa.array(texts, pa.large_string()),
                      "_task": pa.array([0] * len(texts), pa.int32()), "_row": pa.array(range(len(texts)), pa.int64()),
                      "n_chars": [len(t) for t in texts]})
    cfg = RephraseConfig(templates=["wrap_medium"], tokenizer=str(model),
                         backend=BackendConfig(kind=kind, model=str(model), device="cuda", batch_size=32),
                         sampling=SamplingParams(temperature=0.0, max_tokens=48), checks=OutputChecks())
    cuda_or_stop(dry)
    stage = Rephrase(cfg)
    stage.setup()
    t0 = time.perf_counter()
    res = stage.process(table)
    secs = time.perf_counter() - t0
    kept = res.kept
    out_tokens = sum(int(x or 0) for t in (kept, res.dropped) if "rephrase_tokens_out" in t.column_names
                     for x in t.column("rephrase_tokens_out").to_pylist())
    reasons: dict[str, int] = {}
    for reason in res.reasons:
        reasons[reason] = reasons.get(reason, 0) + 1
    figures = {"docs": len(texts), "rows_out": kept.num_rows, "drops_by_reason": reasons, "seconds": round(secs, 2),
               "output_tokens": out_tokens,
               "output_tokens_per_s": round(out_tokens / secs) if out_tokens else None}
    if reasons.get("rephrase_backend_error"):
        raise AssertionError(f"backend errors on the GPU: {figures}")
    return figures


def step_rephrase_hf(work: Path, dry: bool) -> dict[str, Any]:
    return _rephrase(work, dry, "transformers")


def step_rephrase_vllm(work: Path, dry: bool) -> dict[str, Any]:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return {"skipped": "vllm is not installed in this environment (carry its wheels to run this step)"}
    return _rephrase(work, dry, "vllm")


def _train(work: Path, nproc: int, out: str, steps: int, port: int) -> subprocess.CompletedProcess:
    import yaml

    cfg = yaml.safe_load((REPO / "training" / "configs" / "tiny.yaml").read_text())
    cfg["data"].update(runs=[str(work / "run")], seq_len=128, batch_size=8)
    cfg.update(out_dir=str(work / out), steps=steps, eval_every=6, checkpoint_every=6)
    path = work / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                           "--master_port", str(port), "-m", "training.cli", "run", str(path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def step_train_nccl(work: Path, dry: bool) -> dict[str, Any]:
    import shutil

    if not (work / "run" / "manifest.json").exists():
        build_run(work / "run")
    from training.train import load_config  # the config must load before any GPU time is spent

    cuda_or_stop(dry)
    figures: dict[str, Any] = {}
    two = _train(work, 2, "ddp2", 6, 29631)
    figures["two_ranks_one_gpu"] = "ok" if two.returncode == 0 else f"refused: {two.stderr.strip()[-300:]}"
    nproc = 2 if two.returncode == 0 else 1
    for d in ("straight", "resumed"):
        shutil.rmtree(work / d, ignore_errors=True)
    straight = _train(work, nproc, "straight", 12, 29632)
    part = _train(work, nproc, "resumed", 6, 29633)
    resumed = _train(work, nproc, "resumed", 12, 29634)
    for name, r in (("straight", straight), ("part", part), ("resumed", resumed)):
        if r.returncode != 0:
            raise RuntimeError(f"{name} run failed:\n{r.stdout[-1500:]}\n{r.stderr[-3000:]}")
    a, b = (json.loads(r.stdout.strip().splitlines()[-1]) for r in (straight, resumed))
    load_config(str(work / "straight.yaml"), [])
    figures.update(nproc=nproc, backend=a["backend"], device=a["device"], loss_straight=a["train_loss"],
                   loss_resumed=b["train_loss"], abs_diff=abs(a["train_loss"] - b["train_loss"]))
    if a["backend"] != "nccl":
        raise AssertionError(f"expected the NCCL backend, got {a['backend']}")
    if not figures["abs_diff"] <= 1e-4:
        raise AssertionError(f"resume differs from an uninterrupted run: {figures}")
    return figures


def step_bench(work: Path, dry: bool) -> dict[str, Any]:
    cuda_or_stop(dry)
    out: dict[str, Any] = {}
    for name, cmd in (("lm_loss_speed", ["benchmarks/lm_loss_speed.py", "--layers", "12", "--dim", "768",
                                          "--docs", "400"]),
                      ("rephrase", ["benchmarks/rephrase.py", "--device", "cuda", "--max-tokens", "128"])):
        r = subprocess.run([sys.executable, *cmd], cwd=REPO, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
        if r.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{r.stderr[-2000:]}")
        out[name] = r.stdout.strip().splitlines()[-6:]
    return out


#: Documents the semdedup_embed step embeds on the GPU (the bundled sample repeated to this many): the
#: scale where a per-GPU throughput means something, a few seconds to a minute on one datacenter GPU in fp16.
N_EMBED = 100_000


def step_semdedup_embed(work: Path, dry: bool) -> dict[str, Any]:
    """semantic_dedup_v1's embedding path on CUDA: the stage's own ``embed_texts`` with ``device: auto``
    (CUDA, fp16 there), checked against CPU float32, and timed over ``N_EMBED`` documents."""
    import numpy as np

    from curation.stages.dedup.semantic import SemanticDedup, SemanticDedupConfig, embed_texts

    texts = sample_texts()
    texts = (texts * (N_EMBED // len(texts) + 1))[:N_EMBED]
    cpu_stage = SemanticDedup(SemanticDedupConfig(device="cpu"))
    cpu = embed_texts(cpu_stage.embedder, texts[:64])
    torch = cuda_or_stop(dry)
    stage = SemanticDedup(SemanticDedupConfig(device="auto", batch_size=256))
    _, model, device = stage.embedder.load()
    if device != "cuda" or next(model.parameters()).dtype != torch.float16:
        raise AssertionError(f"device auto chose {device} / {next(model.parameters()).dtype}, expected cuda / float16")
    embed_texts(stage.embedder, texts[:256])  # warm-up: kernels, allocator
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    gpu = embed_texts(stage.embedder, texts)
    torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    agree = (cpu * gpu[:64]).sum(1)
    figures = {"docs": len(texts), "embed_seconds": round(secs, 2), "docs_per_s_per_gpu": round(len(texts) / secs, 1),
               "min_cosine_fp16_vs_fp32": round(float(agree.min()), 5), "gpu": torch.cuda.get_device_name(0)}
    if not np.all(agree >= 0.999):
        raise AssertionError(f"fp16 CUDA embeddings differ from CPU fp32: {figures}")
    return figures


STEPS: dict[str, Callable[[Path, bool], dict[str, Any]]] = {
    "env": step_env, "lm_loss": step_lm_loss, "rephrase_hf": step_rephrase_hf, "rephrase_vllm": step_rephrase_vllm,
    "train_nccl": step_train_nccl, "bench": step_bench, "semdedup_embed": step_semdedup_embed}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="run every step up to its first CUDA call")
    ap.add_argument("--prepare", metavar="DIR", help="only build the model and the run into DIR (CPU), then stop")
    ap.add_argument("--workdir", default=".gpucheck", help="where models, runs and checkpoints go")
    ap.add_argument("--out", default=None, help="JSON summary path (default: WORKDIR/summary.json)")
    ap.add_argument("--steps", default=",".join(STEPS), help="comma-separated subset of " + ",".join(STEPS))
    args = ap.parse_args(argv)
    if args.prepare:
        work = Path(args.prepare).resolve()
        build_model(work / "lm", sample_texts())
        build_run(work / "run")
        print(f"prepared {work} (model + run); carry it to the GPU machine")
        return 0
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"dry_run": args.dry_run, "started_unix": int(time.time()), "steps": {}}
    failed = False
    for name in args.steps.split(","):
        t0 = time.perf_counter()
        try:
            figures = STEPS[name](work, args.dry_run)
            status = "skipped" if "skipped" in figures else "pass"
        except DryRunStop as stop:
            figures, status = {"stopped_before": str(stop)}, "dry-run-ok"
        except Exception as exc:  # noqa: BLE001 - every step reports, the summary decides
            figures, status = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-3000:]}, "fail"
            failed = True
        figures["seconds"] = round(time.perf_counter() - t0, 1)
        summary["steps"][name] = {"status": status, **figures}
        print(f"{name:14s} {status:11s} {json.dumps({k: v for k, v in figures.items() if k != 'trace'})[:400]}",
              flush=True)
    out = Path(args.out) if args.out else work / "summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"summary: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
