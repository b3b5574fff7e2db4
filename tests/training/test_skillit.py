"""Skill-It: the update rule against a hand computation (window included); online runs resume exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training.test_train import write_cfg
from training.checkpoint import read_checkpoint
from training.skillit import SkillGraph, SkillItSampler, binary_to_weighted
from training.train import load_config, train


def graph(a: list[list[float]]) -> SkillGraph:
    return SkillGraph(["s0", "s1", "s2"], ["s0", "s1", "s2"], binary_to_weighted(np.array(a, dtype=float)))


def test_update_rule_by_hand_with_window() -> None:
    g = graph([[1, 1, 0], [0, 1, 1], [0, 0, 1]])  # binary: off-diagonal ones become 0.5
    assert g.A.tolist() == [[1, 0.5, 0], [0, 1, 0.5], [0, 0, 1]]
    s = SkillItSampler(g, eta=0.5, window=2)
    # Initial mixture: softmax(eta * A @ 1) = softmax(0.5 * [1.5, 1.5, 1])
    e = [math.exp(0.75), math.exp(0.75), math.exp(0.5)]
    assert s.mixture() == pytest.approx({k: v / sum(e) for k, v in zip(["s0", "s1", "s2"], e)})
    for losses in ([9.0, 9.0, 9.0], [3.0, 2.0, 1.0], [1.0, 4.0, 2.0]):
        s.observe(dict(zip(["s0", "s1", "s2"], losses)))
    new = s.update(step=100)
    # Window 2: only the last two evaluations count: L = [4, 6, 3].
    # A @ L = [4 + 3, 6 + 1.5, 3] = [7, 7.5, 3]; p = softmax(0.5 * [7, 7.5, 3])
    z = [math.exp(3.5), math.exp(3.75), math.exp(1.5)]
    assert list(new.values()) == pytest.approx([v / sum(z) for v in z])
    assert s.updates[-1] == {"step": 100, "losses": [[3.0, 2.0, 1.0], [1.0, 4.0, 2.0]], "weights": pytest.approx(
        [v / sum(z) for v in z])}
    with pytest.raises(ValueError):
        SkillItSampler(g, eta=0.5, window=0)


def test_online_run_resumes_with_the_same_weights_and_batches(sample_run: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    gpath = tmp_path / "graph.json"
    gpath.write_text(json.dumps({"train_skills": ["python_docs", "code", "license"],
                                 "eval_skills": ["python_docs", "code", "license"],
                                 "A": [[1, 0, 0], [0.5, 1, 0], [0, 0, 1]]}))
    ratios = {"python_docs": 1.0, "code": 1.0, "license": 1.0}
    sk = {"graph": str(gpath), "eta": 0.3, "window": 2, "update_every": 4}

    def cfg(d: str, steps: int):  # noqa: ANN202
        c = load_config(str(write_cfg(tmp_path / d, sample_run, steps=steps, eval_every=2, checkpoint_every=4)), [])
        c.data.ratios = ratios
        from curation.config import from_dict
        from training.skillit import SkillItConfig

        c.skillit = from_dict(SkillItConfig, sk)
        return c

    ref = train(cfg("a", 12))
    train(cfg("b", 8))
    resumed = train(cfg("b", 12))
    assert resumed["train_loss"] == ref["train_loss"]
    a = read_checkpoint(tmp_path / "a" / "out" / "checkpoint.pt")
    b = read_checkpoint(tmp_path / "b" / "out" / "checkpoint.pt")
    assert a["skillit"] == b["skillit"] and len(a["skillit"]["updates"]) == 3  # updates at steps 4, 8 and 12
    assert a["loaders"] == b["loaders"]
    log = [json.loads(x) for x in (tmp_path / "a" / "out" / "log.jsonl").read_text().splitlines()]
    weights = [r["skillit"]["weights"] for r in log if "skillit" in r]
    assert len(weights) == 3 and weights[0] != weights[1]


@pytest.mark.slow
def test_linear_skills_graph_from_short_runs(sample_run: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from training.cli import app

    cfg = write_cfg(tmp_path, sample_run, steps=10, eval_every=10)
    out = tmp_path / "graph.json"
    res = CliRunner().invoke(app, ["skills-graph", "linear", str(cfg), "--skills", "python_docs,code,license",
                                   "--steps", "8", "--out", str(out)])
    assert res.exit_code == 0, res.output
    g = SkillGraph.load(out)
    assert g.A.shape == (3, 3) and (np.diag(g.A) > 0).all()  # training on a skill lowers its own loss
    assert (tmp_path / "graph.png").stat().st_size > 5_000
    assert len(json.loads(out.read_text())["runs"]) == 3
    sampler = SkillItSampler(g, eta=0.5, window=3)  # the estimate feeds Skill-It directly
    assert abs(sum(sampler.mixture().values()) - 1) < 1e-9
