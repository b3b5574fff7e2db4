"""Statistics of a pre-registered data-selection experiment.

Design: each *arm* (a data-selection method) yields a matrix of target losses shaped
``(selections, seeds)``. Each row is one independent selection (e.g. one of 3 random subsets, or the
output of one of 3 fastText scorers); every selection is trained with the same list of seeds, and seed
``j`` uses the same model init and data order in every arm, so the columns are paired across arms.
Lower loss is better, so a contrast ``mean(X) - mean(random) < 0`` means X teaches better.

Two sources of noise matter and both are resampled: which seeds were run (shared by the arms, so it
mostly cancels in a paired contrast) and which selection an arm happened to produce (independent per
arm, and it does not cancel). A bootstrap over seeds alone would ignore the second and overstate the
evidence whenever the selections of an arm disagree.

Everything here is numpy/scipy and deterministic given ``seed``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

# Bound the per-chunk working set of the bootstrap (replicates x max(rows, seeds) cells), so that large
# inputs do not allocate n_boot-sized matrices at once.
_CHUNK_CELLS = 1 << 21


def _as_matrix(a: np.ndarray | Sequence[float], name: str) -> np.ndarray:
    m = np.asarray(a, dtype=float)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
        raise ValueError(f"{name} must be a non-empty (selections, seeds) matrix or a 1-D vector, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        # A missing run must be handled explicitly (rerun or drop the seed in every arm), not averaged around.
        raise ValueError(f"{name} contains non-finite losses")
    return m


def _resample_counts(rng: np.random.Generator, reps: int, size: int) -> np.ndarray:
    """How often each of ``size`` items is drawn in each of ``reps`` resamples with replacement."""
    if size == 1:
        return np.ones((reps, 1))
    idx = rng.integers(0, size, size=(reps, size))
    flat = idx + (np.arange(reps) * size)[:, None]
    return np.bincount(flat.ravel(), minlength=reps * size).reshape(reps, size).astype(float)


def _bootstrap_means(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Replicates of mean(x*) - mean(y*) under the hierarchical paired resampling of :func:`hierarchical_diff`.

    A replicate's mean over resampled rows r and columns c, sum_ij x[r_i, c_j] / (sx n), equals
    (row counts) @ x @ (column counts) / (sx n), so each replicate costs one small matrix product.
    """
    sx, n = x.shape
    sy = y.shape[0]
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // max(sx, sy, n))
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        reps = min(chunk, n_boot - start)
        wc = _resample_counts(rng, reps, n)  # the same seeds for both arms: the pairing
        wx = _resample_counts(rng, reps, sx)
        wy = _resample_counts(rng, reps, sy)
        mx = ((wx @ x) * wc).sum(axis=1) / (sx * n)
        my = ((wy @ y) * wc).sum(axis=1) / (sy * n)
        out[start:start + reps] = mx - my
    return out


def hierarchical_diff(
    x: np.ndarray, y: np.ndarray, n_boot: int = 10000, seed: int = 0
) -> dict[str, float | list[float]]:
    """Contrast ``mean(x) - mean(y)`` of two arms with a hierarchical paired bootstrap.

    ``x`` is ``(sx, n)`` and ``y`` is ``(sy, n)``: rows are selections, columns are seeds, column ``j``
    of both arms was trained with the same seed. A 1-D input is one selection. Each bootstrap replicate
    resamples the seed columns with replacement (the same resampled columns for ``x`` and ``y``, so a
    seed effect shared by the arms cancels), and independently resamples the rows of ``x`` and the rows
    of ``y`` with replacement (selection-to-selection variation does not cancel). With one row per arm
    the row step is a no-op and this is a paired bootstrap over seeds.

    Returns:
        diff: the point estimate ``mean(x) - mean(y)`` (negative: x has the lower loss).
        se: the standard deviation of the bootstrap replicates, the standard error of ``diff``.
        ci95, ci90: percentile intervals ``[lo, hi]`` of the replicates (2.5/97.5 and 5/95 percentiles).
        n_seeds, n_sel_x, n_sel_y: ``n``, ``sx`` and ``sy``.

    With few selections the interval is too narrow: resampling 3 rows reproduces only about 2/3 of
    the between-selection variance and takes few distinct values, so when selection-to-selection
    variation dominates, a nominal 95% CI covers a null effect only about 80% of the time (about 93%
    with 10 selections, or when seed-level noise dominates). The A/A contrast (:func:`aa_contrast`)
    and the A/A gate in :func:`decide` are the empirical check of its width.
    """
    xm = _as_matrix(x, "x")
    ym = _as_matrix(y, "y")
    if xm.shape[1] != ym.shape[1]:
        raise ValueError(f"x and y must have the same seeds (columns): {xm.shape[1]} != {ym.shape[1]}")
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    reps = _bootstrap_means(xm, ym, n_boot, seed)
    lo95, lo90, hi90, hi95 = np.quantile(reps, [0.025, 0.05, 0.95, 0.975])
    return {
        "diff": float(xm.mean() - ym.mean()),
        "se": float(reps.std(ddof=1)) if n_boot > 1 else 0.0,
        "ci95": [float(lo95), float(hi95)],
        "ci90": [float(lo90), float(hi90)],
        "n_seeds": int(xm.shape[1]),
        "n_sel_x": int(xm.shape[0]),
        "n_sel_y": int(ym.shape[0]),
    }


def aa_contrast(random: np.ndarray, n_boot: int = 10000, seed: int = 0) -> dict:
    """The A/A contrast: random selections against random selections, which should be null.

    ``random`` is the random arm's ``(selections, seeds)`` matrix with at least 2 rows. Returns
    :func:`hierarchical_diff` of the first ``rows // 2`` selections against the rest, plus
    ``covers_zero`` (whether its 95% CI contains 0). Its CI half-width is the spread two arms show
    when nothing but the selection draw differs; a claimed effect must exceed it (:func:`decide`).
    """
    m = _as_matrix(random, "random")
    if m.shape[0] < 2:
        raise ValueError("the A/A contrast needs at least 2 random selections (rows)")
    k = m.shape[0] // 2
    out: dict = dict(hierarchical_diff(m[:k], m[k:], n_boot=n_boot, seed=seed))
    lo, hi = out["ci95"]
    out["covers_zero"] = bool(lo <= 0.0 <= hi)
    return out


def min_detectable_difference(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference a two-sided test at level ``alpha`` detects with probability ``power``.

    ``(z_{1-alpha/2} + z_{power}) * se``, about ``2.80 * se`` at the defaults: with a contrast standard
    error ``se``, effects smaller than this are likely to come out inconclusive.
    """
    if se < 0:
        raise ValueError("se must be >= 0")
    return float((stats.norm.ppf(1.0 - alpha / 2.0) + stats.norm.ppf(power)) * se)


def equivalent(ci90: Sequence[float], margin: float) -> bool:
    """Two one-sided tests (TOST) at 5%: True when the whole 90% CI lies inside ``(-margin, +margin)``.

    True means the difference is shown to be smaller than ``margin`` in either direction, not merely
    not shown to be non-zero.
    """
    lo, hi = float(ci90[0]), float(ci90[1])
    return -margin < lo and hi < margin


def decide(contrast: dict, aa: dict, gates: dict[str, bool], margin: float = 0.01) -> str:
    """The pre-registered decision for "does method X teach better than random".

    ``contrast`` is ``hierarchical_diff(X, random)`` (negative diff: X has the lower loss), ``aa`` is
    :func:`aa_contrast` of the random arm, ``gates`` maps the name of each sanity gate (e.g. the A/A
    covers zero, the controls behaved) to whether it passed. Checked in this order:

    - ``"gates failed: a, b"`` if any gate is False (names in the order given): no verdict is drawn;
    - ``"positive"`` if the 95% CI lies below 0 and ``|diff|`` exceeds the half-width of the A/A 95% CI
      (an effect must beat the spread between random selections, not just seed noise);
    - ``"negative (worse than random)"`` if the 95% CI lies above 0;
    - ``"negative"`` if the 90% CI lies inside ``(-margin, +margin)`` (:func:`equivalent`: no better
      than random to within ``margin``);
    - ``"inconclusive"`` otherwise.
    """
    failed = [name for name, ok in gates.items() if not ok]
    if failed:
        return "gates failed: " + ", ".join(failed)
    lo95, hi95 = contrast["ci95"]
    aa_half = (aa["ci95"][1] - aa["ci95"][0]) / 2.0
    if hi95 < 0 and abs(contrast["diff"]) > aa_half:
        return "positive"
    if lo95 > 0:
        return "negative (worse than random)"
    if equivalent(contrast["ci90"], margin):
        return "negative"
    return "inconclusive"


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall tau-b between two orderings (1: same order, -1: reversed, ties handled by the b variant).

    Used to check that a model family's ordering (e.g. of arms by loss) reproduces across two training seeds.
    """
    if len(a) != len(b):
        raise ValueError("a and b must have the same length")
    return float(stats.kendalltau(a, b).statistic)


def _rowwise_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=1) / den
    return np.clip(r, -1.0, 1.0)


def spearman_ci(x: Sequence[float], y: Sequence[float], n_boot: int = 5000, seed: int = 0) -> dict:
    """Spearman rho between paired values with a percentile bootstrap 95% CI over items.

    E.g. per-cluster teaching value against a scorer's per-cluster mean score. The bootstrap resamples
    the ``(x_i, y_i)`` pairs; replicates where either side is constant (rho undefined) are skipped.

    Returns:
        rho: Spearman's rank correlation of all items (nan if either side is constant).
        ci95: the 2.5/97.5 percentiles ``[lo, hi]`` of the defined replicates (nan if none is defined).
        n: the number of items.
    """
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    if xa.ndim != 1 or xa.shape != ya.shape:
        raise ValueError("x and y must be 1-D and of the same length")
    n = xa.size
    if n < 3:
        raise ValueError("spearman_ci needs at least 3 items")
    rho = float(_rowwise_pearson(stats.rankdata(xa)[None, :], stats.rankdata(ya)[None, :])[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    # Rank within each replicate (average ranks for the ties that resampling creates), then Pearson on ranks.
    reps = _rowwise_pearson(stats.rankdata(xa[idx], axis=1), stats.rankdata(ya[idx], axis=1))
    reps = reps[np.isfinite(reps)]
    if reps.size:
        lo, hi = np.quantile(reps, [0.025, 0.975])
        ci = [float(lo), float(hi)]
    else:
        ci = [math.nan, math.nan]
    return {"rho": rho, "ci95": ci, "n": int(n)}


def _split(v: np.ndarray, min_side: int) -> tuple[float, float]:
    """Sorted values split at their largest gap that leaves ``min_side`` on each side: (gap, pooled SD)."""
    n = v.size
    gaps = np.diff(v)
    allowed = np.zeros(n - 1, dtype=bool)
    allowed[min_side - 1:n - min_side] = True  # gap i splits v[:i+1] from v[i+1:]
    k = int(np.argmax(np.where(allowed, gaps, -np.inf))) + 1
    lo, hi = v[:k], v[k:]
    ss = float(((lo - lo.mean()) ** 2).sum() + ((hi - hi.mean()) ** 2).sum())
    return float(gaps[k - 1]), math.sqrt(ss / (n - 2))


@functools.lru_cache(maxsize=64)
def gap_ratio_null(n: int, min_side: int, quantile: float, draws: int = 200_000) -> float:
    """The ``quantile`` of (largest allowed gap) / (pooled SD of the two sides) over ``n`` Gaussian values: what
    one unimodal selection's seeds show by chance. The ratio does not depend on the Gaussian's mean or SD, so one
    fixed simulation (seeded) serves every scale."""
    rng = np.random.default_rng(12345)
    v = np.sort(rng.standard_normal((draws, n)), axis=1)
    gaps = np.diff(v, axis=1)
    lo_i, hi_i = min_side - 1, n - min_side  # allowed gap indices [lo_i, hi_i)
    g = gaps[:, lo_i:hi_i]
    k = np.argmax(g, axis=1) + lo_i + 1  # left side holds v[:, :k]
    idx = np.arange(n)[None, :]
    left = idx < k[:, None]
    n_left = k.astype(float)
    mean_l = np.where(left, v, 0.0).sum(1) / n_left
    mean_r = np.where(~left, v, 0.0).sum(1) / (n - n_left)
    ss = (np.where(left, v - mean_l[:, None], v - mean_r[:, None]) ** 2).sum(1)
    ratios = g.max(axis=1) / np.sqrt(ss / (n - 2))
    return float(np.quantile(ratios, quantile))


def seed_spread(losses: Sequence[float], min_gap: float = 0.0, min_side: int = 1,
                null_quantile: float | None = None) -> dict:
    """Spread of one configuration's loss over training seeds, with a bimodality screen.

    Returns:
        mean, sd (ddof=1; nan for one value), range (max - min), n.
        bimodal: a screening rule, not a test. With ``n >= 4``, sort the values and split them at the
            largest gap between consecutive values that leaves at least ``min_side`` values on each side;
            it is True when that gap exceeds both 2 x the pooled within-group standard deviation of the two
            sides (sum of squared deviations from each side's mean over ``n - 2``) and ``min_gap``, an
            absolute size in the loss's units. The relative part alone fires on Gaussian noise: with 4
            normal values the largest gap exceeds twice the pooled SD of the two sides in about 76% of draws
            (a single value away from three is a "cluster"), so without ``min_gap`` it cannot tell a
            plateau-escape split from ordinary seed noise. Give ``min_gap`` the size of split that would
            matter (e.g. the seed-SD gate) so that only such a split is flagged, and ``min_side`` 2 so that
            one outlying seed is not read as a second cluster. With ``null_quantile`` (e.g. 0.99), the relative
            part is calibrated instead of fixed at 2: the gap must exceed that quantile of the ratio among ``n``
            Gaussian values (``gap_ratio_null``), so the screen fires on one unimodal selection's ordinary seed
            noise with probability 1 - ``null_quantile``. The fixed factor 2 fires on 5 Gaussian seeds with SD
            0.015 and ``min_gap`` 0.02 in about 9% of selections, 18% at SD 0.02.
    """
    v = np.sort(np.asarray(losses, dtype=float).ravel())
    n = v.size
    if n == 0:
        raise ValueError("seed_spread needs at least one value")
    bimodal = False
    if n >= 4 and n >= 2 * min_side:
        gap, pooled_sd = _split(v, min_side)
        factor = 2.0 if null_quantile is None else gap_ratio_null(n, min_side, null_quantile)
        bimodal = bool(gap > factor * pooled_sd and gap > min_gap)
    return {
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if n > 1 else math.nan,
        "range": float(v[-1] - v[0]),
        "n": int(n),
        "bimodal": bimodal,
    }


def junk_retention(selected_share: float, pool_share: float) -> float:
    """How much of a known-bad control survives selection, relative to the pool.

    The control's share of the selected data divided by its share of the pool: 1 means the selector
    ignores it, 0 means it removed all of it, above 1 means it prefers it. nan if the pool has none.
    """
    if pool_share == 0:
        return math.nan
    return float(selected_share / pool_share)
