# python benchmarks/skillit_lego.py --seeds 5            # CPU, 2 threads, ~2.5 min (docs/skillit_lego.md)
"""Skill-It on a LEGO synthetic task: steps to a target accuracy, Skill-It vs uniform and random mixtures.

Task (LEGO as Skill-It's ``dataset/lego_dataset.py`` builds it): a chain of ``k`` boolean variables,
written as ``k`` clauses in shuffled order, e.g. ``c = val 1 , e = not c , a = val e , ...``, then a
query for one variable. Names are a fresh random permutation of the first ``alphabet`` letters per
sentence (Skill-It shuffles all 26; 5 letters is what a CPU-sized model learns in minutes), so the
chain has to be searched. Skill ``d`` (1..k) = the queried variable sits at depth ``d``: resolving it
takes ``d`` hops, so depth ``d`` builds on depth ``d-1`` (the prerequisite structure). Each example
belongs to exactly one skill.

Model: a small bidirectional transformer encoder (BERT-style, as in the LEGO paper), one position per
clause (sum of lhs, op and rhs embeddings) plus one query position, 2-way head on the query position.
``training/model.py``'s GPT (causal, one token per symbol) was tried first and did not get past depth 1
in 3000 steps on CPU (docs/skillit_lego.md), so it is not used.

Samplers (same steps, batch size, optimizer, model init and evaluation data within a seed):
* ``uniform``: fixed equal mixture over skills (the paper's skill-stratified sampling).
* ``random``: the paper's "random" = examples drawn at random from a training pool whose skills are
  unevenly represented. ``random`` draws the pool's composition from Dirichlet(1) per seed;
  ``random-paper`` uses the released LEGO script's fixed composition 1:1:1:3:5.
* ``skillit``: the product's ``training.skillit.SkillItSampler`` with the LEGO chain graph (self loops
  and edge d -> d+1, binary off-diagonals -> 0.5 by ``binary_to_weighted``), fed per-skill eval losses
  every ``eval_every`` steps and updated every ``update_every`` steps, in the order of
  ``training/train.py`` (observe at step 0 and at every evaluation, then update).

All (sampler, seed) runs train in lock-step as one ``torch.func.vmap`` ensemble (see ``Ensemble``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.func import functional_call, stack_module_state, vmap  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from training.skillit import SkillGraph, SkillItSampler, binary_to_weighted  # noqa: E402

ALPHABET = "abcdefghijklmnopqrstuvwxyz"
LIT0, LIT1 = len(ALPHABET), len(ALPHABET) + 1  # right-hand side literals of the root clause "x = val 0/1"
VAL, NOT = 0, 1
METHODS = ("uniform", "random", "random-paper", "skillit")
PAPER_RANDOM_POOL = (1, 1, 1, 3, 5)  # the Skill-It repository's scripts/lego/pt/run_random.sh --proportions (k = 5)


@dataclass(kw_only=True)
class LegoConfig:
    k: int = 5  # variables per sentence = number of skills
    alphabet: int = 5  # names: a fresh permutation of the first `alphabet` letters per sentence
    steps: int = 1200
    batch_size: int = 32  # the paper's LEGO batch size
    lr: float = 2e-3
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 64
    mlp_ratio: int = 2
    eval_every: int = 10
    eval_per_skill: int = 100
    # Skill-It's LEGO setting (docs/methods.md, Skill-It): 6000 steps, update every 1000, window 3, eta 0.5, 120 evals.
    # The shorter run keeps the paper's proportions: 6 mixture rounds (update_every = steps / 6) and
    # 120 evaluations (eval_every = steps / 120), so the window of 3 evaluations spans the last 1/40
    # of the run and each round sees 20 evaluations. eta and window are the paper's values.
    eta: float = 0.5
    window: int = 3
    update_every: int = 200
    random_alpha: float = 1.0  # Dirichlet concentration of the ``random`` pool


# ----------------------------------------------------------------------------------------------- data


@dataclass
class LegoBatch:
    """Clauses ``lhs = op rhs`` in shuffled order (k per row), the queried name and its value (0/1)."""

    lhs: np.ndarray  # (n, k) variable names, 0..25
    op: np.ndarray  # (n, k) VAL or NOT
    rhs: np.ndarray  # (n, k) a variable name, or LIT0/LIT1 for the root
    query: np.ndarray  # (n,)
    label: np.ndarray  # (n,) the query's value
    skill: np.ndarray  # (n,) depth of the query, 1..k

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(a) for a in (self.lhs, self.op, self.rhs, self.query, self.label))

    def text(self, i: int) -> str:
        def name(t: int) -> str:
            return ALPHABET[t] if t < LIT0 else str(t - LIT0)

        clauses = [f"{name(l)} = {'not' if o == NOT else 'val'} {name(r)}"
                   for l, o, r in zip(self.lhs[i], self.op[i], self.rhs[i])]
        return " , ".join(clauses) + f" . {name(self.query[i])} = ? -> {self.label[i]}"


def make_batch(skills: np.ndarray, k: int, rng: np.random.Generator, alphabet: int = len(ALPHABET)) -> LegoBatch:
    """One LEGO sentence per entry of ``skills`` (the depth, 1..k, of the queried variable)."""
    n = len(skills)
    names = rng.random((n, alphabet)).argsort(axis=1)[:, :k]  # names[:, 0] is the root
    flips = rng.integers(0, 2, (n, k))  # flips[:, 0]: the root's value; flips[:, d]: "not" for depth d+1
    values = np.cumsum(flips, axis=1) % 2
    op = np.where(flips == 1, NOT, VAL)
    op[:, 0] = VAL
    rhs = np.concatenate([(LIT0 + flips[:, :1]), names[:, :-1]], axis=1)
    order = rng.random((n, k)).argsort(axis=1)  # shuffled clause order: the chain must be searched
    lhs, op, rhs = (np.take_along_axis(a, order, axis=1) for a in (names, op, rhs))
    rows = np.arange(n)
    return LegoBatch(lhs, op, rhs, names[rows, skills - 1], values[rows, skills - 1], np.asarray(skills))


def eval_set(k: int, per_skill: int, rng: np.random.Generator, alphabet: int = len(ALPHABET)) -> dict[str, LegoBatch]:
    return {f"depth{d}": make_batch(np.full(per_skill, d), k, rng, alphabet) for d in range(1, k + 1)}


def chain_graph(k: int) -> SkillGraph:
    """LEGO prerequisite graph: depth d helps itself and depth d+1 (binary edges count half)."""
    names = [f"depth{d}" for d in range(1, k + 1)]
    return SkillGraph(names, names, binary_to_weighted(np.eye(k) + np.eye(k, k=1)))


# ---------------------------------------------------------------------------------------------- model


class Block(nn.Module):
    """Pre-norm transformer block without a causal mask (every clause may look at every other)."""

    def __init__(self, d: int, n_head: int, mlp_ratio: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d))
        self.n_head = n_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2)
                   for z in self.qkv(self.ln1(x)).split(d, dim=2))
        # Written out (6 positions): torch.func.vmap has no batching rule for the fused CPU kernel.
        y = torch.softmax(q @ k.transpose(-2, -1) * (d // self.n_head) ** -0.5, dim=-1) @ v
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


class LegoNet(nn.Module):
    """One position per clause (sum of lhs, op and rhs embeddings) plus the query; no positional
    embedding, since clause order carries no information."""

    def __init__(self, cfg: LegoConfig) -> None:
        super().__init__()
        d, names = cfg.d_model, len(ALPHABET) + 2
        self.lhs, self.rhs, self.query = nn.Embedding(names, d), nn.Embedding(names, d), nn.Embedding(names, d)
        self.op = nn.Embedding(2, d)
        self.blocks = nn.ModuleList(Block(d, cfg.n_head, cfg.mlp_ratio) for _ in range(cfg.n_layer))
        self.ln_f, self.head = nn.LayerNorm(d), nn.Linear(d, 2)

    def forward(self, lhs: torch.Tensor, op: torch.Tensor, rhs: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.lhs(lhs) + self.op(op) + self.rhs(rhs), self.query(query)[:, None]], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x[:, -1]))


# ------------------------------------------------------------------------------------------- training


def static_mixture(method: str, k: int, seed: int, alpha: float) -> np.ndarray:
    if method == "uniform":
        return np.full(k, 1.0 / k)
    if method == "random":  # its own stream: the pool depends on the seed only
        return np.random.default_rng([seed, 7]).dirichlet(np.full(k, alpha))
    if method == "random-paper":
        if k != len(PAPER_RANDOM_POOL):
            raise ValueError(f"random-paper is defined for k = {len(PAPER_RANDOM_POOL)}")
        return np.asarray(PAPER_RANDOM_POOL, dtype=float) / sum(PAPER_RANDOM_POOL)
    raise ValueError(f"unknown method {method!r}")


@dataclass
class Member:
    """One (sampler, seed) run inside the ensemble: its data streams, mixture and records."""

    method: str
    seed: int
    evals: dict[str, LegoBatch]
    examples: np.random.Generator
    picks: np.random.Generator
    mixture: np.ndarray
    sampler: SkillItSampler | None
    drawn: np.ndarray
    curve: list[dict[str, Any]] = field(default_factory=list)
    mixtures: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def create(cls, method: str, seed: int, cfg: LegoConfig) -> Member:
        sampler = SkillItSampler(chain_graph(cfg.k), eta=cfg.eta, window=cfg.window) if method == "skillit" else None
        mixture = sampler.weights.copy() if sampler else static_mixture(method, cfg.k, seed, cfg.random_alpha)
        # Eval data and examples depend on the seed only, so the methods of a seed see the same eval set.
        return cls(method, seed, eval_set(cfg.k, cfg.eval_per_skill, np.random.default_rng([seed, 1]), cfg.alphabet),
                   np.random.default_rng([seed, 2]), np.random.default_rng([seed, 3]), mixture, sampler,
                   np.zeros(cfg.k, dtype=np.int64), mixtures=[{"step": 0, "weights": mixture.tolist()}])

    def next_batch(self, cfg: LegoConfig) -> LegoBatch:
        skills = self.picks.choice(cfg.k, size=cfg.batch_size, p=self.mixture) + 1
        self.drawn += np.bincount(skills - 1, minlength=cfg.k)
        return make_batch(skills, cfg.k, self.examples, cfg.alphabet)

    def record_eval(self, step: int, ev: dict[str, dict[str, float]]) -> None:
        self.curve.append({"step": step, **ev})
        if self.sampler:
            self.sampler.observe(ev["loss"])

    def maybe_update(self, step: int, cfg: LegoConfig) -> None:
        if self.sampler and step % cfg.update_every == 0:
            self.mixture = np.asarray(list(self.sampler.update(step).values()))
            self.mixtures.append({"step": step, "weights": self.mixture.tolist()})

    def result(self) -> dict[str, Any]:
        return {"method": self.method, "seed": self.seed, "curve": self.curve, "mixtures": self.mixtures,
                "updates": self.sampler.updates if self.sampler else [],
                "drawn_share": (self.drawn / self.drawn.sum()).tolist()}


class Ensemble:
    """E independent LegoNets trained in lock-step as one batched computation (torch.func.vmap).

    Each member has its own parameters, data and mixture; AdamW is elementwise and the gradient
    norm is clipped per member, so this is the same as E separate runs, only without E times the
    per-operation overhead that dominates a model this small on CPU.
    """

    def __init__(self, cfg: LegoConfig, seeds: list[int]) -> None:
        nets = []
        for seed in seeds:
            torch.manual_seed(seed)  # same init for every method of a seed: only the data differs
            nets.append(LegoNet(cfg))
        self.params, self.buffers = stack_module_state(nets)
        base = copy.deepcopy(nets[0]).to("meta")
        self._forward = vmap(lambda p, b, *x: functional_call(base, (p, b), x))
        self.opt = torch.optim.AdamW(list(self.params.values()), lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.95),
                                     foreach=True)

    def __call__(self, batches: list[LegoBatch]) -> tuple[torch.Tensor, torch.Tensor]:
        *x, y = (torch.stack(t) for t in zip(*(b.tensors() for b in batches)))
        return self._forward(self.params, self.buffers, *x), y

    def train_step(self, batches: list[LegoBatch], max_norm: float = 1.0) -> None:
        logits, y = self(batches)
        per_member = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(len(batches), -1)
        per_member.mean(1).sum().backward()  # members share no parameters: each gets its own gradient
        grads = [p.grad for p in self.params.values()]
        norms = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)  # clip_grad_norm_, member by member
        for g in grads:
            g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    @torch.no_grad()
    def evaluate(self, evals: list[dict[str, LegoBatch]]) -> list[dict[str, dict[str, float]]]:
        """Per member, per skill: mean cross-entropy (what Skill-It observes) and accuracy.
        One skill at a time: smaller chunks run faster on CPU than one big batch."""
        out: list[dict[str, dict[str, float]]] = [{"loss": {}, "acc": {}} for _ in evals]
        for skill in evals[0]:
            logits, y = self([ev[skill] for ev in evals])
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(*y.shape).mean(1)
            acc = (logits.argmax(-1) == y).float().mean(1)
            for e, o in enumerate(out):
                o["loss"][skill], o["acc"][skill] = float(loss[e]), float(acc[e])
        return out


def train(cfg: LegoConfig, jobs: list[tuple[str, int]], threads: int = 2) -> list[dict[str, Any]]:
    """Train one model per (method, seed) for ``cfg.steps`` steps, evaluating every ``eval_every``;
    Skill-It members observe each evaluation and update their mixture every ``update_every`` steps,
    in the order of ``training/train.py``."""
    torch.set_num_threads(threads)
    members = [Member.create(m, s, cfg) for m, s in jobs]
    model = Ensemble(cfg, [s for _, s in jobs])
    t0 = time.time()
    for mem, ev in zip(members, model.evaluate([m.evals for m in members])):
        mem.record_eval(0, ev)
    for step in range(1, cfg.steps + 1):
        model.train_step([m.next_batch(cfg) for m in members])
        if step % cfg.eval_every == 0 or step == cfg.steps:
            for mem, ev in zip(members, model.evaluate([m.evals for m in members])):
                mem.record_eval(step, ev)
        for mem in members:
            mem.maybe_update(step, cfg)
    wall = time.time() - t0
    return [{**m.result(), "train_s": wall} for m in members]


# ------------------------------------------------------------------------------------------- analysis


def mean_acc(point: dict[str, Any]) -> float:
    return float(np.mean(list(point["acc"].values())))


def steps_to_target(curve: list[dict[str, Any]], target: float) -> int | None:
    """First evaluated step at which the mean accuracy over skills reaches ``target`` (None: never)."""
    return next((p["step"] for p in curve if mean_acc(p) >= target), None)


def mean_std(xs: list[float]) -> tuple[float, float]:
    return float(np.mean(xs)), float(np.std(xs))


def summarize(runs: list[dict[str, Any]], target: float, steps: int) -> dict[str, dict[str, Any]]:
    """Per method: steps to target (a run that never reaches it counts as ``steps``, so its mean is a
    lower bound), final accuracy/loss, data drawn, and the per-seed comparison with Skill-It."""
    out: dict[str, dict[str, Any]] = {}
    hits: dict[str, dict[int, int | None]] = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        rs = sorted((r for r in runs if r["method"] == method), key=lambda r: r["seed"])
        hits[method] = {r["seed"]: steps_to_target(r["curve"], target) for r in rs}
        hit = list(hits[method].values())
        last = [r["curve"][-1] for r in rs]
        out[method] = {
            "steps_to_target": hit,
            "reached": sum(h is not None for h in hit),
            "seeds": len(rs),
            "steps": mean_std([steps if h is None else h for h in hit]),
            "final_acc": mean_std([mean_acc(p) for p in last]),
            "final_loss": mean_std([float(np.mean(list(p["loss"].values()))) for p in last]),
            "final_acc_per_skill": {s: float(np.mean([p["acc"][s] for p in last])) for s in last[0]["acc"]},
            "drawn_share": np.mean([r["drawn_share"] for r in rs], axis=0).tolist(),
        }
    if "skillit" in hits:
        never = steps + 1  # ranks after any step of the run
        for method, h in hits.items():
            pairs = [(hits["skillit"][s], h[s]) for s in h if s in hits["skillit"]]
            diff = [np.sign((b if b is not None else never) - (a if a is not None else never)) for a, b in pairs]
            out[method]["vs_skillit"] = {"skillit_faster": int(sum(d > 0 for d in diff)),
                                         "tie": int(sum(d == 0 for d in diff)),
                                         "skillit_slower": int(sum(d < 0 for d in diff))}
    return out


def table(summary: dict[str, dict[str, Any]], target: float, steps: int) -> str:
    rows = [f"| sampler | steps to mean acc ≥ {target:g} | reached | Skill-It faster / tie / slower (seeds) | "
            "final mean acc | final mean loss | final acc, depth 1..k | data drawn, depth 1..k |",
            "|---|---|---|---|---|---|---|---|"]
    for m, s in summary.items():
        bound = "≥ " if s["reached"] < s["seeds"] else ""  # unreached runs counted as the budget
        st = f"{bound}{s['steps'][0]:.0f} ± {s['steps'][1]:.0f}"
        v = s.get("vs_skillit")
        vs = "—" if m == "skillit" or not v else f"{v['skillit_faster']} / {v['tie']} / {v['skillit_slower']}"
        per = " / ".join(f"{x:.2f}" for x in s["final_acc_per_skill"].values())
        share = " / ".join(f"{x:.2f}" for x in s["drawn_share"])
        acc, loss = s["final_acc"], s["final_loss"]
        rows.append(f"| {m} | {st} | {s['reached']}/{s['seeds']} | {vs} | {acc[0]:.3f} ± {acc[1]:.3f} | "
                    f"{loss[0]:.3f} ± {loss[1]:.3f} | {per} | {share} |")
    note = f"Steps: mean ± std over seeds; a run that never reaches the target counts as {steps} (≥)."
    return "\n".join(rows) + "\n\n" + note


def plot(runs: list[dict[str, Any]], target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, method in enumerate(dict.fromkeys(r["method"] for r in runs)):
        rs = [r for r in runs if r["method"] == method]
        steps = [p["step"] for p in rs[0]["curve"]]
        acc = np.array([[mean_acc(p) for p in r["curve"]] for r in rs])
        ax.plot(steps, acc.mean(0), color=f"C{i}", label=method)
        ax.fill_between(steps, acc.min(0), acc.max(0), color=f"C{i}", alpha=0.15)
    ax.axhline(target, color="k", ls=":", lw=1)
    ax.set(xlabel="training step", ylabel="mean accuracy over skills",
           title=f"LEGO k={len(rs[0]['curve'][0]['acc'])}: mean over {len(rs)} seeds (band: min-max)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ CLI


def experiment(cfg: LegoConfig, seeds: int, methods: list[str], target: float, threads: int,
               out: Path, first_seed: int = 0) -> dict[str, Any]:
    """Run every (method, seed), write results.json, table.md and accuracy.png to ``out``."""
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; choose from {METHODS}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    runs = train(cfg, [(m, s) for s in range(first_seed, first_seed + seeds) for m in methods], threads)
    summary = summarize(runs, target, cfg.steps)
    md = table(summary, target, cfg.steps)
    result = {"config": asdict(cfg), "seeds": seeds, "first_seed": first_seed, "target": target, "threads": threads,
              "wall_s": time.time() - t0, "summary": summary, "table": md, "runs": runs}
    (out / "results.json").write_text(json.dumps(result))
    (out / "table.md").write_text(md + "\n")
    plot(runs, target, out / "accuracy.png")
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python benchmarks/skillit_lego.py", description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--target", type=float, default=0.9, help="mean accuracy over the k skills to reach")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", type=Path, default=None, help="output directory (default: a new temp dir)")
    for f, v in asdict(LegoConfig()).items():
        ap.add_argument(f"--{f.replace('_', '-')}", type=type(v), default=v)
    a = ap.parse_args(argv)
    cfg = LegoConfig(**{f: getattr(a, f) for f in asdict(LegoConfig())})
    out = a.out or Path(tempfile.mkdtemp(prefix="skillit_lego_"))
    result = experiment(cfg, a.seeds, a.methods.split(","), a.target, a.threads, out, a.first_seed)
    print(result["table"])
    print(f"\n{len(result['runs'])} runs, {result['wall_s']:.0f} s wall ({a.threads} threads); results in {out}")
    return result


if __name__ == "__main__":
    main()
