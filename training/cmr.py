"""Critical Mixture Ratio (CMR) law for continual pre-training (docs/methods.md, CMR law; treat the paper's numbers
as unverified, the functional forms and the definition are what matter).

    train cmr sweep training/configs/cpt_general_domain.yaml --general python_docs \
        --domain license --ratios 0.125,0.25,0.5,0.75 --out runs/cmr-sweep
    train cmr fit runs/cmr-sweep/r* --general python_docs --domain license --out runs/cmr-fit.json
    train cmr predict runs/cmr-fit.json --tokens 2000000 --mixture runs/mixture.yaml

Per mixture ratio R (domain share), loss changes from the start of continual pre-training, with T in
``token_unit`` tokens:
    dL_dom(T) = a1 * T**s1 + b1                  (falls)
    dL_gen(T) = a2 * T**s2 + a3 * T**s3 + b2     (rises, then partly recovers)
R is feasible at T when dL_gen(T) <= eps and dL_dom(T) < 0; the critical ratio R_CMR(T) is the
largest feasible R (linear interpolation of dL_gen between measured ratios), and
    R_CMR(T) = a4 * T**s4 + b3
is fitted over T and extrapolated to the target budget.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def dom_curve(t: np.ndarray, a1: float, s1: float, b1: float) -> np.ndarray:
    return a1 * np.power(t, s1) + b1


def gen_curve(t: np.ndarray, a2: float, s2: float, a3: float, s3: float, b2: float) -> np.ndarray:
    return a2 * np.power(t, s2) + a3 * np.power(t, s3) + b2


def cmr_curve(t: np.ndarray, a4: float, s4: float, b3: float) -> np.ndarray:
    return a4 * np.power(t, s4) + b3


def _fit(fn: Callable[..., np.ndarray], t: np.ndarray, y: np.ndarray, starts: Sequence[Sequence[float]]) -> list[float]:
    """Least squares from several starting points; the best fit wins (power laws have local minima)."""
    from scipy.optimize import curve_fit

    n_params = len(starts[0])
    if len(y) < n_params:  # scipy would raise a bare TypeError; say what the run lacks instead
        raise ValueError(f"{len(y)} evaluation points after step 0, but the curve has {n_params} parameters: "
                         f"evaluate more often (eval_every) or train for more steps")
    best, best_err = None, math.inf
    for p0 in starts:
        try:
            params, _ = curve_fit(fn, t, y, p0=list(p0), maxfev=20000)
        except (RuntimeError, ValueError, FloatingPointError):
            continue
        err = float(np.mean((fn(t, *params) - y) ** 2))
        if np.all(np.isfinite(params)) and err < best_err:
            best, best_err = params, err
    if best is None:
        raise ValueError("curve fit failed from every starting point")
    return [float(p) for p in best]


def fit_dom(t: np.ndarray, dl: np.ndarray) -> list[float]:
    return _fit(dom_curve, t, dl, [(-0.5, 0.3, 0.0), (-1.0, 0.5, 0.0), (-0.1, 0.1, 0.0), (0.5, -0.3, -0.5)])


def fit_gen(t: np.ndarray, dl: np.ndarray) -> list[float]:
    return _fit(gen_curve, t, dl, [(0.5, 0.2, -0.2, 0.5, 0.0), (1.0, 0.1, -0.5, 0.4, 0.0), (0.2, 0.5, -0.05, 1.0, 0.0),
                                   (0.1, -0.3, 0.01, 0.5, 0.0), (0.1, -0.5, -0.01, 0.2, 0.0)])


def critical_ratio(t: float, ratios: Sequence[float], gen_fits: Sequence[list[float]], dom_fits: Sequence[list[float]],
                   eps: float) -> float:
    """Largest R whose fitted general-loss increase at ``t`` stays within ``eps`` (and whose domain
    loss falls); between two measured ratios the crossing is interpolated linearly. 0 if none."""
    g = [gen_curve(np.array([t]), *p)[0] for p in gen_fits]
    d = [dom_curve(np.array([t]), *p)[0] for p in dom_fits]
    return crossing(ratios, g, d, eps)


def crossing(ratios: Sequence[float], d_gen: Sequence[float], d_dom: Sequence[float], eps: float) -> float:
    """Largest R with ``d_gen <= eps`` and ``d_dom < 0`` among ``ratios`` (any order), the ``eps``
    crossing interpolated linearly between the last feasible ratio and the next one. 0 if none is
    feasible; the largest ratio if it is (then R* is only known to be at least that: censored)."""
    order = np.argsort(ratios)
    rs = np.asarray(ratios, dtype=float)[order]
    g = np.asarray(d_gen, dtype=float)[order]
    d = np.asarray(d_dom, dtype=float)[order]
    ok = (g <= eps) & (d < 0)
    if not ok.any():
        return 0.0
    k = int(np.flatnonzero(ok).max())
    if k == len(rs) - 1 or g[k + 1] <= eps:
        return float(rs[k])
    # g crosses eps between rs[k] (feasible) and rs[k+1] (infeasible)
    return float(rs[k] + (eps - g[k]) * (rs[k + 1] - rs[k]) / (g[k + 1] - g[k]))


def empirical_critical_ratio(ratios: Sequence[float], d_gen: np.ndarray, d_dom: np.ndarray, eps: float,
                             n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """R* from measured loss changes, ``d_gen``/``d_dom`` shaped (ratios, seeds): ``crossing`` of the
    seed means, and a percentile bootstrap 95% interval resampling the seeds of each ratio with
    replacement (independently per ratio: every run is its own seed draw)."""
    g, d = np.asarray(d_gen, dtype=float), np.asarray(d_dom, dtype=float)
    point = crossing(ratios, g.mean(axis=1), d.mean(axis=1), eps)
    rng = np.random.default_rng(seed)
    n_r, n_s = g.shape
    boots = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n_s, size=(n_r, n_s))
        boots[b] = crossing(ratios, np.take_along_axis(g, idx, 1).mean(1), np.take_along_axis(d, idx, 1).mean(1), eps)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"r_star": point, "ci_low": float(lo), "ci_high": float(hi)}


def paired_changes(runs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Loss changes relative to a paired reference: ``runs`` shaped (ratios, seeds) minus ``reference``
    shaped (seeds,) or (1, seeds), the same seed's reference run (e.g. R = 0 at the same budget), so an
    offset that a seed shares between its runs and its reference cancels."""
    runs, ref = np.asarray(runs, dtype=float), np.asarray(reference, dtype=float).reshape(1, -1)
    if runs.ndim != 2 or runs.shape[1] != ref.shape[1]:
        raise ValueError(f"runs {runs.shape} and reference {ref.shape[1:]} must have the same seeds (columns)")
    return runs - ref


def paired_critical_ratio(ratios: Sequence[float], d_gen: np.ndarray, d_dom: np.ndarray, eps: float,
                          n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """R* from paired loss changes shaped (ratios, seeds), where column s is one seed's own sweep (its
    runs share that seed's offset, or the offset was removed by ``paired_changes``): ``crossing`` of
    the seed means; each seed's own crossing; a percentile bootstrap 95% interval that resamples whole
    seeds (columns) with replacement, keeping each seed's sweep together (unlike
    ``empirical_critical_ratio``, which resamples every ratio's seeds independently)."""
    g, d = np.asarray(d_gen, dtype=float), np.asarray(d_dom, dtype=float)
    point = crossing(ratios, g.mean(axis=1), d.mean(axis=1), eps)
    per_seed = [crossing(ratios, g[:, j], d[:, j], eps) for j in range(g.shape[1])]
    rng = np.random.default_rng(seed)
    n_s = g.shape[1]
    boots = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n_s, size=n_s)
        boots[b] = crossing(ratios, g[:, idx].mean(1), d[:, idx].mean(1), eps)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"r_star": point, "ci_low": float(lo), "ci_high": float(hi), "per_seed": per_seed}


def dml_curve(r: np.ndarray, c: float, k: float, t: float) -> np.ndarray:
    """Data-Mixing-Laws form of a loss (change) against the domain share R at a fixed budget."""
    return c + k * np.exp(t * r)


def fit_dml(r: np.ndarray, y: np.ndarray) -> list[float]:
    """``dml_curve`` through seed means at several ratios (3 parameters: needs >= 3 ratios)."""
    return _fit(dml_curve, np.asarray(r, float), np.asarray(y, float),
                [(0.0, 0.01, 3.0), (0.0, -0.01, 3.0), (0.0, 0.1, -1.0), (0.0, -0.1, -1.0), (0.1, 0.001, 6.0)])


def joint_gen_curve(rt: np.ndarray, k: float, tau: float, s2: float, a3: float, s3: float, b2: float) -> np.ndarray:
    """The law's dL_gen(T) = a2 T^s2 + a3 T^s3 + b2 over (R, T), ``rt`` = [R, T]: the rising term's
    amplitude is Data-Mixing-Laws-like in R, a2 = k exp(tau R); a3, b2 and the exponents are shared.
    Amplitudes linear in R would be unidentifiable from three budgets: at each T the surface would
    be a line in R (two numbers per budget, six in all, for seven parameters)."""
    r, t = rt
    return k * np.exp(tau * r) * np.power(t, s2) + a3 * np.power(t, s3) + b2


def joint_dom_curve(rt: np.ndarray, a0: float, a1: float, s1: float, b1: float) -> np.ndarray:
    """The law's dL_dom(T) = a1 T^s1 + b1 with the amplitude linear in R, exponent shared."""
    r, t = rt
    return (a0 + a1 * r) * np.power(t, s1) + b1


def fit_joint(r: np.ndarray, t: np.ndarray, d_gen: np.ndarray, d_dom: np.ndarray) -> dict[str, list[float]]:
    """Both joint surfaces fitted to loss changes at points (R, T) (seed means: one value per point)."""
    rt = np.vstack([np.asarray(r, float), np.asarray(t, float)])
    # exponents over a small grid of starts: the two power terms trade off, and one start finds a local minimum
    starts = [(k, tau, s2, a3, s3, 0.0) for k, tau in ((0.002, 4.0), (0.01, 2.0), (0.0005, 6.0))
              for s2 in (0.2, 0.5) for a3, s3 in ((-0.02, 0.8), (-0.02, 1.5), (0.02, -0.3))]
    gen = _fit(joint_gen_curve, rt, np.asarray(d_gen, float), starts)  # type: ignore[arg-type]
    dom = _fit(joint_dom_curve, rt, np.asarray(d_dom, float),  # type: ignore[arg-type]
               [(-0.1, -0.2, 0.3, 0.0), (-0.5, -0.5, 0.1, 0.0), (0.1, 0.2, -0.3, -0.5)])
    return {"gen": gen, "dom": dom}


def critical_ratio_of(gen: Callable[[np.ndarray], np.ndarray], dom: Callable[[np.ndarray], np.ndarray],
                      r_min: float, r_max: float, eps: float, step: float = 0.001) -> float:
    """``crossing`` of predicted curves over a fine grid of R in [r_min, r_max] (no extrapolation in R)."""
    grid = np.linspace(r_min, r_max, round((r_max - r_min) / step) + 1)  # ends exactly at r_max
    return crossing(grid, gen(grid), dom(grid), eps)


@dataclass
class CMRFit:
    ratios: list[float]
    dom: list[list[float]]
    gen: list[list[float]]
    cmr: list[float]
    eps: float
    token_unit: float
    t_max: float
    grid: list[tuple[float, float]]
    general: str = "general"
    domain: str = "domain"

    def predict(self, tokens: float) -> tuple[float, bool]:
        """(critical ratio at this many tokens, whether that is an extrapolation beyond the runs)."""
        t = tokens / self.token_unit
        r = float(cmr_curve(np.array([t]), *self.cmr)[0])
        return min(1.0, max(0.0, r)), t > self.t_max


def fit_cmr(curves: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]], eps: float, token_unit: float,
            general: str = "general", domain: str = "domain") -> CMRFit:
    """``curves``: ratio -> (T, dL_gen, dL_dom), T already in ``token_unit`` units."""
    ratios = sorted(curves)
    gen, dom = [], []
    for r in ratios:
        try:
            gen.append(fit_gen(*curves[r][:2]))
            dom.append(fit_dom(curves[r][0], curves[r][2]))
        except ValueError as exc:
            raise ValueError(f"CMR fit at ratio R={r:g}: {exc}") from None
    t_min = max(float(curves[r][0].min()) for r in ratios)
    t_max = min(float(curves[r][0].max()) for r in ratios)
    grid_t = np.linspace(t_min, t_max, 25)
    grid_r = np.array([critical_ratio(float(t), ratios, gen, dom, eps) for t in grid_t])
    cmr = _fit(cmr_curve, grid_t, grid_r, [(0.1, 0.3, 0.0), (0.5, 0.1, 0.0), (-0.5, -0.5, 0.5)])
    return CMRFit(ratios=ratios, dom=dom, gen=gen, cmr=cmr, eps=eps, token_unit=token_unit, t_max=t_max,
                  grid=[(float(t), float(r)) for t, r in zip(grid_t, grid_r)], general=general, domain=domain)


def loss_changes_at(fit: CMRFit, ratio: float, tokens: float) -> dict[str, float]:
    """Predicted ``(dL_gen, dL_dom)`` after ``tokens`` at a domain share ``ratio`` not (necessarily) run.

    The law is fitted per measured ratio; at another ratio both fitted curves are evaluated at T and
    interpolated linearly in R between the two nearest measured ratios (extrapolated from the two
    nearest at either end): a heuristic with no form in R. To predict a ratio that was not run, fit an
    explicit form in R instead (``fit_dml`` at one budget, ``fit_joint`` over (R, T)), as
    benchmarks/cmr_holdout.py does."""
    t = np.array([tokens / fit.token_unit])
    rs = np.asarray(fit.ratios, dtype=float)
    if len(rs) < 2:
        raise ValueError("loss_changes_at needs a fit over at least two ratios")
    g = np.array([gen_curve(t, *p)[0] for p in fit.gen])
    d = np.array([dom_curve(t, *p)[0] for p in fit.dom])
    k = int(np.clip(np.searchsorted(rs, ratio) - 1, 0, len(rs) - 2))
    w = (ratio - rs[k]) / (rs[k + 1] - rs[k])
    return {"ratio": float(ratio), "tokens": float(tokens), "extrapolated": bool(t[0] > fit.t_max),
            "d_general": float(g[k] + w * (g[k + 1] - g[k])), "d_domain": float(d[k] + w * (d[k + 1] - d[k]))}


def load_fit(path: Path) -> CMRFit:
    data: dict[str, Any] = json.loads(Path(path).read_text())
    return CMRFit(**{**data, "grid": [tuple(g) for g in data["grid"]]})


def curves_from_log(log: Path, general: str, domain: str, token_unit: float) -> tuple[float, tuple[np.ndarray, ...]]:
    """(R, (T, dL_gen, dL_dom)) from a training log.jsonl whose first record holds the config."""
    records = [json.loads(line) for line in log.read_text().splitlines()]
    ratios = records[0]["config"]["data"]["ratios"]
    r = ratios.get(domain, 0.0) / sum(ratios.values())
    evals = [(rec["tokens"], rec["eval"]) for rec in records[1:] if "eval" in rec]
    base = next((e for tok, e in evals if tok == 0), None)
    if base is None:
        raise ValueError(f"{log}: no step-0 evaluation to measure loss changes from")
    pts = [(tok / token_unit, e[general] - base[general], e[domain] - base[domain]) for tok, e in evals if tok > 0]
    t, g, d = (np.array(x) for x in zip(*pts))
    return r, (t, g, d)


def plot(fit: CMRFit, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.array([p[0] for p in fit.grid])
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for r, g in zip(fit.ratios, fit.gen):
        ax[0].plot(t, gen_curve(t, *g), label=f"R={r:g}")
    ax[0].axhline(fit.eps, color="k", ls="--", label="eps")
    ax[0].set(xlabel=f"T ({fit.token_unit:g} tokens)", ylabel="general loss change", title="dL_gen per ratio")
    ax[0].legend()
    ax[1].plot(t, [p[1] for p in fit.grid], "o", label="critical ratio (from fits)")
    ax[1].plot(t, cmr_curve(t, *fit.cmr), "-", label="R_CMR(T) power law")
    ax[1].set(xlabel=f"T ({fit.token_unit:g} tokens)", ylabel="R", title="critical mixture ratio")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def sweep(config: Path, general: str, domain: str, ratios: Sequence[float], out: Path,
          overrides: Sequence[str] = ()) -> None:
    """Train one continual pre-training run per domain share R into ``out/r{R}``."""
    for r in ratios:
        mix = json.dumps({general: 1 - r, domain: r})
        cmd = [sys.executable, "-m", "training.cli", "run", str(config), "-o", f"out_dir={out}/r{r:g}",
               "-o", f"data.ratios={mix}"] + [x for o in overrides for x in ("-o", o)]
        subprocess.run(cmd, check=True)


def fit_runs(runs: Sequence[Path], general: str, domain: str, eps: float, token_unit: float,
             out: Path) -> dict[str, Any]:
    """Fit the law from the runs' ``log.jsonl``; write the fit to ``out`` and its plot next to it."""
    curves = {}
    for run in runs:
        r, c = curves_from_log(run / "log.jsonl", general, domain, token_unit)
        curves[r] = c
    fit = fit_cmr(curves, eps, token_unit, general, domain)
    out.write_text(json.dumps(fit.__dict__, indent=1))
    plot(fit, out.with_suffix(".png"))
    return {"ratios": fit.ratios, "cmr": fit.cmr, "grid": fit.grid[:: max(1, len(fit.grid) // 5)],
            "plot": str(out.with_suffix(".png"))}


def predict(fit_path: Path, tokens: float, mixture: Path | None = None, ratio: float | None = None) -> dict[str, Any]:
    """The critical ratio at ``tokens``; with ``mixture``, also write it as a ``data.ratios_file``;
    with ``ratio``, also the predicted loss changes at that domain share (``loss_changes_at``)."""
    fit = load_fit(fit_path)
    r, extrapolated = fit.predict(tokens)
    if mixture:
        mixture.write_text(json.dumps({"ratios": {fit.general: round(1 - r, 6), fit.domain: round(r, 6)}}) + "\n")
    out: dict[str, Any] = {"tokens": tokens, "critical_ratio": r, "extrapolated": extrapolated,
                           "at_critical": loss_changes_at(fit, r, tokens)}
    if ratio is not None:
        out["at_ratio"] = loss_changes_at(fit, ratio, tokens)
    return out
