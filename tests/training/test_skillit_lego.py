"""benchmarks/skillit_lego.py at tiny size: LEGO data checked by an independent resolver, the ensemble
equals separate models, Skill-It's mixture moves and every update is logged, results are well formed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import benchmarks.skillit_lego as lego  # an ordinary import: benchmarks/ is a namespace package
from training.skillit import SkillItSampler


def resolve(text: str) -> tuple[int, int]:
    """Parse "x = val 1 , y = not x , ... . y = ? -> v" on its own; returns (value, depth) of the query."""
    body, query = text.split(" . ")
    clauses = {}
    for clause in body.split(" , "):
        lhs, rest = clause.split(" = ")
        op, rhs = rest.split(" ")
        clauses[lhs] = (op, rhs)
    name = query.split(" = ")[0]
    negate, depth = 0, 0
    while True:
        op, rhs = clauses[name]
        depth += 1
        negate ^= op == "not"
        if rhs in ("0", "1"):
            return int(rhs) ^ negate, depth
        name = rhs


@pytest.mark.parametrize("alphabet", [5, 26])
def test_lego_labels_match_an_independent_resolver(alphabet: int) -> None:
    rng = np.random.default_rng(0)
    skills = rng.integers(1, 6, 400)
    batch = lego.make_batch(skills, 5, rng, alphabet)
    for i in range(len(skills)):
        text = batch.text(i)
        value, depth = resolve(text)
        assert value == int(text.rsplit("-> ", 1)[1]) == batch.label[i]
        assert depth == skills[i] == batch.skill[i]
        names = text.split(" . ")[0].split(" , ")
        assert len({c.split(" = ")[0] for c in names}) == 5  # five distinct variables
    assert set(np.unique(batch.lhs)) <= set(range(alphabet))
    # Clause order is shuffled: the root is not always first, labels are balanced-ish.
    assert (batch.rhs[:, 0] >= lego.LIT0).mean() < 0.5
    assert 0.4 < batch.label.mean() < 0.6


def test_chain_graph_is_the_lego_prerequisite_graph() -> None:
    g = lego.chain_graph(5)
    assert g.A.tolist() == [[1, .5, 0, 0, 0], [0, 1, .5, 0, 0], [0, 0, 1, .5, 0], [0, 0, 0, 1, .5], [0, 0, 0, 0, 1]]


def test_ensemble_member_equals_a_separate_model() -> None:
    cfg = lego.LegoConfig(d_model=16, n_layer=2, n_head=2)
    ens = lego.Ensemble(cfg, [3, 4])
    torch.manual_seed(4)
    alone = lego.LegoNet(cfg)
    rng = np.random.default_rng(1)
    batches = [lego.make_batch(rng.integers(1, 6, 8), 5, rng) for _ in range(2)]
    logits, _ = ens(batches)
    with torch.no_grad():
        ref = alone(*batches[1].tensors()[:4])
    assert torch.allclose(logits[1], ref, atol=1e-5)


def test_tiny_experiment(tmp_path: Path) -> None:
    cfg = lego.LegoConfig(steps=40, eval_every=5, update_every=10, eval_per_skill=20, d_model=16, n_layer=2,
                          n_head=2, lr=3e-3)
    res = lego.experiment(cfg, seeds=1, methods=list(lego.METHODS), target=0.55, threads=1, out=tmp_path)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"] == json.loads(json.dumps(res["summary"]))
    rows = [line for line in (tmp_path / "table.md").read_text().splitlines() if line.startswith("|")]
    assert len(rows) == 2 + len(lego.METHODS) and all(f"| {m} |" in "".join(rows) for m in lego.METHODS)
    assert (tmp_path / "accuracy.png").stat().st_size > 5_000
    runs = {r["method"]: r for r in res["runs"]}
    assert set(runs) == set(lego.METHODS)
    for r in runs.values():
        assert [p["step"] for p in r["curve"]] == list(range(0, 41, 5))
        assert set(r["curve"][-1]["acc"]) == {f"depth{d}" for d in range(1, 6)}
        assert abs(sum(r["drawn_share"]) - 1) < 1e-9
    # The methods of one seed start from the same model and eval data: identical first evaluation.
    assert len({json.dumps(r["curve"][0]) for r in runs.values()}) == 1
    # Static samplers keep their mixture; random-paper is the released script's 1:1:1:3:5.
    assert runs["uniform"]["mixtures"] == [{"step": 0, "weights": [0.2] * 5}]
    assert runs["random-paper"]["mixtures"][0]["weights"] == pytest.approx(np.array([1, 1, 1, 3, 5]) / 11)
    assert runs["uniform"]["updates"] == []
    # Skill-It: one logged update per update_every steps, each from the last `window` evaluations,
    # and the mixture moves away from its initial softmax(eta * A @ 1).
    sk = runs["skillit"]
    assert [u["step"] for u in sk["updates"]] == [10, 20, 30, 40]
    assert [m["step"] for m in sk["mixtures"]] == [0, 10, 20, 30, 40]
    assert all(len(u["losses"]) == cfg.window for u in sk["updates"])
    first = sk["updates"][0]["losses"]  # the window at step 10: the evaluations at steps 0, 5 and 10
    evals_up_to_10 = [[p["loss"][f"depth{d}"] for d in range(1, 6)] for p in sk["curve"] if p["step"] <= 10]
    assert np.allclose(first, evals_up_to_10[-cfg.window:])
    init = SkillItSampler(lego.chain_graph(5), eta=cfg.eta, window=cfg.window).weights
    assert sk["mixtures"][0]["weights"] == pytest.approx(init.tolist())
    assert np.abs(np.asarray(sk["mixtures"][-1]["weights"]) - init).max() > 1e-3
    for m in sk["mixtures"]:
        assert sum(m["weights"]) == pytest.approx(1.0)
    summ = res["summary"]
    for m in lego.METHODS:
        assert summ[m]["seeds"] == 1 and 0 <= summ[m]["final_acc"][0] <= 1
        hit = summ[m]["steps_to_target"][0]
        assert hit == lego.steps_to_target(runs[m]["curve"], 0.55)
        assert summ[m]["steps"][0] == (cfg.steps if hit is None else hit)  # unreached counts as the budget
        assert sum(summ[m]["vs_skillit"].values()) == 1
    assert summ["skillit"]["vs_skillit"] == {"skillit_faster": 0, "tie": 1, "skillit_slower": 0}
