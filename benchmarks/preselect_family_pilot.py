# python benchmarks/preselect_family_pilot.py --from runs/pe-round7 --emphasis 0.9 --seeds 4 --seed-offset 900 --out runs/fam-pilot
"""How far apart on the target are PreSelect's family members, and how often would their order reproduce?

A pilot for ``benchmarks/preselect_effect.py`` (not a result): it reuses a finished round's pool, base and
target dev set (``--from``), continues the base on each family mix at ``--emphasis`` for ``--seeds`` seeds
(seeds ``100 + seed_offset + j``, none of which a round uses when the offset is large), and prints each
member's mean and SD of target dev loss. From those it simulates the family gate: the probability that the
order of the means of ``order`` seeds matches the order of the means of ``check`` other seeds with Kendall
tau >= 0.8, each model's loss drawn from a normal with the member's mean and either the pooled seed SD or
the member's own (which, from four seeds, is itself noisy: both are printed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _selection_stats as st  # noqa: E402
from benchmarks.preselect_effect import GATE_TAU, PARAMS, Runner, family_mix, last_json  # noqa: E402


def gate_probability(means: np.ndarray, sd: np.ndarray | float, order: int, check: int, draws: int = 20_000,
                     seed: int = 0) -> float:
    """P(Kendall tau >= GATE_TAU) between the member order of ``order`` seeds' means and of ``check`` seeds',
    each member's seeds normal around ``means`` with SD ``sd`` (one per member, or one for all)."""
    rng = np.random.default_rng(seed)
    a = means + rng.normal(0, sd / np.sqrt(order), (draws, len(means)))
    b = means + rng.normal(0, sd / np.sqrt(check), (draws, len(means)))
    return float(np.mean([st.kendall_tau(x, y) >= GATE_TAU for x, y in zip(a, b)]))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--from", dest="src", type=Path, required=True, help="a finished preselect_effect --out")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--emphasis", type=float, default=0.6)
    ap.add_argument("--family", default="natural,python_docs,code,readme,license,changelog",
                    help="comma-separated mixes: natural, or a source emphasised")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--seed-offset", type=int, default=900)
    args = ap.parse_args(argv)
    src, out = args.src.resolve(), args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    p = PARAMS["full"]
    prior = json.loads((src / "results.json").read_text())
    base_seed = prior["base"]["seed"]
    base_name = "base" if base_seed == prior["seed_offset"] else f"base_try{(base_seed - prior['seed_offset']) // 1000}"
    base = src / "train" / base_name / "checkpoint.pt"
    natural = json.loads((src / "mix_pool.json").read_text())["ratios"]
    run = Runner(out, 1, True)
    members = args.family.split(",")
    losses = np.zeros((len(members), args.seeds))
    for j in range(args.seeds):
        for k, mix in enumerate(members):
            ratios = family_mix(natural, None if mix == "natural" else mix, args.emphasis)
            seed = 100 + args.seed_offset + j
            cfg = {"data": {"runs": [str(src / "runs" / "pool")], "ratios": ratios, "seq_len": p["seq_len"],
                            "batch_size": p["batch_size"], "tokenizer": "bytes", "seed": seed},
                   "model": {"n_layer": p["n_layer"], "n_head": 2, "d_model": p["d_model"]},
                   "schedule": {"kind": "cosine", "lr": p["arm_lr"], "warmup_steps": 20},
                   "steps": p["family_steps"], "eval_every": p["family_steps"], "eval_batches": 2,
                   "checkpoint_every": 10**9, "seed": seed, "out_dir": str(out / f"m{k}_s{j}")}
            path = out / f"m{k}_s{j}.json"
            path.write_text(json.dumps(cfg))
            run("training.cli", "run", str(path), "-o", f"init_from={base}")
            ev = last_json(run("training.cli", "eval", str(out / f"m{k}_s{j}" / "checkpoint.pt"),
                               "--runs", str(src / "runs" / "target_dev"))[0])
            losses[k, j] = ev["all"]["loss"]
    means = losses.mean(axis=1)
    sd = float(np.sqrt(np.mean(losses.var(axis=1, ddof=1))))
    order = np.argsort(means)
    res = {"from": str(src), "base": str(base), "emphasis": args.emphasis, "members": members,
           "losses": losses.tolist(), "means": means.tolist(), "pooled_seed_sd": sd,
           "adjacent_gaps": {f"{members[a]}<{members[b]}": float(means[b] - means[a])
                             for a, b in zip(order[:-1], order[1:])},
           "p_gate_pooled_sd": {f"{n}+{n}": gate_probability(means, sd, n, n) for n in (2, 3, 4)},
           "p_gate_member_sd": {f"{n}+{n}": gate_probability(means, losses.std(axis=1, ddof=1), n, n)
                                for n in (2, 3, 4)}}
    (out / "pilot.json").write_text(json.dumps(res, indent=1))
    for k in order:
        print(f"{members[k]:12s} {means[k]:.4f}  sd {losses[k].std(ddof=1):.4f}  " + " ".join(f"{x:.4f}" for x in losses[k]))
    print(json.dumps({k: res[k] for k in ("pooled_seed_sd", "adjacent_gaps", "p_gate_pooled_sd", "p_gate_member_sd")}, indent=1))
    return res


if __name__ == "__main__":
    main()
