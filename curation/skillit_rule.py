"""The Skill-It mixture rule, shared by the offline planner and the online sampler.

    from curation.skillit_rule import SkillGraph, initial_mixture, mixture_step, recent
    g = SkillGraph.load("graph.json")                       # binary graphs become weighted here
    p = mixture_step(g.A, recent(history, window=3), eta=0.5)

Skill-It (Algorithm 1, as its released code runs it) is multiplicative weights over the k training
skills with a sliding window over evaluations and a uniform prior:

    p_{t+1}(i) ∝ exp(eta * sum_{tau = t-w+1..t} sum_j A[i, j] * L_j(f_tau))

``A`` (k training skills x m evaluation skills) says how much training on skill i lowers the loss of
evaluation skill j. A 0/1 graph's off-diagonal ones count 0.5 (the released code's convention). The
initial mixture is the same step with one all-ones loss vector, softmax(eta * A @ 1).

``curate skill-order`` (``curation.skill_order``) and ``training.skillit.SkillItSampler`` both call
this module, so a planned schedule and an online run give the same mixture for the same losses. It
lives in ``curation`` because ``training`` may import ``curation`` and never the reverse.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class SkillGraph:
    """A skills graph with its matrix already weighted.

    Args:
        train_skills: the k skills a mixture is over (rows of ``A``).
        eval_skills: the m skills whose losses drive the update (columns of ``A``).
        A: k x m float matrix; a 0/1 input has been passed through ``binary_to_weighted``.
    """

    train_skills: list[str]
    eval_skills: list[str]
    A: np.ndarray

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "graph") -> SkillGraph:
        """Validate ``{"train_skills", "eval_skills", "A"}`` and weight a binary ``A``; ``source``
        names the file in error messages."""
        missing = [k for k in ("train_skills", "eval_skills", "A") if k not in data]
        if missing:
            raise ValueError(f"{source}: missing field(s) {', '.join(missing)} "
                             "(expected train_skills, eval_skills, A)")
        train, evals = list(data["train_skills"]), list(data["eval_skills"])
        try:
            a = np.asarray(data["A"], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: field A is not a numeric matrix ({exc})") from None
        if a.shape != (len(train), len(evals)):
            raise ValueError(f"{source}: A is {a.shape}, expected {len(train)} x {len(evals)} "
                             "(train_skills x eval_skills)")
        if not np.isfinite(a).all():
            raise ValueError(f"{source}: A holds a NaN or infinite entry")
        return cls(train, evals, binary_to_weighted(a))

    @classmethod
    def load(cls, path: str | Path) -> SkillGraph:
        return cls.from_dict(json.loads(Path(path).read_text()), source=str(path))

    def loss_vector(self, losses: Mapping[str, float], source: str = "losses") -> np.ndarray:
        """Losses in ``eval_skills`` order; a missing skill is named rather than a bare KeyError."""
        missing = [s for s in self.eval_skills if s not in losses]
        if missing:
            raise ValueError(f"{source}: no loss for eval skill(s) {', '.join(map(repr, missing))}")
        return np.array([float(losses[s]) for s in self.eval_skills], dtype=np.float64)


def binary_to_weighted(a: np.ndarray) -> np.ndarray:
    """A 0/1 graph: off-diagonal edges count half (the released code's convention); any other
    matrix (e.g. a learned one) is returned unchanged."""
    if not np.isin(a, (0.0, 1.0)).all():
        return a
    out = a * 0.5
    idx = np.arange(min(a.shape))
    out[idx, idx] = a[idx, idx]
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())  # shifted: exp of large eta * loss sums would overflow
    return z / z.sum()


def recent(history: Sequence[Sequence[float]] | np.ndarray, window: int) -> np.ndarray:
    """The last ``window`` loss vectors (one per evaluation) as a (w, m) array."""
    if window < 1:
        # history[-0:] would silently be the whole history: the released code has no unbounded window.
        raise ValueError(f"window must be >= 1, got {window}")
    if len(history) == 0:
        raise ValueError("no loss vector yet: the rule needs at least one evaluation")
    return np.asarray(history[-window:], dtype=np.float64)


def mixture_step(a: np.ndarray, window_losses: np.ndarray, eta: float) -> np.ndarray:
    """p ∝ exp(eta * A @ (sum of the window's loss vectors)), over training skills."""
    return softmax(eta * a @ np.asarray(window_losses, dtype=np.float64).sum(axis=0))


def initial_mixture(a: np.ndarray, eta: float) -> np.ndarray:
    """The mixture before any evaluation: the step with one all-ones loss vector."""
    return mixture_step(a, np.ones((1, a.shape[1])), eta)
