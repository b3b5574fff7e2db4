"""Estimate the Skill-It skills graph A (training skills x evaluation skills) with short training runs.

    train skills-graph linear training/configs/tiny.yaml --skills python_docs,code,license \
        --steps 20 --out runs/skills/graph.json            # k runs, h steps each (+ heatmap graph.png)
    train skills-graph brute training/configs/tiny.yaml --skills python_docs,code,license \
        --steps 60 --out runs/skills/graph-bf.json          # k^2 runs

``linear`` (docs/methods.md, Skill-It: skills graph): from the same start, train ``steps`` on skill i
alone and set A[i, j] = eval loss of skill j before minus after (how much skill i's data helps j).
``brute``: for each pair, train on skills {i, j} and on {j} alone for ``steps``; A[i, j] = 1 when j's
loss ends lower with i in the mix (i is a prerequisite of j), diagonal 1. Every run's directory is
recorded in the JSON next to A, which ``SkillGraph.load`` reads.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from training.train import TrainConfig, load_config, train


def _run(base: TrainConfig, ratios: dict[str, float], steps: int, out: Path, eval_skills: list[str]) -> dict[str, Any]:
    data = replace(base.data, ratios=dict(ratios), ratios_file=None)
    cfg = replace(base, data=data, steps=steps, eval_every=steps, checkpoint_every=steps, out_dir=str(out),
                  skillit=None)
    # Evaluate every skill, not only the ones trained on: the eval loop follows data.ratios keys.
    cfg.data.ratios = {**{s: 0.0 for s in eval_skills}, **ratios}
    train(cfg)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    evals = [r for r in log if "eval" in r]
    return {"before": evals[0]["eval"], "after": evals[-1]["eval"], "dir": str(out)}


def estimate_linear(base: TrainConfig, skills: list[str], steps: int, out: Path) -> dict[str, Any]:
    a = np.zeros((len(skills), len(skills)))
    runs = []
    for i, s in enumerate(skills):
        r = _run(base, {s: 1.0}, steps, out / f"linear-{s}", skills)
        a[i] = [r["before"][j] - r["after"][j] for j in skills]
        runs.append(r["dir"])
    return {"method": "linear", "steps": steps, "train_skills": skills, "eval_skills": skills, "A": a.tolist(), "runs": runs}


def estimate_brute(base: TrainConfig, skills: list[str], steps: int, out: Path) -> dict[str, Any]:
    a = np.eye(len(skills))
    runs = []
    alone = {j: _run(base, {j: 1.0}, steps, out / f"alone-{j}", skills) for j in skills}
    for i, si in enumerate(skills):
        for j, sj in enumerate(skills):
            if i == j:
                continue
            pair = _run(base, {si: 0.5, sj: 0.5}, steps, out / f"pair-{si}-{sj}", skills)
            a[i, j] = float(pair["after"][sj] < alone[sj]["after"][sj])
            runs.append(pair["dir"])
    return {"method": "brute", "steps": steps, "train_skills": skills, "eval_skills": skills, "A": a.tolist(),
            "runs": runs + [r["dir"] for r in alone.values()]}


def heatmap(graph: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = np.asarray(graph["A"])
    fig, ax = plt.subplots(figsize=(1.2 * len(a) + 2, 1.2 * len(a) + 1.5))
    im = ax.imshow(a, cmap="viridis")
    ax.set_xticks(range(len(graph["eval_skills"])), graph["eval_skills"], rotation=45, ha="right")
    ax.set_yticks(range(len(graph["train_skills"])), graph["train_skills"])
    ax.set(xlabel="evaluation skill", ylabel="training skill", title=f"skills graph ({graph['method']})")
    for (i, j), v in np.ndenumerate(a):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_graph(method: str, config: str, skills: list[str], steps: int, out: Path,
                overrides: list[str]) -> dict[str, Any]:
    """Estimate A with ``method`` (linear or brute); write it to ``out`` and a heatmap next to it."""
    base = load_config(config, overrides)
    work = out.with_suffix("")
    graph = (estimate_linear if method == "linear" else estimate_brute)(base, skills, steps, work)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(graph, indent=1))
    heatmap(graph, out.with_suffix(".png"))
    return {"A": graph["A"], "graph": str(out), "heatmap": str(out.with_suffix(".png"))}
