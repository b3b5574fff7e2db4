"""CMR law: recover a known critical ratio from synthetic curves; a real (tiny) sweep fits and plots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import REPO
from training.cmr import critical_ratio, dom_curve, fit_cmr, fit_dom, fit_gen, gen_curve


def test_curve_fits_recover_their_parameters() -> None:
    t = np.linspace(1, 100, 60)
    dom = dom_curve(t, -0.4, 0.35, 0.02)
    assert np.allclose(dom_curve(t, *fit_dom(t, dom)), dom, atol=1e-6)
    gen = gen_curve(t, 0.6, 0.2, -0.45, 0.3, 0.0)  # rises, then falls back
    assert np.allclose(gen_curve(t, *fit_gen(t, gen)), gen, atol=1e-4)


def test_critical_ratio_recovered_within_5_percent() -> None:
    # Ground truth: dL_gen(R, T) = k R T^-0.3 (the early rise fades), dL_dom = -0.5 R T^0.4.
    # Feasible iff k R T^-0.3 <= eps, so R_CMR(T) = (eps / k) T^0.3 exactly.
    k, eps = 0.2, 0.05
    rng = np.random.default_rng(0)
    t = np.linspace(1, 50, 40)
    ratios = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    curves = {r: (t, k * r * t ** -0.3 + rng.normal(0, 1e-4, len(t)), -0.5 * r * t ** 0.4) for r in ratios}
    fit = fit_cmr(curves, eps, token_unit=2e8)
    for tokens in (5 * 2e8, 20 * 2e8, 40 * 2e8):
        truth = eps / k * (tokens / 2e8) ** 0.3
        got, extrapolated = fit.predict(tokens)
        assert abs(got - truth) / truth < 0.05 and not extrapolated, (tokens, got, truth)
    assert fit.predict(60 * 2e8)[1]  # beyond the runs: flagged as extrapolation
    assert critical_ratio(10.0, [0.1, 0.2], [[1.0, 0.0, 0.0, 0.0, 0.0]] * 2, [[-1.0, 0.0, 0.0]] * 2, eps) == 0.0


@pytest.mark.slow
def test_real_sweep_on_cpu_fits_a_ratio_and_plots(quickstart_run: Path, tmp_path: Path) -> None:
    cfg = yaml.safe_load((REPO / "training" / "configs" / "tiny.yaml").read_text())
    cfg["data"].update(runs=[str(quickstart_run)], seq_len=64, batch_size=8, ratios={"python_docs": 1.0})
    cfg.update(steps=80, eval_every=8, eval_batches=2, checkpoint_every=80, out_dir=str(tmp_path / "general"))
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    run = lambda *a: subprocess.run([sys.executable, *a], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)  # noqa: E731
    r = run("-m", "training.cli", "run", str(base))
    assert r.returncode == 0, r.stderr[-2000:]
    cfg.update(init_from=str(tmp_path / "general" / "checkpoint.pt"), steps=48, schedule={"kind": "wsd", "lr": 2e-3, "warmup_steps": 4})
    cpt = tmp_path / "cpt.yaml"
    cpt.write_text(yaml.safe_dump(cfg))
    r = run("-m", "training.cli", "cmr", "sweep", str(cpt), "--general", "python_docs", "--domain", "license",
            "--ratios", "0.125,0.25,0.5,0.75", "--out", str(tmp_path / "sweep"))
    assert r.returncode == 0, r.stderr[-2000:]
    runs = sorted(str(p) for p in (tmp_path / "sweep").iterdir())
    r = run("-m", "training.cli", "cmr", "fit", *runs, "--general", "python_docs", "--domain", "license", "--eps", "0.05",
            "--token-unit", "1000", "--out", str(tmp_path / "fit.json"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "fit.png").stat().st_size > 10_000
    r = run("-m", "training.cli", "cmr", "predict", str(tmp_path / "fit.json"), "--tokens", "30000", "--mixture",
            str(tmp_path / "mix.json"))  # the `train` console script's entry point
    pred = json.loads(r.stdout)
    assert 0.0 <= pred["critical_ratio"] <= 1.0
    mix = json.loads((tmp_path / "mix.json").read_text())["ratios"]
    assert set(mix) == {"python_docs", "license"} and abs(sum(mix.values()) - 1) < 1e-6
    from training.data.loader import LoaderConfig, MixtureLoader

    loader = MixtureLoader(LoaderConfig(runs=[str(quickstart_run)], ratios_file=str(tmp_path / "mix.json")))
    assert loader.cfg.ratios == mix  # the mixture file is what the loader takes


def test_loss_changes_at_a_held_out_ratio_interpolate_the_fits(tmp_path: Path) -> None:
    # dL_gen = k R T^-0.3 and dL_dom = -0.5 R T^0.4 are linear in R: leaving a ratio out and
    # predicting it from the others' fits must recover it (inside and beyond the measured range).
    from training.cmr import loss_changes_at, predict

    k, t = 0.2, np.linspace(1, 50, 40)
    ratios = [0.1, 0.3, 0.5, 0.7, 0.9]
    for held in ratios:
        fit = fit_cmr({r: (t, k * r * t ** -0.3, -0.5 * r * t ** 0.4) for r in ratios if r != held}, 0.05, 2e8)
        got = loss_changes_at(fit, held, 30 * 2e8)
        assert got["d_general"] == pytest.approx(k * held * 30 ** -0.3, rel=0.02), held
        assert got["d_domain"] == pytest.approx(-0.5 * held * 30 ** 0.4, rel=0.02), held
    (tmp_path / "fit.json").write_text(json.dumps(fit.__dict__))
    out = predict(tmp_path / "fit.json", 30 * 2e8, ratio=0.5)
    assert out["at_ratio"]["d_general"] == pytest.approx(k * 0.5 * 30 ** -0.3, rel=0.02)
    assert out["at_critical"]["ratio"] == out["critical_ratio"]


def test_too_few_evaluation_points_is_a_clear_error() -> None:
    # dL_gen has 5 parameters: a run evaluated 4 times after step 0 cannot fit it; scipy's own
    # complaint is a bare TypeError, the fit must say which ratio and what to change.
    t = np.array([1.0, 2.0, 3.0, 4.0])
    curves = {r: (t, 0.1 * r * t ** -0.3, -0.5 * r * t ** 0.4) for r in (0.2, 0.5)}
    with pytest.raises(ValueError, match=r"R=0.2: 4 evaluation points .* 5 parameters.*eval_every"):
        fit_cmr(curves, 0.05, 2e8)


def test_crossing_interpolates_and_reports_the_grid_edges() -> None:
    from training.cmr import crossing

    dom = [-0.1, -0.1, -0.1]
    # feasible at 0.4 and 0.5, infeasible at 0.6: eps 0.06 is crossed halfway between 0.04 and 0.08
    assert crossing([0.6, 0.4, 0.5], [0.08, 0.0, 0.04], [-0.1, -0.1, -0.1], 0.06) == pytest.approx(0.55)
    assert crossing([0.4, 0.5, 0.6], [0.0, 0.01, 0.02], dom, 0.06) == 0.6  # all feasible: the top ratio (censored)
    assert crossing([0.4, 0.5, 0.6], [0.1, 0.2, 0.3], dom, 0.06) == 0.0  # none feasible
    # a domain loss that does not fall makes the ratio infeasible whatever dL_gen does
    assert crossing([0.4, 0.5, 0.6], [0.0, 0.01, 0.02], [-0.1, -0.1, 0.01], 0.06) == 0.5


def test_empirical_critical_ratio_and_its_bootstrap_interval() -> None:
    from training.cmr import empirical_critical_ratio

    ratios = [0.4, 0.5, 0.6]
    gen = np.array([[0.0] * 3, [0.04] * 3, [0.08] * 3])  # identical seeds: the interval collapses onto the point
    got = empirical_critical_ratio(ratios, gen, -np.ones_like(gen), 0.06, n_boot=200)
    assert got == pytest.approx({"r_star": 0.55, "ci_low": 0.55, "ci_high": 0.55})
    # seeds +-0.01 around the same means: the point is unchanged, the interval brackets it and widens
    noisy = gen + np.array([-0.01, 0.0, 0.01])
    got = empirical_critical_ratio(ratios, noisy, -np.ones_like(gen), 0.06, n_boot=500)
    assert got["r_star"] == pytest.approx(0.55)
    assert 0.5 <= got["ci_low"] < 0.55 < got["ci_high"] <= 0.6
    assert got == empirical_critical_ratio(ratios, noisy, -np.ones_like(gen), 0.06, n_boot=500)  # seeded


def test_dml_form_predicts_a_ratio_it_was_not_fitted_on() -> None:
    from training.cmr import critical_ratio_of, dml_curve, fit_dml

    fitted = np.array([0.45, 0.55, 0.65, 0.75])
    params = fitted, dml_curve(fitted, 0.01, 0.002, 5.0)
    c, k, t = fit_dml(*params)
    assert dml_curve(np.array([0.6]), c, k, t)[0] == pytest.approx(0.01 + 0.002 * np.exp(3.0), abs=1e-6)
    # R* where 0.01 + 0.002 exp(5R) = 0.07: R = ln(30) / 5 = 0.6802
    r = critical_ratio_of(lambda x: dml_curve(x, c, k, t), lambda x: -np.ones_like(x), 0.45, 0.75, 0.07)
    assert r == pytest.approx(np.log(30) / 5, abs=1e-3)


def test_joint_law_fitted_on_short_budgets_extrapolates_an_exact_surface() -> None:
    from training.cmr import fit_joint, joint_dom_curve, joint_gen_curve

    gen_true, dom_true = (0.002, 4.0, 0.3, -0.015, 0.9, 0.035), (-0.05, -0.15, 0.35, 0.0)
    r, t = np.meshgrid([0.45, 0.525, 0.6, 0.675, 0.75], [0.5, 1.0, 2.0])
    rt = np.vstack([r.ravel(), t.ravel()])
    fits = fit_joint(rt[0], rt[1], joint_gen_curve(rt, *gen_true), joint_dom_curve(rt, *dom_true))
    at4 = np.vstack([[0.45, 0.75], [4.0, 4.0]])  # twice the longest fitted budget
    assert joint_gen_curve(at4, *fits["gen"]) == pytest.approx(joint_gen_curve(at4, *gen_true), abs=1e-4)
    assert joint_dom_curve(at4, *fits["dom"]) == pytest.approx(joint_dom_curve(at4, *dom_true), abs=1e-5)


def test_paired_changes_remove_a_per_seed_offset() -> None:
    from training.cmr import paired_changes

    effect = np.array([[0.01], [0.03], [0.05]])  # the ratios' true effect
    offset = np.array([0.0, 0.04, -0.02])  # shared by every run of a seed and by its reference
    runs, ref = effect + offset + 0.1, offset + 0.1
    assert paired_changes(runs, ref) == pytest.approx(np.repeat(effect, 3, axis=1))
    with pytest.raises(ValueError, match="same seeds"):
        paired_changes(runs, ref[:2])


def test_paired_critical_ratio_resamples_whole_seeds() -> None:
    from training.cmr import paired_critical_ratio

    ratios = [0.4, 0.5, 0.6]
    dom = -np.ones((3, 3))
    # seed j's sweep is 0, 0.04, 0.08 shifted by its offset (-0.01, 0, +0.01): seed crossings of eps 0.06 at
    # 0.575, 0.55, 0.525; the mean sweep crosses at 0.55
    gen = np.array([[0.0], [0.04], [0.08]]) + np.array([-0.01, 0.0, 0.01])
    got = paired_critical_ratio(ratios, gen, dom, 0.06, n_boot=500)
    assert got["r_star"] == pytest.approx(0.55)
    assert got["per_seed"] == pytest.approx([0.575, 0.55, 0.525])
    # a resample of whole seeds is a mean of three of them: its crossing stays within the seeds' extremes
    assert 0.525 - 1e-12 <= got["ci_low"] < 0.55 < got["ci_high"] <= 0.575 + 1e-12
    # identical seeds: the interval collapses onto the point
    flat = np.repeat(np.array([[0.0], [0.04], [0.08]]), 3, axis=1)
    got = paired_critical_ratio(ratios, flat, dom, 0.06, n_boot=100)
    assert [got["r_star"], got["ci_low"], got["ci_high"], *got["per_seed"]] == pytest.approx([0.55] * 6)
