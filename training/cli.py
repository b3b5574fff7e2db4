"""``train``: the training package's commands, a typer app like ``curate``.

    train run training/configs/tiny.yaml [-o key=value ...]
    torchrun --nproc_per_node 2 -m training.cli run training/configs/tiny.yaml    # one process per rank
    train ray training/configs/tiny.yaml --workers 2               # Ray Train launcher
    train cmr fit RUN_LOGS... --general G --domain D --out fit.json
    train cmr predict fit.json --tokens 2e9 --mixture mix.json
    train cmr sweep CONFIG --general G --domain D --ratios 0.125,0.25,0.5 --out DIR
    train skills-graph linear CONFIG --skills a,b,c --steps 20 --out graph.json
    train eval runs/train-tiny/checkpoint.pt --runs runs/heldout --out eval.json
    train export-hf runs/train-tiny/checkpoint.pt runs/train-tiny/hf
    train natural-mixture runs/selected --out mix.json

This is the one door: the modules behind the commands have no entry points of their own (``python -m training.cli``
is ``train``, for torchrun and for installs without the console script).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from curation.errors import CurationError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train on curated runs: the training loop, Ray launcher, CMR law, skills graph.")
cmr_app = typer.Typer(no_args_is_help=True, help="Critical Mixture Ratio law for continual pre-training.")
app.add_typer(cmr_app, name="cmr")

_OVERRIDE_HELP = "Dotted override KEY=VALUE, repeatable."


@contextmanager
def _user_errors() -> Iterator[None]:
    """A config or data problem (unknown key, missing run) ends in one line and exit 2, as in ``curate``."""
    try:
        yield
    except CurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None


@app.command()
def run(
    config: str = typer.Argument(..., help="Training YAML (training/configs/*.yaml)."),
    override: list[str] = typer.Option([], "--set", "-o", help=_OVERRIDE_HELP),
) -> None:
    """Run the training loop (one process, or one rank under torchrun); rank 0 prints the result as JSON."""
    import torch.distributed as dist

    from training.train import load_config, train

    with _user_errors():
        result = train(load_config(config, list(override)))
    if result["rank"] == 0:
        print(json.dumps(result))
    if dist.is_initialized():
        dist.destroy_process_group()


@app.command()
def ray(
    config: str = typer.Argument(..., help="Training YAML."),
    workers: int = typer.Option(2, help="Ranks (Ray Train workers)."),
    gpu: bool = typer.Option(False, "--gpu", help="One GPU per worker, NCCL (default: CPU, gloo)."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address (default: start a local one)."),
    override: list[str] = typer.Option([], "--set", "-o", help=_OVERRIDE_HELP),
) -> None:
    """Run the training loop with Ray Train's TorchTrainer instead of torchrun."""
    import ray as ray_mod

    from training.ray_launch import launch
    from training.train import load_config

    with _user_errors():
        cfg = load_config(config, list(override))
    ray_mod.init(address=address, include_dashboard=False)
    launch(cfg, workers, gpu)


@cmr_app.command("sweep")
def cmr_sweep(
    config: Path = typer.Argument(..., help="Continual pre-training YAML."),
    general: str = typer.Option(..., help="General-domain name in data.ratios."),
    domain: str = typer.Option(..., help="Target-domain name in data.ratios."),
    ratios: str = typer.Option("0.125,0.25,0.5,0.75", help="Domain shares R, comma-separated."),
    out: Path = typer.Option(..., help="Directory for one run per ratio (r0.125, ...)."),
    override: list[str] = typer.Option([], "--set", "-o", help="Extra overrides for every run."),
) -> None:
    """Run the continual pre-training runs the fit needs."""
    from training.cmr import sweep

    sweep(config, general, domain, [float(x) for x in ratios.split(",")], out, list(override))


@cmr_app.command("fit")
def cmr_fit(
    runs: list[Path] = typer.Argument(..., help="Run directories of the sweep (each with log.jsonl)."),
    general: str = typer.Option(...), domain: str = typer.Option(...),
    eps: float = typer.Option(0.05, help="Tolerated rise of the general-domain loss."),
    token_unit: float = typer.Option(2e8, help="Tokens per unit of T (the paper: 0.2B)."),
    out: Path = typer.Option(..., help="Fit JSON to write (and a .png plot next to it)."),
) -> None:
    """Fit the CMR law from training logs of runs at different ratios."""
    from training.cmr import fit_runs

    print(json.dumps(fit_runs(runs, general, domain, eps, token_unit, out)))


@cmr_app.command("predict")
def cmr_predict(
    fit: Path = typer.Argument(..., help="Fit JSON from `train cmr fit`."),
    tokens: float = typer.Option(..., help="Token budget of the continual pre-training run."),
    mixture: Optional[Path] = typer.Option(None, help="Write {ratios: {GENERAL: 1-R, DOMAIN: R}} here "
                                                       "(data.ratios_file)."),
    ratio: Optional[float] = typer.Option(None, help="Also predict the loss changes at this domain share."),
) -> None:
    """Critical ratio for a token budget, and the loss changes predicted there; optionally write a mixture file."""
    from training.cmr import predict

    print(json.dumps(predict(fit, tokens, mixture, ratio)))


@app.command("skills-graph")
def skills_graph(
    method: str = typer.Argument(..., help="linear (k runs) or brute (k^2 runs)."),
    config: str = typer.Argument(..., help="Training YAML the short runs start from."),
    skills: str = typer.Option(..., help="Skills (domains), comma-separated."),
    steps: int = typer.Option(20, help="Training steps of each short run."),
    out: Path = typer.Option(..., help="Graph JSON to write (and a .png heatmap next to it)."),
    override: list[str] = typer.Option([], "--set", "-o", help=_OVERRIDE_HELP),
) -> None:
    """Estimate the Skill-It skills graph A with short training runs."""
    from training.skills_graph import build_graph

    if method not in ("linear", "brute"):
        raise typer.BadParameter(f"{method!r} is not one of 'linear', 'brute'", param_hint="METHOD")
    with _user_errors():
        print(json.dumps(build_graph(method, config, skills.split(","), steps, out, list(override))))


@app.command("eval")
def eval_cmd(
    checkpoint: Path = typer.Argument(..., help="A checkpoint.pt written by `train run`."),
    runs: list[str] = typer.Option(..., "--runs", help="Curation run directories to evaluate on (repeatable)."),
    max_tokens: Optional[int] = typer.Option(None, help="Score at most this many tokens per domain."),
    out: Optional[Path] = typer.Option(None, help="Also write the result JSON here."),
) -> None:
    """Mean next-token loss per domain of the runs, every document once (held-out evaluation)."""
    from training.evaluate import evaluate_checkpoint

    with _user_errors():
        result = evaluate_checkpoint(checkpoint, list(runs), max_tokens)
    if out:
        out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


@app.command("export-hf")
def export_hf_cmd(
    checkpoint: Path = typer.Argument(..., help="A checkpoint.pt written by `train run` (byte tokenizer)."),
    out: Path = typer.Argument(..., help="Directory for the Hugging Face GPT-2 model and tokenizer."),
) -> None:
    """Export a checkpoint as a Hugging Face model, e.g. for lm_loss_v1 (PreSelect)."""
    from training.export_hf import export_hf

    with _user_errors():
        print(json.dumps(export_hf(checkpoint, out)))


@app.command("natural-mixture")
def natural_mixture_cmd(
    runs: list[str] = typer.Argument(..., help="Curation run directories."),
    out: Path = typer.Option(..., help="Ratios file to write ({ratios: {domain: token share}}, data.ratios_file)."),
    tokenizer: str = typer.Option("bytes", help="bytes, hf:PATH or tiktoken:NAME (as data.tokenizer)."),
) -> None:
    """Write the runs' own domain proportions as a mixture file: train on the data as selected."""
    from training.evaluate import natural_mixture

    with _user_errors():
        ratios = natural_mixture(list(runs), tokenizer)
    out.write_text(json.dumps({"ratios": ratios}) + "\n")
    print(json.dumps({"ratios": ratios, "out": str(out)}))


def main(argv: list[str] | None = None) -> None:
    """The ``train`` program (kept for installs whose console script still points here)."""
    app(args=argv, prog_name="train")


if __name__ == "__main__":
    app(prog_name="train")
