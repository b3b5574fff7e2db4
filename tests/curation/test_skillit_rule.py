"""The shared Skill-It rule: graph loading (binary -> weighted), clear errors, and the planner and the
online sampler agreeing round by round when fed the same losses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.skill_order import plan_mixtures
from curation.skillit_rule import SkillGraph, binary_to_weighted, initial_mixture, mixture_step, recent

SKILLS = ["a", "b", "c"]


def test_binary_graph_is_weighted_and_learned_graph_kept(tmp_path: Path) -> None:
    (tmp_path / "g.json").write_text(json.dumps({"train_skills": SKILLS, "eval_skills": SKILLS,
                                                 "A": [[1, 1, 0], [0, 1, 1], [0, 0, 1]]}))
    assert SkillGraph.load(tmp_path / "g.json").A.tolist() == [[1, 0.5, 0], [0, 1, 0.5], [0, 0, 1]]
    learned = np.array([[0.3, 1.0, 0.0], [0.0, 0.2, 0.1], [0.0, 0.0, 0.4]])
    assert binary_to_weighted(learned) is learned  # not 0/1: already weighted, unchanged
    # k != m: only the square part's diagonal keeps full weight.
    assert binary_to_weighted(np.ones((2, 3))).tolist() == [[1, 0.5, 0.5], [0.5, 1, 0.5]]


@pytest.mark.parametrize(("data", "message"), [
    ({"train_skills": SKILLS, "eval_skills": SKILLS}, "g.json: missing field"),
    ({"train_skills": SKILLS, "eval_skills": SKILLS[:2], "A": np.eye(3).tolist()},
     r"g.json: A is \(3, 3\), expected 3 x 2"),
    ({"train_skills": SKILLS, "eval_skills": SKILLS, "A": [[1, "x", 0], [0, 1, 0], [0, 0, 1]]}, "not a numeric"),
    ({"train_skills": SKILLS, "eval_skills": SKILLS, "A": [[1, float("nan"), 0], [0, 1, 0], [0, 0, 1]]}, "NaN"),
])
def test_bad_graph_names_file_and_field(tmp_path: Path, data: dict, message: str) -> None:
    (tmp_path / "g.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        SkillGraph.load(tmp_path / "g.json")


def test_missing_loss_and_bad_window_are_named() -> None:
    g = SkillGraph.from_dict({"train_skills": SKILLS, "eval_skills": SKILLS, "A": np.eye(3).tolist()})
    with pytest.raises(ValueError, match=r"losses.json: no loss for eval skill\(s\) 'c'"):
        g.loss_vector({"a": 1.0, "b": 2.0}, source="losses.json")
    with pytest.raises(ValueError, match="window must be >= 1, got 0"):
        recent([[1.0, 1.0, 1.0]], 0)  # history[-0:] would otherwise mean "everything"
    with pytest.raises(ValueError, match="window must be >= 1"):
        plan_mixtures(g.A, np.ones(3), rounds=1, eta=0.5, window=0, alpha=0.1)


@settings(max_examples=40, deadline=None)
@given(bits=st.lists(st.booleans(), min_size=9, max_size=9),
       l0=st.lists(st.floats(0.1, 8.0), min_size=3, max_size=3),
       eta=st.floats(0.05, 1.0), window=st.integers(1, 4), rounds=st.integers(1, 5))
def test_planner_rounds_equal_sampler_updates_fed_the_predicted_losses(bits: list[bool], l0: list[float], eta: float,
                                                                      window: int, rounds: int) -> None:
    from training.skillit import SkillItSampler

    raw = np.array(bits, dtype=float).reshape(3, 3)
    np.fill_diagonal(raw, 1.0)
    g = SkillGraph.from_dict({"train_skills": SKILLS, "eval_skills": SKILLS, "A": raw.tolist()})
    plan = plan_mixtures(g.A, np.array(l0), rounds, eta, window, alpha=0.1)
    sampler = SkillItSampler(g, eta=eta, window=window)
    assert np.allclose(sampler.weights, initial_mixture(g.A, eta), rtol=0, atol=1e-15)
    losses = np.array(l0)
    for t, p in enumerate(plan):
        sampler.observe(dict(zip(SKILLS, losses)))
        online = np.array(list(sampler.update(step=t).values()))
        assert np.allclose(online, p, rtol=0, atol=1e-12), (t, online, p)
        losses = np.clip(losses * (1 - 0.1 * g.A.T @ p), 0.0, None)  # the planner's predicted next losses


def test_step_by_hand() -> None:
    a = np.array([[1.0, 0.5], [0.0, 1.0]])
    p = mixture_step(a, np.array([[1.0, 2.0], [3.0, 0.0]]), eta=0.5)  # sum [4, 2]; A @ = [5, 2]
    z = np.exp([2.5, 1.0])
    assert np.allclose(p, z / z.sum())
