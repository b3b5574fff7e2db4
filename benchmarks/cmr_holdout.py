# python benchmarks/cmr_holdout.py --experiment critical --out runs/cmr      # critical ratio at one budget (5 min)
# python benchmarks/cmr_holdout.py --experiment extrapolate --out runs/cmr   # fit T <= 200 steps, predict T = 400 (9 min)
# python benchmarks/cmr_holdout.py --experiment both --out /tmp/cmr --quick  # CI smoke (tests/benchmarks)
# python benchmarks/cmr_holdout.py --experiment pilot --out runs/cmr         # the seed-99 pilot that chose eps
# python benchmarks/cmr_holdout.py --experiment round2 --out runs/cmr        # round 2: paired to R = 0, fresh seeds
# python benchmarks/cmr_holdout.py --experiment power --out runs/cmr-power   # seeds a round would need, per schedule
# python benchmarks/cmr_holdout.py --experiment power2 --out runs/cmr-power  # the same for a stratified stream, batch 64
# python benchmarks/cmr_holdout.py --experiment round3 --out runs/cmr-power  # round 3: stratified stream, fresh seeds
# python benchmarks/cmr_holdout.py --experiment round4 --out runs/cmr-power  # round 4: eps per scored budget
# python benchmarks/cmr_holdout.py --experiment round5 --out runs/cmr-power  # round 5: experiment 1, 20 seeds
"""CMR law on held-out data: the critical mixture ratio R* measured with seeds, against the law's prediction.

Only the project's commands do the work (``curate run``, ``train run``, ``train eval``); the fits are
``training.cmr``'s. The bundled sample corpus is split by a hash of each document's id into training
documents and two held-out halves (A, B), each its own curation run; general text is every non-code
document (``python_docs``, ``readme``, ``license``, relabelled ``general``), the domain is ``code``. A base
GPT is trained on general text, then continued (WSD schedule, its own decay per budget) on general + domain
at domain share R, several seeds (data order) per point. Every
loss change dL = L(run) - L(base) is measured by ``train eval`` on the held-out documents (every
document once, the same documents for every model), never on training batches.

* ``critical``: one budget, R on a grid. R*_emp = largest R whose seed-mean dL_gen <= eps (and
  dL_dom < 0), with a bootstrap CI over seeds. The law's form in R (Data-Mixing-Laws, c + k exp(tR))
  is fitted to the seed means of every other ratio; it predicts the held-out ratios' dL (scored in
  units of the seed-mean's standard error) and R*_pred.
* ``extrapolate``: budgets T, each a separate run with its own decay; the law's (R, T) surface
  (``training.cmr.fit_joint``) is fitted to seed means at T <= ``fit_max_t`` and predicts dL and R* at
  the largest T, where R*_emp is measured the same way.

* ``round2``: both experiments again on fresh seeds, every loss change paired to the same seed's R = 0 run
  at the same budget (dL_mix = L(R) - L(R = 0): the loss change due to mixing in the domain), R* bootstrapped
  over whole seeds, and eps fixed by a rule on round 1's seeds (``eps_rule``) before the fresh seeds run.
* ``power``: before another round, how many seeds would it need? For each continuation schedule (peak lr,
  warmup) of ``power``, three ratios x the calibration seeds at one budget; the seed SD of dL_gen, its slope in
  R, and the seeds the gate on R*'s interval (width <= 2 x TOLERANCE) needs at that noise and slope.
* ``power2``: the same measure for continuations whose general stream is stratified by source (python_docs,
  readme and license each at a fixed share of the general tokens, their shares of the training text, instead
  of one ``general`` domain whose source mix varies with the data-order seed), and with 4x larger batches.
* ``round3``: both experiments on fresh seeds with the stratified stream (unpaired changes, eps by round 2's rule
  on the calibration seeds, R* bootstrapped over whole seeds). ``round4``: the same, each experiment's eps from the
  calibration seeds at its own scored budget. ``round5``: experiment 1 alone, round 4's design on 20 fresh seeds.

The design, gates and decision rules are fixed in docs/benchmarks.md (CMR) before the run; the
checks in ``verdicts`` apply them. Runs already finished under ``--out`` are reused (same config).
Output: results.json, table.md and cmr_<experiment>.png under ``--out``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._commands import Commands  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# General text: every non-code document of the sample (python_docs alone, 0.37 MB, would be seen ~4 times by a base
# model of 600 steps and ~13 times by one of 2000); the domain: code. The split relabels them.
GENERAL, DOMAIN = "general", "code"
GENERAL_SOURCES = ("python_docs", "readme", "license")
# Fixed in docs/benchmarks.md (CMR) before the measured run; eps from a pilot with seed 99 (documented there).
PARAMS: dict[str, dict[str, Any]] = {
    "full": {"base_steps": 2000, "seq_len": 128, "batch_size": 16, "d_model": 64, "max_eval_tokens": 65536,
             "seeds": [0, 1, 2, 3, 4], "eps": 0.07, "step_unit": 100,
             "critical": {"steps": 200, "ratios": [0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75],
                          "held_out": [0.5, 0.6, 0.7]},
             "extrapolate": {"steps": [50, 100, 200, 400], "ratios": [0.45, 0.525, 0.6, 0.675, 0.75],
                             "fit_max_steps": 200},
             # round 2 (pre-registered in docs/benchmarks.md before it ran): fresh seeds; eps from round 1's seeds
             "round2": {"seeds": [5, 6, 7, 8, 9], "calibration_seeds": [0, 1, 2, 3, 4], "eps_ratio": 0.6,
                        "eps_steps": [200, 400], "paired": True},
             # the power pilot (not a round): round 1's schedule with a longer warmup, and a third of its lr
             "power": {"seeds": [0, 1, 2, 3, 4], "steps": 200, "ratios": [0.45, 0.6, 0.75],
                       "schedules": [[1e-3, 20], [3e-4, 20]]},
             # power2 (a pilot, not a round; docs/benchmarks.md): the first two rows are power's (reused), then a
             # general stream stratified by source, then the same with batches of 64
             "power2": {"seeds": [0, 1, 2, 3, 4], "steps": 200, "ratios": [0.45, 0.6, 0.75],
                        "schedules": [[1e-3, 20], [3e-4, 20], [1e-3, 20, {"stratified": True}],
                                      [3e-4, 20, {"stratified": True}],
                                      [3e-4, 20, {"stratified": True, "batch_size": 64}]]},
             # round 3 (pre-registered in docs/benchmarks.md before it ran): round 1's unpaired loss changes on a
             # general stream stratified by source (power2 cut the seed SD of dL_gen from 0.050 to 0.008 at this
             # schedule), R* bootstrapped over whole seeds, eps by round 2's rule on the calibration seeds
             "round3": {"seeds": [10, 11, 12, 13, 14], "calibration_seeds": [0, 1, 2, 3, 4], "eps_ratio": 0.6,
                        "eps_steps": [200, 400], "paired": False, "schedule": [1e-3, 20, {"stratified": True}]},
             # round 4 (pre-registered before it ran): round 3 with each experiment's eps from the calibration seeds at
             # its own scored budget (round 3's mean over both put experiment 1's eps near the bottom of its grid)
             "round4": {"seeds": [15, 16, 17, 18, 19], "calibration_seeds": [0, 1, 2, 3, 4], "eps_ratio": 0.6,
                        "eps_steps": [200, 400], "paired": False, "schedule": [1e-3, 20, {"stratified": True}],
                        "eps_per_budget": True},
             # round 5 (pre-registered before it ran): experiment 1 only, round 4's design with 20 fresh seeds; a
             # resampling of rounds 3-4's ten seeds put gate 3's power at 88% with 20 seeds, 57% with 10
             "round5": {"seeds": list(range(20, 40)), "calibration_seeds": [0, 1, 2, 3, 4], "eps_ratio": 0.6,
                        "eps_steps": [200, 400], "paired": False, "schedule": [1e-3, 20, {"stratified": True}],
                        "eps_per_budget": True, "experiments": ["critical"]}},
    "quick": {"base_steps": 30, "seq_len": 64, "batch_size": 8, "d_model": 32, "max_eval_tokens": 4096,
              "seeds": [0, 1], "eps": 0.05, "step_unit": 4,
              "critical": {"steps": 8, "ratios": [0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75],
                           "held_out": [0.5, 0.6, 0.7]},
              "extrapolate": {"steps": [2, 4, 8, 16], "ratios": [0.45, 0.525, 0.6, 0.675, 0.75],
                              "fit_max_steps": 8},
              "round2": {"seeds": [2, 3], "calibration_seeds": [0, 1], "eps_ratio": 0.6, "eps_steps": [8, 16],
                         "paired": True},
              "power": {"seeds": [0, 1], "steps": 8, "ratios": [0.45, 0.6, 0.75], "schedules": [[1e-3, 2], [3e-4, 2]]},
              "power2": {"seeds": [0, 1], "steps": 8, "ratios": [0.45, 0.6, 0.75],
                         "schedules": [[3e-4, 2], [3e-4, 2, {"stratified": True}],
                                       [3e-4, 2, {"stratified": True, "batch_size": 16}]]},
              "round3": {"seeds": [2, 3], "calibration_seeds": [0, 1], "eps_ratio": 0.6, "eps_steps": [8, 16],
                         "paired": False, "schedule": [1e-3, 2, {"stratified": True}]},
              "round4": {"seeds": [4, 5], "calibration_seeds": [0, 1], "eps_ratio": 0.6, "eps_steps": [8, 16],
                         "paired": False, "schedule": [1e-3, 2, {"stratified": True}], "eps_per_budget": True},
              "round5": {"seeds": [6, 7, 8], "calibration_seeds": [0, 1], "eps_ratio": 0.6, "eps_steps": [8, 16],
                         "paired": False, "schedule": [1e-3, 2, {"stratified": True}], "eps_per_budget": True,
                         "experiments": ["critical"]}},
}
# The pilot that chose eps: seed 99 is no seed of the experiments, so its runs are never reused by them.
PILOT = {"seed": 99, "points": [(50, 0.45), (50, 0.75), (200, 0.45), (200, 0.6), (200, 0.75), (400, 0.45), (400, 0.75)]}
TOLERANCE = 0.05  # |R*_pred - R*_emp| allowed (pre-registered)
Z_MAX, ABS_MAX = 2.0, 0.01  # a held-out dL passes at |z| <= 2 or |error| <= 0.01 nats/byte


def split_of(doc_id: str) -> str:
    """Training or held-out half A/B by a hash of the id: stable across runs and machines."""
    h = int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:4], "little") % 10
    return {0: "heldout_a", 1: "heldout_b"}.get(h, "train")


def write_splits(out: Path) -> dict[str, dict[str, int]]:
    """The sample corpus' general and domain documents as three JSONL files; bytes per split and domain."""
    sizes: dict[str, dict[str, int]] = {k: {GENERAL: 0, DOMAIN: 0} for k in ("train", "heldout_a", "heldout_b")}
    with ExitStack() as stack:
        files = {k: stack.enter_context(gzip.open(out / f"{k}.jsonl.gz", "wt", encoding="utf-8")) for k in sizes}
        for path in sorted((REPO / "curation/data/sample").glob("*.jsonl.gz")):
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                for line in fh:
                    doc = json.loads(line)
                    dom = GENERAL if doc["domain"] in GENERAL_SOURCES else doc["domain"]
                    if dom in (GENERAL, DOMAIN):
                        k = split_of(doc["id"])
                        files[k].write(json.dumps({**doc, "domain": dom, "source_domain": doc["domain"]}) + "\n")
                        sizes[k][dom] += len(doc["text"].encode())
    return sizes


class Experiment:
    """The corpus runs, the base model and one continual pre-training run per (budget, R, seed)."""

    def __init__(self, out: Path, p: dict[str, Any], cmds: Commands) -> None:
        self.out, self.p, self.cmds = out, p, cmds
        self.cpt_config, self.runs = out / "cpt.json", out / "runs"
        #: general sources and their shares of the general tokens, when the general stream is stratified
        self.strata: dict[str, float] | None = None

    def use_schedule(self, lr: float, warmup_steps: int, stratified: bool = False,
                     batch_size: int | None = None) -> None:
        """Continue with another peak lr and warmup from here on (and, optionally, a general stream stratified
        by source, another batch size): its own config file and runs folder, so a run of one schedule is never
        reused for another."""
        tag = f"lr{lr:g}_w{warmup_steps}" + ("_strat" if stratified else "") + (f"_b{batch_size}" if batch_size else "")
        cpt = json.loads((self.out / "cpt.json").read_text())
        cpt["schedule"] = {**cpt["schedule"], "lr": lr, "warmup_steps": warmup_steps}
        if batch_size:
            cpt["data"]["batch_size"] = batch_size
        self.strata = None
        if stratified:
            cpt["data"]["runs"] = [str(self.stratified_corpus())]
            chars = {d: v["chars"] for d, v in json.loads(
                (self.out / "corpus" / "train_strat" / "manifest.json").read_text())["domains"].items()}
            total = sum(chars[d] for d in GENERAL_SOURCES)
            self.strata = {d: chars[d] / total for d in GENERAL_SOURCES}
        self.cpt_config, self.runs = self.out / f"cpt_{tag}.json", self.out / f"runs_{tag}"
        self.cpt_config.write_text(json.dumps(cpt))

    def stratified_corpus(self) -> Path:
        """The training split with each general document under its source's name (its ``source_domain``)."""
        d = self.out / "corpus" / "train_strat"
        if not (d / "manifest.json").exists():
            self.corpus_run("train_strat", "train", "source_domain")
        return d

    def corpus_run(self, name: str, split: str, domain_field: str = "domain") -> None:
        """``curate run`` of one split (``text_length_v1``, min 200 chars) into ``corpus/<name>``."""
        pipe = self.out / f"corpus_{name}.json"
        pipe.write_text(json.dumps({"name": f"cmr_{name}", "input": {
            "paths": [str(self.out / "splits" / f"{split}.jsonl.gz")], "id_field": "id", "domain_field": domain_field},
            "stages": [{"stage": "text_length_v1", "min_chars": 200}], "output": {"dir": str(self.out / "corpus" / name)},
            "executor": {"kind": "local"}}))
        self.run("curation.cli", "run", str(pipe))

    def run(self, *a: str) -> str:
        return self.cmds(*a)[0]

    def prepare(self) -> dict[str, Any]:
        out, p = self.out, self.p
        info: dict[str, Any] = {}
        if not (out / "corpus" / "heldout_b" / "manifest.json").exists():
            (out / "splits").mkdir(parents=True, exist_ok=True)
            (out / "splits" / "sizes.json").write_text(json.dumps(write_splits(out / "splits")))
            for k in ("train", "heldout_a", "heldout_b"):
                self.corpus_run(k, k)
        info["split_bytes"] = json.loads((out / "splits" / "sizes.json").read_text())
        base = {"data": {"runs": [str(out / "corpus" / "train")], "ratios": {GENERAL: 1.0}, "seq_len": p["seq_len"],
                         "batch_size": p["batch_size"], "tokenizer": "bytes"},
                "model": {"n_layer": 2, "n_head": 2, "d_model": p["d_model"]},
                "schedule": {"kind": "cosine", "lr": 3e-3, "warmup_steps": 10}, "steps": p["base_steps"],
                "eval_every": p["base_steps"], "eval_batches": 1, "checkpoint_every": 100_000,
                "out_dir": str(out / "base")}
        (out / "base.json").write_text(json.dumps(base))
        if not (out / "base" / "eval_a.json").exists():
            self.run("training.cli", "run", str(out / "base.json"))
            self.evaluate(out / "base")
        # continual pre-training: its own warmup and decay per run; the in-training evaluation (training
        # batches) is cut to its minimum, the measurement is `train eval` on held-out documents
        cpt = {**base, "init_from": str(out / "base" / "checkpoint.pt"),
               "schedule": {"kind": "wsd", "lr": 1e-3, "warmup_steps": 5, "decay_fraction": 0.2}}
        (out / "cpt.json").write_text(json.dumps(cpt))
        info["base_loss"] = self.losses(out / "base")
        return info

    def evaluate(self, run_dir: Path) -> None:
        for half in ("a", "b"):
            self.run("training.cli", "eval", str(run_dir / "checkpoint.pt"),
                     "--runs", str(self.out / "corpus" / f"heldout_{half}"),
                     "--max-tokens", str(self.p["max_eval_tokens"]), "--out", str(run_dir / f"eval_{half}.json"))

    def losses(self, run_dir: Path) -> dict[str, dict[str, float]]:
        """Held-out loss per domain: each half, and both together (token-weighted)."""
        res: dict[str, dict[str, float]] = {}
        halves = {h: json.loads((run_dir / f"eval_{h}.json").read_text())["domains"] for h in ("a", "b")}
        for dom in (GENERAL, DOMAIN):
            a, b = halves["a"][dom], halves["b"][dom]
            res[dom] = {"a": a["loss"], "b": b["loss"], "tokens": a["tokens"] + b["tokens"],
                        "all": (a["loss"] * a["tokens"] + b["loss"] * b["tokens"]) / (a["tokens"] + b["tokens"])}
        return res

    def cpt(self, steps: int, ratio: float, seed: int) -> dict[str, float]:
        """dL_gen, dL_dom (held-out, both halves together) and per half, of one run; trained if not done."""
        run_dir = self.runs / f"T{steps}_r{ratio:g}_s{seed}"
        if not (run_dir / "eval_b.json").exists():
            general = ({GENERAL: round(1 - ratio, 6)} if self.strata is None
                       else {d: round((1 - ratio) * w, 6) for d, w in self.strata.items()})
            mix = json.dumps({**general, DOMAIN: ratio})
            self.run("training.cli", "run", str(self.cpt_config), "-o", f"steps={steps}", "-o", f"eval_every={steps}",
                     "-o", f"data.ratios={mix}", "-o", f"seed={seed}", "-o", f"data.seed={seed}",
                     "-o", f"out_dir={run_dir}")
            self.evaluate(run_dir)
        base, now = self.losses(self.out / "base"), self.losses(run_dir)
        return {f"{k}_{part}": now[dom][part] - base[dom][part]
                for k, dom in (("gen", GENERAL), ("dom", DOMAIN)) for part in ("all", "a", "b")}

    def grid(self, steps: int, ratios: list[float], seeds: list[int] | None = None) -> dict[str, np.ndarray]:
        """Every loss change at one budget, arrays shaped (ratios, seeds)."""
        cells = [[self.cpt(steps, r, s) for s in (self.p["seeds"] if seeds is None else seeds)] for r in ratios]
        return {k: np.array([[c[k] for c in row] for row in cells]) for k in cells[0][0]}

    def paired_grid(self, steps: int, ratios: list[float], seeds: list[int]) -> dict[str, np.ndarray]:
        """Round 2: every loss change minus the same seed's R = 0 run at the same budget (continual pre-training
        on general text only, same data order seed): dL_mix = L(R) - L(0), shaped (ratios, seeds)."""
        from training.cmr import paired_changes

        g, ref = self.grid(steps, ratios, seeds), self.grid(steps, [0.0], seeds)
        return {k: paired_changes(g[k], ref[k][0]) for k in g}


def noise(g: dict[str, np.ndarray]) -> dict[str, float]:
    """Seed SD pooled over ratios (sample variance per ratio, averaged) and the evaluation-sampling SD:
    RMS over runs of (dL_A - dL_B) / 2, the SD of a two-half mean if the halves were independent draws."""
    out: dict[str, float] = {}
    for k in ("gen", "dom"):
        out[f"seed_sd_{k}"] = float(np.sqrt(np.mean(np.var(g[f"{k}_all"], axis=1, ddof=1))))
        out[f"eval_sd_{k}"] = float(np.sqrt(np.mean(((g[f"{k}_a"] - g[f"{k}_b"]) / 2) ** 2)))
        # Post-hoc diagnostics (not gates): one seed fixes the data order of every ratio, so part of the seed
        # variance is an offset shared by all ratios of a seed. Split it (two-way layout, ratios x seeds):
        # the SD of the per-seed offsets, and the residual SD once they are removed, which is the noise of a
        # comparison between ratios with the same seeds. Minimum detectable difference between two ratios'
        # seed means (5 % two-sided, 80 % power: 2.8 SE of a difference), unpaired and paired.
        x = g[f"{k}_all"]
        n_r, n_s = x.shape
        resid = x - x.mean(axis=0, keepdims=True) - x.mean(axis=1, keepdims=True) + x.mean()
        out[f"seed_offset_sd_{k}"] = float(np.std(x.mean(axis=0), ddof=1))
        out[f"within_seed_sd_{k}"] = float(np.sqrt((resid ** 2).sum() / ((n_r - 1) * (n_s - 1))))
        out[f"mdd_{k}"] = 2.8 * out[f"seed_sd_{k}"] * float(np.sqrt(2 / n_s))
        out[f"mdd_paired_{k}"] = 2.8 * out[f"within_seed_sd_{k}"] * float(np.sqrt(2 / n_s))
        # and of one ratio's seed mean against a fixed level (e.g. eps, or a prediction)
        out[f"mdd_level_{k}"] = 2.8 * out[f"seed_sd_{k}"] / float(np.sqrt(n_s))
    return out


def score(pred: float, values: np.ndarray, seed_sd: float) -> dict[str, float | bool]:
    """A prediction against the seed mean: error, z in units of the mean's standard error, pass."""
    mean = float(np.mean(values))
    z = (pred - mean) / (seed_sd / np.sqrt(len(values)))
    return {"pred": pred, "mean": mean, "err": pred - mean, "z": float(z),
            "pass": bool(abs(z) <= Z_MAX or abs(pred - mean) <= ABS_MAX)}


def gates(r_emp: dict[str, float], ratios: list[float], nz: dict[str, float]) -> dict[str, bool]:
    """The pre-registered gates: eval noise below seed noise (dL_gen), R* inside the grid, CI narrow enough."""
    return {"eval_noise_below_seed_noise": nz["eval_sd_gen"] < nz["seed_sd_gen"],
            "r_star_inside_grid": min(ratios) < r_emp["r_star"] < max(ratios),
            "ci_resolves_tolerance": r_emp["ci_high"] - r_emp["ci_low"] <= 2 * TOLERANCE}


def eps_rule(exp: Experiment, name: str = "round2") -> dict[str, Any]:
    """A round's eps, from calibration seeds only (fixed before the round's own seeds run): the mean over the two
    scored budgets of the seed-mean dL_gen (paired in round 2) at the middle ratio, rounded to 0.001 nats/byte, so
    that R* of the calibration seeds sits mid-grid at both scored budgets."""
    q = exp.p[name]
    grid = exp.paired_grid if q["paired"] else exp.grid
    per_t = {t: float(grid(t, [q["eps_ratio"]], q["calibration_seeds"])["gen_all"].mean()) for t in q["eps_steps"]}
    out = {"eps": round(float(np.mean(list(per_t.values()))), 3), "paired_gen_at_ratio": per_t,
           "ratio": q["eps_ratio"], "seeds": q["calibration_seeds"]}
    if q.get("eps_per_budget"):  # each experiment's eps from its own scored budget (round 4)
        out["eps_by_steps"] = {t: round(v, 3) for t, v in per_t.items()}
    return out


def reference_check(exp: Experiment, steps: int, ratios: list[float], seeds: list[int]) -> dict[str, Any]:
    """Post hoc (round 2, not a gate): does the R = 0 reference share a seed's offset? Per ratio, the seed SD of
    dL_gen unpaired and paired, and the correlation over seeds between the run's and its reference's dL_gen."""
    g, ref = exp.grid(steps, ratios, seeds)["gen_all"], exp.grid(steps, [0.0], seeds)["gen_all"][0]
    return {"steps": steps, "seeds": seeds, "ratios": ratios,
            "sd_unpaired": np.std(g, axis=1, ddof=1).tolist(), "sd_paired": np.std(g - ref, axis=1, ddof=1).tolist(),
            "corr_with_reference": [float(np.corrcoef(row, ref)[0, 1]) for row in g]}


def round_grid(exp: Experiment, steps: int, ratios: list[float], spec: dict[str, Any] | None) -> dict[str, np.ndarray]:
    """Round 1's grid (``spec`` None), or a later round's on its seeds: paired to R = 0 (round 2) or not."""
    if spec is None:
        return exp.grid(steps, ratios)
    return (exp.paired_grid if spec["paired"] else exp.grid)(steps, ratios, spec["seeds"])


def critical(exp: Experiment, round2: dict[str, Any] | None = None) -> dict[str, Any]:
    """Experiment 1; with ``round2`` (a later round's seeds, eps and ``paired``), R* bootstrapped over whole
    seeds, on paired loss changes where ``paired``."""
    from training.cmr import critical_ratio_of, dml_curve, empirical_critical_ratio, fit_dml, paired_critical_ratio

    p, c = exp.p, exp.p["critical"]
    ratios = c["ratios"]
    seeds, eps = (p["seeds"], p["eps"]) if round2 is None else (round2["seeds"], round2["eps"])
    g = round_grid(exp, c["steps"], ratios, round2)
    nz = noise(g)
    r_emp = (empirical_critical_ratio if round2 is None else paired_critical_ratio)(
        ratios, g["gen_all"], g["dom_all"], eps)
    fit_idx = [i for i, r in enumerate(ratios) if r not in c["held_out"]]
    rs = np.array(ratios)
    fits = {k: fit_dml(rs[fit_idx], g[f"{k}_all"][fit_idx].mean(1)) for k in ("gen", "dom")}
    r_pred = critical_ratio_of(lambda r: dml_curve(r, *fits["gen"]), lambda r: dml_curve(r, *fits["dom"]),
                               min(ratios), max(ratios), eps)
    held = [{"ratio": r, **{k: score(float(dml_curve(np.array(r), *fits[k])), g[f"{k}_all"][ratios.index(r)],
                                     nz[f"seed_sd_{k}"]) for k in ("gen", "dom")}} for r in c["held_out"]]
    gate = gates(r_emp, ratios, nz)
    verdict = {"gates": gate, "r_star_within_tolerance": abs(r_pred - r_emp["r_star"]) <= TOLERANCE,
               "held_out_dl_all_pass": all(h[k]["pass"] for h in held for k in ("gen", "dom"))}
    verdict["outcome"] = ("inconclusive (a gate failed)" if not all(gate.values()) else
                          "pass" if verdict["r_star_within_tolerance"] and verdict["held_out_dl_all_pass"] else "fail")
    return {"steps": c["steps"], "ratios": ratios, "seeds": seeds, "eps": eps, "paired": bool(round2 and round2["paired"]),
            "d_gen": g["gen_all"].tolist(), "d_dom": g["dom_all"].tolist(), "noise": nz, "r_star_emp": r_emp,
            "fit_ratios": rs[fit_idx].tolist(), "dml_fits": fits, "r_star_pred": r_pred, "held_out": held,
            "verdicts": verdict}


def extrapolate(exp: Experiment, round2: dict[str, Any] | None = None) -> dict[str, Any]:
    """Experiment 2; with ``round2`` (a later round's seeds, eps and ``paired``), as in ``critical``."""
    from training.cmr import (
        _fit,
        cmr_curve,
        critical_ratio_of,
        crossing,
        empirical_critical_ratio,
        fit_joint,
        joint_dom_curve,
        joint_gen_curve,
        paired_critical_ratio,
    )

    p, c = exp.p, exp.p["extrapolate"]
    ratios, unit = c["ratios"], p["step_unit"]
    seeds, eps = (p["seeds"], p["eps"]) if round2 is None else (round2["seeds"], round2["eps"])
    grids = {t: round_grid(exp, t, ratios, round2) for t in c["steps"]}
    t_fit = [t for t in c["steps"] if t <= c["fit_max_steps"]]
    t_pred = max(c["steps"])
    rr, tt, gg, dd = [], [], [], []
    for t in t_fit:
        for i, r in enumerate(ratios):
            rr.append(r)
            tt.append(t / unit)
            gg.append(grids[t]["gen_all"][i].mean())
            dd.append(grids[t]["dom_all"][i].mean())
    fits = fit_joint(np.array(rr), np.array(tt), np.array(gg), np.array(dd))

    def at(t: float, which: str) -> Any:
        fn, prm = (joint_gen_curve, fits["gen"]) if which == "gen" else (joint_dom_curve, fits["dom"])
        return lambda r: fn(np.vstack([np.atleast_1d(r), np.full(np.size(r), t / unit)]), *prm)

    g_last = grids[t_pred]
    nz = noise(g_last)
    r_emp = (empirical_critical_ratio if round2 is None else paired_critical_ratio)(
        ratios, g_last["gen_all"], g_last["dom_all"], eps)
    r_pred = critical_ratio_of(at(t_pred, "gen"), at(t_pred, "dom"), min(ratios), max(ratios), eps)
    held = [{"ratio": r, **{k: score(float(at(t_pred, k)(r)[0]), g_last[f"{k}_all"][i], nz[f"seed_sd_{k}"])
                            for k in ("gen", "dom")}} for i, r in enumerate(ratios)]
    # secondary (reported, not the decision): the paper's route, R* per fitted budget from the seed means,
    # then R_CMR(T) = a4 T^s4 + b3 through them; and the persistence baseline R*(T_max) = R*(largest fitted T)
    per_t = {t: crossing(ratios, grids[t]["gen_all"].mean(1), grids[t]["dom_all"].mean(1), eps) for t in c["steps"]}
    try:
        cm = _fit(cmr_curve, np.array(t_fit, float) / unit, np.array([per_t[t] for t in t_fit]),
                  [(0.1, 0.3, 0.0), (0.5, 0.1, 0.0), (-0.5, -0.5, 0.5), (-0.1, 0.5, 0.7)])
        r_cmr = float(np.clip(cmr_curve(np.array([t_pred / unit]), *cm)[0], 0.0, 1.0))
    except ValueError:
        cm, r_cmr = None, None
    per_t_noise = {t: noise(grids[t]) for t in c["steps"]}
    gate = gates(r_emp, ratios, nz)
    verdict = {"gates": gate, "r_star_within_tolerance": abs(r_pred - r_emp["r_star"]) <= TOLERANCE,
               "held_out_dl_all_pass": all(h[k]["pass"] for h in held for k in ("gen", "dom"))}
    verdict["outcome"] = ("inconclusive (a gate failed)" if not all(gate.values()) else
                          "pass" if verdict["r_star_within_tolerance"] and verdict["held_out_dl_all_pass"] else "fail")
    return {"steps": c["steps"], "fit_steps": t_fit, "predicted_steps": t_pred, "ratios": ratios, "seeds": seeds,
            "eps": eps, "step_unit": unit, "paired": bool(round2 and round2["paired"]),
            "d_gen": {t: grids[t]["gen_all"].tolist() for t in c["steps"]},
            "d_dom": {t: grids[t]["dom_all"].tolist() for t in c["steps"]},
            "noise": nz, "noise_per_budget": per_t_noise, "joint_fits": fits, "r_star_emp": r_emp, "r_star_pred": r_pred,
            "held_out": held, "r_star_per_budget": per_t, "cmr_power_law": cm, "r_star_cmr_power_law": r_cmr,
            "r_star_persistence": per_t[max(t_fit)], "verdicts": verdict}


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.cmr import dml_curve, joint_gen_curve

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    eps = res["eps"]
    dl = "dL_{} - same seed's R=0 run" if res.get("paired") else "dL_{}"
    if res["experiment"] == "critical":
        rs, g = np.array(res["ratios"]), np.array(res["d_gen"])
        fine = np.linspace(rs.min(), rs.max(), 100)
        for j in range(g.shape[1]):
            ax[0].plot(rs, g[:, j], ".", color="grey", label="seeds" if j == 0 else None)
        ax[0].plot(rs, g.mean(1), "ko", label="seed mean")
        held = np.isin(rs, [h["ratio"] for h in res["held_out"]])
        ax[0].plot(rs[held], g.mean(1)[held], "o", mfc="none", mec="r", ms=10, label="held out (not fitted)")
        ax[0].plot(fine, dml_curve(fine, *res["dml_fits"]["gen"]), "b-", label="c + k exp(tR), fitted ratios")
        ax[0].set(xlabel="domain share R", ylabel=f"held-out {dl.format('gen')} (nats/byte)", title=f"T = {res['steps']} steps")
        d = np.array(res["d_dom"])
        ax[1].plot(rs, d.mean(1), "ko", label=f"{dl.format('dom')}, seed mean")
        ax[1].plot(fine, dml_curve(fine, *res["dml_fits"]["dom"]), "b-", label="fit")
        ax[1].set(xlabel="domain share R", ylabel=f"held-out {dl.format('dom')} (nats/byte)")
        ax[1].legend()
    else:
        unit = res["step_unit"]
        fine = np.linspace(min(res["ratios"]), max(res["ratios"]), 100)
        for k, t in enumerate(res["steps"]):
            col = f"C{k}"
            g = np.array(res["d_gen"][t])
            ax[0].plot(res["ratios"], g.mean(1), "o" if t in res["fit_steps"] else "s", color=col,
                       label=f"T={t}" + ("" if t in res["fit_steps"] else " (held out)"))
            surf = joint_gen_curve(np.vstack([fine, np.full(fine.size, t / unit)]), *res["joint_fits"]["gen"])
            ax[0].plot(fine, surf, "-" if t in res["fit_steps"] else "--", color=col)
        ax[0].set(xlabel="domain share R", ylabel=f"held-out {dl.format('gen')} (nats/byte)",
                  title=f"seed means; lines: joint law fitted on T <= {max(res['fit_steps'])}")
        ts = res["steps"]
        ax[1].plot(ts, [res["r_star_per_budget"][t] for t in ts], "ko-", label="R* of seed means")
        e = res["r_star_emp"]
        ax[1].errorbar([res["predicted_steps"]], [e["r_star"]], yerr=[[e["r_star"] - e["ci_low"]], [e["ci_high"] - e["r_star"]]],
                       fmt="none", ecolor="k", capsize=4, label="bootstrap 95% CI")
        ax[1].plot([res["predicted_steps"]], [res["r_star_pred"]], "r*", ms=12, label="joint law's prediction")
        if res["r_star_cmr_power_law"] is not None:
            ax[1].plot([res["predicted_steps"]], [res["r_star_cmr_power_law"]], "bx", ms=10, label="R_CMR(T) power law")
        ax[1].axhspan(min(res["ratios"]), max(res["ratios"]), color="grey", alpha=0.15, label="ratio grid")
        ax[1].set(xscale="log", xlabel="budget T (steps)", ylabel="critical ratio R* (0: no ratio of the grid feasible)",
                  ylim=(-0.05, 0.85))
        ax[1].legend()
    ax[0].axhline(eps, color="k", ls=":", label="eps")
    ax[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(res: dict[str, Any]) -> str:
    """Markdown summary of one experiment's results."""
    nz, e, v = res["noise"], res["r_star_emp"], res["verdicts"]
    lines = [f"Experiment `{res['experiment']}` (eps {res['eps']}, seeds {res['seeds']}"
             + ("; every dL paired: minus the same seed's R = 0 run at the same budget" if res.get("paired") else "")
             + "):", ""]
    if res["experiment"] == "critical":
        budgets = [(res["steps"], res["d_gen"], res["d_dom"])]
    else:
        budgets = [(t, res["d_gen"][t], res["d_dom"][t]) for t in res["steps"]]
    lines += ["| T (steps) | R | dL_gen mean ± SD | dL_dom mean ± SD |", "|---|---|---|---|"]
    for t, gs, ds in budgets:
        for r, g, d in zip(res["ratios"], np.array(gs), np.array(ds)):
            lines.append(f"| {t} | {r:g} | {g.mean():+.4f} ± {g.std(ddof=1):.4f} | {d.mean():+.4f} ± {d.std(ddof=1):.4f} |")
    lines += ["", (f"Seed SD (pooled over ratios, at the scored budget): dL_gen {nz['seed_sd_gen']:.4f}, dL_dom "
                   f"{nz['seed_sd_dom']:.4f}; evaluation-sampling SD: dL_gen {nz['eval_sd_gen']:.4f}, "
                   f"dL_dom {nz['eval_sd_dom']:.4f}."),
              (f"Post-hoc: SD of the per-seed offset shared by all ratios: dL_gen {nz['seed_offset_sd_gen']:.4f}, dL_dom "
               f"{nz['seed_offset_sd_dom']:.4f}; within-seed (ratio x seed residual) SD: dL_gen "
               f"{nz['within_seed_sd_gen']:.4f}, dL_dom {nz['within_seed_sd_dom']:.4f}; minimum detectable difference "
               f"between two ratios, unpaired / paired by seed: dL_gen {nz['mdd_gen']:.4f} / {nz['mdd_paired_gen']:.4f}, "
               f"dL_dom {nz['mdd_dom']:.4f} / {nz['mdd_paired_dom']:.4f}"
               + (f"; of one ratio's seed mean against a fixed level: dL_gen {nz['mdd_level_gen']:.4f}, dL_dom "
                  f"{nz['mdd_level_dom']:.4f}." if "mdd_level_gen" in nz else ".")),
              (f"R*_emp = {e['r_star']:.3f} (95% bootstrap CI {e['ci_low']:.3f}–{e['ci_high']:.3f}); "
               f"R*_pred = {res['r_star_pred']:.3f}; |difference| = {abs(res['r_star_pred'] - e['r_star']):.3f} "
               f"(tolerance {TOLERANCE})."
               + (" Each seed's own R*: " + ", ".join(f"{x:.3f}" for x in e["per_seed"]) + "." if "per_seed" in e else "")),
              ""]
    if res["experiment"] == "extrapolate":
        per = ", ".join(f"T={t}: {r:.3f}" for t, r in res["r_star_per_budget"].items())
        lines += [f"R* of the seed means per budget: {per}. Secondary predictions of R* at T={res['predicted_steps']}: "
                  f"R_CMR(T) power law through the fitted budgets "
                  + (f"{res['r_star_cmr_power_law']:.3f}" if res["r_star_cmr_power_law"] is not None else "(no fit)")
                  + f"; persistence (R* at T={max(res['fit_steps'])}) {res['r_star_persistence']:.3f}.", ""]
    lines += ["| held-out R | dL_gen pred | mean | z | dL_dom pred | mean | z | pass |", "|---|---|---|---|---|---|---|---|"]
    for h in res["held_out"]:
        g, d = h["gen"], h["dom"]
        lines.append(f"| {h['ratio']:g} | {g['pred']:+.4f} | {g['mean']:+.4f} | {g['z']:+.1f} | {d['pred']:+.4f} | "
                     f"{d['mean']:+.4f} | {d['z']:+.1f} | {'yes' if g['pass'] and d['pass'] else 'no'} |")
    lines += ["", "Gates: " + ", ".join(f"{k} {'ok' if ok else 'FAILED'}" for k, ok in v["gates"].items()),
              (f"R* within ±{TOLERANCE}: {v['r_star_within_tolerance']}; every held-out dL within |z| <= {Z_MAX:g} or "
               f"{ABS_MAX} nats/byte: {v['held_out_dl_all_pass']}; outcome: **{v['outcome']}**")]
    return "\n".join(lines) + "\n"


def seeds_needed(seed_sd: float, slope_per_r: float, width: float = 2 * TOLERANCE) -> float:
    """Seeds for a 95% interval of R* no wider than ``width``: R* is where the seed mean of dL_gen crosses a
    level, so its interval is about 2 x 1.96 x (seed SD / sqrt(n)) / slope wide (the slope of dL_gen in R)."""
    if slope_per_r <= 0:
        return float("inf")
    return float((2 * 1.96 * seed_sd / (width * slope_per_r)) ** 2)


def power(exp: Experiment, res: dict[str, Any], t0: float, name: str = "power") -> dict[str, Any]:
    """The power pilot: per continuation schedule, the noise and slope of dL_gen over three ratios, and the seeds
    gate 3 would need (unpaired: the seed SD; paired by seed: the within-seed SD, if a reference shared the
    whole offset)."""
    q, out = exp.p[name], exp.out
    rows = []
    for lr, warmup, *opts in q["schedules"]:
        opt = opts[0] if opts else {}
        exp.use_schedule(lr, warmup, **opt)
        g = exp.grid(q["steps"], q["ratios"], q["seeds"])
        nz = noise(g)
        gen = g["gen_all"]
        slope = float((gen[-1] - gen[0]).mean() / (q["ratios"][-1] - q["ratios"][0]))
        rows.append({"lr": lr, "warmup_steps": warmup, "stratified": bool(opt.get("stratified")),
                     "batch_size": opt.get("batch_size", exp.p["batch_size"]),
                     "d_gen": gen.tolist(), "d_dom": g["dom_all"].tolist(),
                     "noise": nz, "slope_gen_per_r": slope,
                     "seeds_needed": seeds_needed(nz["seed_sd_gen"], slope),
                     "seeds_needed_paired": seeds_needed(nz["within_seed_sd_gen"], slope)})
    res[name] = {**q, "rows": rows, "wall_s": time.time() - t0}
    lines = [f"Power pilot: T = {q['steps']} steps, seeds {q['seeds']}, ratios {q['ratios']}; seeds needed for a 95% "
             f"interval of R* no wider than {2 * TOLERANCE:g} (gate 3).", "",
             "| peak lr | warmup | general stream | batch | " + " | ".join(f"dL_gen R={r:g} mean ± SD" for r in q["ratios"])
             + " | slope per unit R | seed SD | within-seed SD | seeds needed | if paired |",
             "|---|---|---|---|" + "---|" * len(q["ratios"]) + "---|---|---|---|---|"]
    for x in rows:
        gen = np.array(x["d_gen"])
        lines.append(f"| {x['lr']:g} | {x['warmup_steps']} | {'by source' if x['stratified'] else 'one domain'} | "
                     f"{x['batch_size']} | "
                     + " | ".join(f"{row.mean():+.4f} ± {row.std(ddof=1):.4f}" for row in gen)
                     + f" | {x['slope_gen_per_r']:+.4f} | {x['noise']['seed_sd_gen']:.4f} | "
                       f"{x['noise']['within_seed_sd_gen']:.4f} | {x['seeds_needed']:.0f} | {x['seeds_needed_paired']:.0f} |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    (out / f"results_{name}.json").write_text(json.dumps(res, indent=1, default=str))
    print("\n".join(lines), flush=True)
    return res


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "cmr")
    ap.add_argument("--experiment", choices=["critical", "extrapolate", "both", "pilot", "round2", "round3", "round4",
                                             "round5", "power", "power2"],
                    default="both")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--in-process", action=argparse.BooleanOptionalAction, default=True,
                    help="run the commands in this interpreter (default; ~100 training runs would each pay "
                         "a torch import otherwise) or one python per command")
    args = ap.parse_args(argv)
    p = PARAMS["quick" if args.quick else "full"]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    exp = Experiment(out, p, Commands(REPO, out / "commands.log", args.threads, args.in_process))
    t0 = time.time()
    res: dict[str, Any] = {"params": p, "prepare": exp.prepare()}
    if args.experiment == "pilot":
        rows = [{"steps": t, "ratio": r, **exp.cpt(t, r, PILOT["seed"])} for t, r in PILOT["points"]]
        lines = [f"Pilot (seed {PILOT['seed']}):", "", "| T (steps) | R | dL_gen | dL_dom |", "|---|---|---|---|"]
        lines += [f"| {x['steps']} | {x['ratio']:g} | {x['gen_all']:+.4f} | {x['dom_all']:+.4f} |" for x in rows]
        (out / "pilot.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return {"params": p, "pilot": rows}
    if args.experiment in ("power", "power2"):
        return power(exp, res, t0, args.experiment)
    if args.experiment in ("round2", "round3", "round4", "round5"):
        rnd = args.experiment
        if "schedule" in p[rnd]:
            lr, warmup, *opts = p[rnd]["schedule"]
            exp.use_schedule(lr, warmup, **(opts[0] if opts else {}))
        t1 = time.time()
        cal = eps_rule(exp, rnd)
        res["eps_rule"] = {**cal, "wall_s": time.time() - t1}
        print(f"{rnd} eps = {cal['eps']} (rule on seeds {cal['seeds']}: {cal['paired_gen_at_ratio']})", flush=True)
        r2 = {"seeds": p[rnd]["seeds"], "eps": cal["eps"], "paired": p[rnd]["paired"]}
        for name in p[rnd].get("experiments", ["critical", "extrapolate"]):
            t1 = time.time()
            if "eps_by_steps" in cal:
                scored = p["critical"]["steps"] if name == "critical" else max(p["extrapolate"]["steps"])
                r2 = {**r2, "eps": cal["eps_by_steps"][scored]}
                print(f"{rnd} {name}: eps = {r2['eps']} (calibration seeds at T = {scored})", flush=True)
            r = {"experiment": name, **(critical(exp, r2) if name == "critical" else extrapolate(exp, r2))}
            r["wall_s"] = time.time() - t1
            plot(r, out / f"cmr_{rnd}_{name}.png")
            res[name] = r
            print(table(r), flush=True)
        if rnd != "round2":
            res["wall_s"] = time.time() - t0
            (out / f"results_{rnd}.json").write_text(json.dumps(res, indent=1, default=str))
            (out / f"table_{rnd}.md").write_text(f"eps rule: {res['eps_rule']}\n\n"
                                                 + "".join(table(res[k]) + "\n" for k in ("critical", "extrapolate")
                                                           if k in res))
            return res
        checks = [reference_check(exp, t, [0.45, 0.6, 0.75], sd) for sd in (p["round2"]["calibration_seeds"], r2["seeds"])
                  for t in p["round2"]["eps_steps"]]
        res["reference_check"] = checks
        lines = ["Post hoc: does the R = 0 reference share each seed's offset? (dL_gen; seed SD unpaired / paired, "
                 "correlation over seeds with the reference)", "", "| seeds | T | R | SD unpaired | SD paired | corr |",
                 "|---|---|---|---|---|---|"]
        lines += [f"| {x['seeds'][0]}–{x['seeds'][-1]} | {x['steps']} | {r:g} | {a:.4f} | {b:.4f} | {c:+.2f} |"
                  for x in checks for r, a, b, c in zip(x["ratios"], x["sd_unpaired"], x["sd_paired"], x["corr_with_reference"])]
        print("\n".join(lines), flush=True)
        res["wall_s"] = time.time() - t0
        (out / "results_round2.json").write_text(json.dumps(res, indent=1, default=str))
        (out / "table_round2.md").write_text(f"eps rule: {res['eps_rule']}\n\n"
                                             + "".join(table(res[k]) + "\n" for k in ("critical", "extrapolate"))
                                             + "\n".join(lines) + "\n")
        return res
    for name in (["critical", "extrapolate"] if args.experiment == "both" else [args.experiment]):
        t1 = time.time()
        r = {"experiment": name, **(critical(exp) if name == "critical" else extrapolate(exp))}
        r["wall_s"] = time.time() - t1
        plot(r, out / f"cmr_{name}.png")
        res[name] = r
        print(table(r))
    res["wall_s"] = time.time() - t0
    (out / "results.json").write_text(json.dumps(res, indent=1, default=str))
    (out / "table.md").write_text("".join(table(res[k]) + "\n" for k in ("critical", "extrapolate") if k in res))
    return res


if __name__ == "__main__":
    main()
