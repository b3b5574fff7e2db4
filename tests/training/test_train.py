"""The training loop: 2-process gloo DDP on the quickstart's shards, loss falls; exact resume; schedules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from curation.errors import ConfigError
from curation.io.manifest import OrderedRunManifest
from curation.service.local_ray import free_ports
from tests.conftest import REPO
from tests.training.conftest import GRAPH, LOSSES
from training.checkpoint import read_checkpoint
from training.data.loader import LoaderConfig, MixtureLoader
from training.train import ScheduleConfig, eval_sets, load_config, lr_at, train


def write_cfg(tmp: Path, run: Path, **over) -> Path:  # noqa: ANN003
    cfg = yaml.safe_load((REPO / "training" / "configs" / "tiny.yaml").read_text())
    cfg["data"]["runs"] = [str(run)]
    cfg["data"].update(seq_len=64, batch_size=4)
    cfg.update(out_dir=str(tmp / "out"), **over)
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_two_process_gloo_ddp_loss_falls(quickstart_run: Path, tmp_path: Path) -> None:
    path = write_cfg(tmp_path, quickstart_run, steps=40, eval_every=20, checkpoint_every=40, grad_accum=2)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_ports(1)[0]),
                        "-m", "training.cli", "run", str(path)], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["world_size"] == 2 and result["backend"] == "gloo"
    log = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert log[0]["config"]["data"]["ratios"] == {"python_docs": 0.8, "license": 0.2} and log[1]["step"] == 0
    losses = [rec["train_loss"] for rec in log if "train_loss" in rec]
    assert losses[-1] < losses[0] - 1.0  # from ~ln(257) = 5.5 towards byte-level English
    evals = [rec["eval"] for rec in log if "eval" in rec]
    assert set(evals[-1]) == {"python_docs", "license"} and evals[-1]["python_docs"] < evals[0]["python_docs"] + 1e-9
    assert (tmp_path / "out" / "checkpoint.pt").exists()


def test_resume_reproduces_an_uninterrupted_run(quickstart_run: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    straight = load_config(str(write_cfg(tmp_path / "a", quickstart_run, steps=12, checkpoint_every=6, eval_every=6)), [])
    ref = train(straight)
    part = load_config(str(write_cfg(tmp_path / "b", quickstart_run, steps=6, checkpoint_every=6, eval_every=6)), [])
    train(part)
    resumed = train(load_config(str(write_cfg(tmp_path / "b", quickstart_run, steps=12, checkpoint_every=6, eval_every=6)), []))
    assert resumed["step"] == 12 and resumed["train_loss"] == ref["train_loss"]
    a = read_checkpoint(tmp_path / "a" / "out" / "checkpoint.pt")
    b = read_checkpoint(tmp_path / "b" / "out" / "checkpoint.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["loaders"] == b["loaders"]


def test_schedules() -> None:
    cos = ScheduleConfig(kind="cosine", lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, 100, cos) == pytest.approx(0.1) and lr_at(9, 100, cos) == pytest.approx(1.0)
    assert lr_at(100, 100, cos) == pytest.approx(0.1)
    wsd = ScheduleConfig(kind="wsd", lr=1.0, warmup_steps=10, decay_fraction=0.2, min_lr_ratio=0.0)
    assert lr_at(50, 100, wsd) == 1.0 and lr_at(79, 100, wsd) == 1.0 and lr_at(90, 100, wsd) == pytest.approx(0.5)


@pytest.mark.slow
@pytest.mark.ray
def test_ray_train_launcher_runs_the_same_loop(ray_cluster: None, quickstart_run: Path, tmp_path: Path) -> None:
    from training.ray_launch import launch

    cfg = load_config(str(write_cfg(tmp_path, quickstart_run, steps=6, eval_every=6, checkpoint_every=6)), [])
    launch(cfg, workers=2)
    log = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    ckpt = read_checkpoint(tmp_path / "out" / "checkpoint.pt")
    assert log[-1]["step"] == 6 and len(ckpt["loaders"]) == 2  # two ranks, each with its own loader state
    assert ckpt["loaders"][0]["identity"]["world_size"] == 2


def test_token_budget_sets_the_number_of_steps(quickstart_run: Path, tmp_path: Path) -> None:
    """tokens=1000 at 4 x 64 tokens per step buys ceil(1000 / 256) = 4 steps; the schedule spans those 4."""
    cfg = load_config(str(write_cfg(tmp_path, quickstart_run, steps=50, eval_every=100, checkpoint_every=100)),
                      ["tokens=1000", "schedule.warmup_steps=1"])
    assert cfg.total_steps(1) == 4 and cfg.total_steps(2) == 2
    result = train(cfg)
    assert result["step"] == 4 and result["tokens"] == 1024
    rows = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "train_loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4] and steps[-1]["tokens"] == 1024
    assert "eval" in steps[-1]  # the last step evaluates, as at the end of any run
    assert steps[-1]["lr"] < steps[1]["lr"]  # the cosine decays over the 4 budgeted steps, not over 50
    with pytest.raises(Exception, match="tokens must be a positive token budget"):
        load_config(str(write_cfg(tmp_path / "bad", quickstart_run)), ["tokens=0"])


def test_train_run_follows_a_skill_ordered_run(sample_run: Path, tmp_path: Path) -> None:
    """A curation run -> `curate skill-order` -> `train run` (tiny model, CPU, 3 steps, no ratios): the loop reads
    the ordered shards as a curriculum, so its first batches are round 0's documents, in the manifest's order."""
    (tmp_path / "graph.json").write_text(json.dumps(GRAPH))
    (tmp_path / "losses.json").write_text(json.dumps(LOSSES))
    ordered = tmp_path / "ordered"
    r = subprocess.run([sys.executable, "-m", "curation.cli", "skill-order", str(sample_run), str(ordered), "--graph",
                        str(tmp_path / "graph.json"), "--losses", str(tmp_path / "losses.json"), "--rounds", "3",
                        "--chars-per-round", "8000", "--column", "domain"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    path = write_cfg(tmp_path, ordered, steps=3, eval_every=1, checkpoint_every=3)
    config = yaml.safe_load(path.read_text())
    del config["data"]["ratios"]  # a curriculum: no mixture
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "training.cli", "run", str(path)], capture_output=True, text=True,
                       cwd=REPO, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["step"] == 3 and result["shares"] == {"round-000": 1.0, "round-001": 0.0, "round-002": 0.0}
    log = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert log[0]["config"]["data"]["ratios"] == {}
    steps = [rec for rec in log if "train_loss" in rec]
    assert [rec["shares"]["round-000"] for rec in steps] == [1.0, 1.0, 1.0]  # each step's sequences: round 0's
    assert all(rec["eval"] == {} for rec in steps)  # no per-domain eval of a curriculum without eval_runs
    # What the loop consumed is what a loader of the logged config gives in its first 3 batches (the checkpoint
    # holds the same state), and those are round 0's documents, byte for byte, EOS after each.
    loader = MixtureLoader(LoaderConfig(**log[0]["config"]["data"]))
    first = [loader.next_batch() for _ in range(3)]
    assert read_checkpoint(tmp_path / "out" / "checkpoint.pt")["loaders"] == [json.loads(json.dumps(loader.state_dict()))]
    round0 = OrderedRunManifest.read(ordered).shards[0]
    texts = pq.read_table(ordered / round0.path, columns=["text"]).column("text").to_pylist()
    stream = [t for text in texts for t in [*text.encode(), 256]]
    inputs = np.concatenate([x for x, _, _ in first])  # 12 sequences of 64 tokens, back to back
    assert len(stream) > inputs.size and inputs.ravel().tolist() == stream[: inputs.size]


def test_a_curriculum_is_evaluated_on_held_out_runs_only(sample_run: Path, ordered_run: Path, tmp_path: Path) -> None:
    cfg = load_config(str(write_cfg(tmp_path, ordered_run)), ["data.ratios={}", "eval_domains=[code]"])
    with pytest.raises(ConfigError, match="eval_domains: the training run is skill-ordered output, read as a "
                                          "curriculum, not by domain: name held-out runs"):
        eval_sets(cfg, 0, 1)
    cfg.eval_runs = [str(sample_run)]
    assert set(eval_sets(cfg, 0, 1)) == {"code"}
