"""Skill-It online data selection (METHODS.md 2.3): multiplicative weights over training skills.

    p_{t+1}(i) ∝ exp(eta * sum_{tau in last w evaluations} sum_j A[i, j] * L_j(f_tau))

``A`` (k training skills x m evaluation skills) says how much training on skill i lowers the loss
of evaluation skill j. A binary graph's off-diagonal ones become 0.5 (the released code's rule).
The initial mixture is softmax(eta * A @ 1). The window covers the last ``window`` *evaluations*
(not update rounds), as in the code. Every update is recorded (step, the window's losses, the new
weights) so a resumed run reproduces them exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(kw_only=True)
class SkillItConfig:
    """``graph``: JSON file {"train_skills": [...], "eval_skills": [...], "A": [[...]]}.
    ``update_every``: training steps between mixture updates (evaluations happen every
    ``eval_every`` steps of the loop)."""

    graph: str
    eta: float = 0.5
    window: int = 3
    update_every: int = 100
    normalize_loss: bool = False  # use L_j / L_j(f_0), relative to the first evaluation


@dataclass
class SkillGraph:
    train_skills: list[str]
    eval_skills: list[str]
    A: np.ndarray

    @classmethod
    def load(cls, path: str | Path) -> SkillGraph:
        data = json.loads(Path(path).read_text())
        a = np.asarray(data["A"], dtype=np.float64)
        if a.shape != (len(data["train_skills"]), len(data["eval_skills"])):
            raise ValueError(f"{path}: A is {a.shape}, expected {len(data['train_skills'])} x {len(data['eval_skills'])}")
        return cls(list(data["train_skills"]), list(data["eval_skills"]), binary_to_weighted(a))


def binary_to_weighted(a: np.ndarray) -> np.ndarray:
    """A 0/1 graph: off-diagonal edges count half (the released code's convention)."""
    if not np.isin(a, (0.0, 1.0)).all():
        return a
    out = a * 0.5
    k = min(a.shape)
    idx = np.arange(k)
    out[idx, idx] = a[idx, idx]
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


@dataclass
class SkillItSampler:
    graph: SkillGraph
    eta: float
    window: int
    normalize_loss: bool = False
    history: list[list[float]] = field(default_factory=list)  # eval losses, one vector per evaluation
    updates: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError("window must be >= 1 (the paper's code has no unbounded window)")
        self.weights = softmax(self.eta * self.graph.A @ np.ones(len(self.graph.eval_skills)))

    def observe(self, losses: dict[str, float]) -> None:
        self.history.append([float(losses[s]) for s in self.graph.eval_skills])

    def update(self, step: int) -> dict[str, float]:
        """New weights from the last ``window`` evaluations; recorded in ``updates``."""
        if not self.history:
            return self.mixture()
        hist = np.asarray(self.history[-self.window:])
        if self.normalize_loss:
            hist = hist / np.asarray(self.history[0])
        self.weights = softmax(self.eta * self.graph.A @ hist.sum(axis=0))
        self.updates.append({"step": step, "losses": hist.tolist(), "weights": self.weights.tolist()})
        return self.mixture()

    def mixture(self) -> dict[str, float]:
        return {s: float(w) for s, w in zip(self.graph.train_skills, self.weights)}

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "updates": self.updates, "weights": self.weights.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [list(h) for h in state["history"]]
        self.updates = list(state["updates"])
        self.weights = np.asarray(state["weights"], dtype=np.float64)
