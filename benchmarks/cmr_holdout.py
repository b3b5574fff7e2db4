# python benchmarks/cmr_holdout.py --out runs/cmr_holdout           # the measured run (docs/benchmarks.md, CMR)
# python benchmarks/cmr_holdout.py --out /tmp/cmr --quick           # CI smoke
# python benchmarks/cmr_holdout.py --out runs/cmr_seeds --seeds 3   # + the sweep's seed-to-seed scatter
"""CMR law on held-out ratios: fit on all mixture ratios but one, predict the one left out.

Only the project's commands, as subprocesses: ``curate run`` (the bundled sample corpus as a run),
``train run`` (a base model on general text: python_docs), ``train cmr sweep`` (continual
pre-training from it on general + domain (code) at >= 6 domain shares R), then per left-out R
``train cmr fit`` on the other runs and ``train cmr predict --ratio R`` at the sweep's token
budget. The prediction (loss changes interpolated in R between the fitted per-ratio curves) is
compared with the left-out run's measured loss changes at its last evaluation. Finally the fit on
all ratios gives the critical ratio at that budget (``eps``: tolerated general-loss rise), one more
run at that ratio is trained, and its measured change is set against the prediction.
With ``--seeds N`` the sweep is repeated with N-1 more training seeds (model init and data order),
not used by any fit: the standard deviation of the measured change across seeds at each ratio is
the scatter no law fitted to one seed can predict below, and it is reported next to the errors.
Output: results.json and table.md under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._commands import Commands  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GENERAL, DOMAIN = "python_docs", "code"
PARAMS = {  # fixed before looking at any prediction error
    "full": {"base_steps": 600, "cpt_steps": 200, "seq_len": 128, "batch_size": 16, "eval_every": 20,
             "eval_batches": 8, "ratios": [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9], "eps": 0.05, "d_model": 64},
    "quick": {"base_steps": 30, "cpt_steps": 20, "seq_len": 64, "batch_size": 8, "eval_every": 2,
              "eval_batches": 2, "ratios": [0.1, 0.2, 0.3, 0.5, 0.7, 0.9], "eps": 0.05, "d_model": 32},
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "cmr_holdout")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=1, help="repeat the sweep with this many seeds in all (scatter)")
    ap.add_argument("--in-process", action=argparse.BooleanOptionalAction, default=None,
                    help="run the commands in this interpreter instead of one python per command "
                         "(default: in-process with --quick, subprocesses otherwise)")
    args = ap.parse_args(argv)
    p = PARAMS["quick" if args.quick else "full"]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cmds = Commands(REPO, out / "commands.log", args.threads, args.quick if args.in_process is None else args.in_process)

    def run(*a: str) -> str:
        return cmds(*a)[0]

    t_start = time.time()
    corpus = out / "corpus"
    pipe = out / "corpus.json"
    pipe.write_text(json.dumps({"name": "cmr_corpus", "input": {"paths": [str(REPO / "curation/data/sample/*.jsonl.gz")],
                                "id_field": "id", "domain_field": "domain"}, "stages": [{"stage": "text_length_v1", "min_chars": 200}],
                                "output": {"dir": str(corpus)}, "executor": {"kind": "local"}}))
    run("curation.cli", "run", str(pipe))
    cfg = {"data": {"runs": [str(corpus)], "ratios": {GENERAL: 1.0}, "seq_len": p["seq_len"], "batch_size": p["batch_size"],
                    "tokenizer": "bytes"},
           "model": {"n_layer": 2, "n_head": 2, "d_model": p["d_model"]},
           "schedule": {"kind": "cosine", "lr": 3e-3, "warmup_steps": 10}, "steps": p["base_steps"],
           "eval_every": p["eval_every"], "eval_batches": p["eval_batches"], "checkpoint_every": 100_000,
           "out_dir": str(out / "base")}
    (out / "base.json").write_text(json.dumps(cfg))
    run("training.cli", "run", str(out / "base.json"))
    cpt = {**cfg, "init_from": str(out / "base" / "checkpoint.pt"), "steps": p["cpt_steps"],
           "schedule": {"kind": "wsd", "lr": 1e-3, "warmup_steps": 5, "decay_fraction": 0.2}}
    (out / "cpt.json").write_text(json.dumps(cpt))
    ratios = p["ratios"]
    run("training.cli", "cmr", "sweep", str(out / "cpt.json"), "--general", GENERAL, "--domain", DOMAIN,
        "--ratios", ",".join(map(str, ratios)), "--out", str(out / "sweep"))
    tokens = p["cpt_steps"] * p["seq_len"] * p["batch_size"]
    unit = tokens / 10  # T in tenths of the budget: the fit sees T in (0, 10]

    from training.cmr import curves_from_log

    def measured(run_dir: Path) -> dict[str, float]:
        _, (t, g, d) = curves_from_log(run_dir / "log.jsonl", GENERAL, DOMAIN, unit)
        return {"d_general": float(g[-1]), "d_domain": float(d[-1])}

    scatter = {r: [measured(out / "sweep" / f"r{r:g}")] for r in ratios}
    for seed in range(1, args.seeds):
        run("training.cli", "cmr", "sweep", str(out / "cpt.json"), "--general", GENERAL, "--domain", DOMAIN,
            "--ratios", ",".join(map(str, ratios)), "--out", str(out / f"sweep_seed{seed}"),
            "-o", f"seed={seed}", "-o", f"data.seed={seed}")
        for r in ratios:
            scatter[r].append(measured(out / f"sweep_seed{seed}" / f"r{r:g}"))

    rows = []
    for r in ratios:
        others = [str(out / "sweep" / f"r{x:g}") for x in ratios if x != r]
        fit = out / "fits" / f"without_r{r:g}.json"
        fit.parent.mkdir(exist_ok=True)
        run("training.cli", "cmr", "fit", *others, "--general", GENERAL, "--domain", DOMAIN, "--eps", str(p["eps"]),
            "--token-unit", str(unit), "--out", str(fit))
        pred = json.loads(run("training.cli", "cmr", "predict", str(fit), "--tokens", str(tokens), "--ratio", str(r)))["at_ratio"]
        meas = measured(out / "sweep" / f"r{r:g}")
        rows.append({"ratio": r, "interpolated": min(ratios) < r < max(ratios),
                     **{f"pred_{k}": pred[k] for k in ("d_general", "d_domain")},
                     **{f"meas_{k}": meas[k] for k in ("d_general", "d_domain")},
                     **{f"relerr_{k}": abs(pred[k] - meas[k]) / max(1e-9, abs(meas[k])) for k in ("d_general", "d_domain")},
                     **({f"seeds_{k}": [m[k] for m in scatter[r]] for k in ("d_general", "d_domain")} if args.seeds > 1 else {})})
    full_fit = out / "fits" / "all.json"
    run("training.cli", "cmr", "fit", *[str(out / "sweep" / f"r{x:g}") for x in ratios], "--general", GENERAL,
        "--domain", DOMAIN, "--eps", str(p["eps"]), "--token-unit", str(unit), "--out", str(full_fit))
    crit = json.loads(run("training.cli", "cmr", "predict", str(full_fit), "--tokens", str(tokens),
                          "--mixture", str(out / "mixture_cmr.json")))
    r_star = round(crit["critical_ratio"], 4)
    check: dict[str, Any] = {"critical_ratio": r_star, "pred": crit["at_critical"]}
    if 0 < r_star < 1:
        run("training.cli", "cmr", "sweep", str(out / "cpt.json"), "--general", GENERAL, "--domain", DOMAIN,
            "--ratios", str(r_star), "--out", str(out / "at_critical"))
        check["meas"] = measured(out / "at_critical" / f"r{r_star:g}")
    res = {"params": p, "tokens": tokens, "token_unit": unit, "holdout": rows, "critical": check,
           "wall_s": time.time() - t_start}
    (out / "results.json").write_text(json.dumps(res, indent=1))
    (out / "table.md").write_text(table(res))
    print(table(res))
    return res


def table(res: dict[str, Any]) -> str:
    lines = ["| left-out R | dL_gen predicted | dL_gen measured | rel. error | dL_dom predicted | dL_dom measured | rel. error |",
             "|---|---|---|---|---|---|---|"]
    for r in res["holdout"]:
        tag = "" if r["interpolated"] else " (extrapolated)"
        lines.append(f"| {r['ratio']:g}{tag} | {r['pred_d_general']:+.4f} | {r['meas_d_general']:+.4f} | "
                     f"{100 * r['relerr_d_general']:.0f}% | {r['pred_d_domain']:+.4f} | {r['meas_d_domain']:+.4f} | "
                     f"{100 * r['relerr_d_domain']:.0f}% |")
    c = res["critical"]
    if "seeds_d_general" in res["holdout"][0]:
        lines += ["", "Seed-to-seed scatter of the measured changes (the sweep repeated with other training seeds):", "",
                  "| R | dL_gen mean ± std over seeds | abs. error of the prediction | dL_dom mean ± std | abs. error |",
                  "|---|---|---|---|---|"]
        for r in res["holdout"]:
            cells = []
            for k in ("d_general", "d_domain"):
                v = np.asarray(r[f"seeds_{k}"])
                cells += [f"{v.mean():+.4f} ± {v.std(ddof=1):.4f}", f"{abs(r[f'pred_{k}'] - r[f'meas_{k}']):.4f}"]
            lines.append(f"| {r['ratio']:g} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Critical ratio at {res['tokens']:,} tokens (eps {res['params']['eps']}): R* = {c['critical_ratio']:g}; "
                 f"predicted dL_gen {c['pred']['d_general']:+.4f}, dL_dom {c['pred']['d_domain']:+.4f}"
                 + (f"; measured dL_gen {c['meas']['d_general']:+.4f}, dL_dom {c['meas']['d_domain']:+.4f}" if "meas" in c
                    else "; not trained (R* at the edge)"))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
