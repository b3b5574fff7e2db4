"""Skill-It online data selection: multiplicative weights over training skills.

    p_{t+1}(i) ∝ exp(eta * sum_{tau in last w evaluations} sum_j A[i, j] * L_j(f_tau))

``A`` (k training skills x m evaluation skills) says how much training on skill i lowers the loss
of evaluation skill j. A binary graph's off-diagonal ones become 0.5 (the released code's rule).
The initial mixture is softmax(eta * A @ 1). The window covers the last ``window`` *evaluations*
(not update rounds), as in the code. Every update is recorded (step, the window's losses, the new
weights) so a resumed run reproduces them exactly. The rule is ``curation.skillit_rule``, the same
code ``curate skill-order`` plans with, so an offline schedule's first round equals this sampler's
first update for the same losses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# The rule itself (graph loading with the binary -> weighted conversion, softmax, window, step) is shared
# with the offline planner `curate skill-order`; re-exported here for existing callers.
from curation.skillit_rule import SkillGraph, binary_to_weighted, initial_mixture, mixture_step, recent, softmax

__all__ = ["SkillGraph", "SkillItConfig", "SkillItSampler", "binary_to_weighted", "softmax"]


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
        self.weights = initial_mixture(self.graph.A, self.eta)

    def observe(self, losses: dict[str, float]) -> None:
        self.history.append(self.graph.loss_vector(losses, source="eval losses").tolist())

    def update(self, step: int) -> dict[str, float]:
        """New weights from the last ``window`` evaluations; recorded in ``updates``."""
        if not self.history:
            return self.mixture()
        hist = recent(self.history, self.window)
        if self.normalize_loss:
            hist = hist / np.asarray(self.history[0])
        self.weights = mixture_step(self.graph.A, hist, self.eta)
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
