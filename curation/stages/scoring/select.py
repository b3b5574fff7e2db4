"""Select documents by a score column: a fixed threshold, or the top fraction of characters.

PreSelect keeps the top 10% of the pool *by characters* (docs/methods.md, PreSelect: selection
threshold): sort by score, walk down until the cumulative characters reach ``top_fraction`` of
the total, and use the score there as the threshold. The threshold is estimated on a
deterministic sample of the documents (``sample_fraction``; 1.0 = all), gathered in the
driver: ``sample_fraction`` x 12 bytes per document, plus its group's name with ``group_by``.
Documents with score >= threshold stay; the others are dropped with reason
``below_threshold`` and ``{"score", "threshold"}`` in the decision details. A null score is
dropped with reason ``no_score``.

``group_by`` (with ``top_fraction``) keeps the top share of *each group's* characters, e.g. of every
source with ``group_by: domain``: a stratified selection that keeps the pool's proportions between groups and
chooses only within them (a random score so selected is a random sample at the pool's domain mix).

Documents are kept whole, so a share lands on a document boundary. ``boundary: include`` (the default) keeps
the document that crosses the share; ``boundary: nearest`` leaves it out when the documents before it end at
least as close to the share. ``nearest`` matters where one document is a large part of a group: with
``include``, a 15% share of a source whose top document holds 23% of it keeps 23%. A group can then keep
nothing (its top document alone lies further from the share than none; a warning names it, and its decisions
report a null threshold), and documents tied at the boundary score are kept or left out together. A score of
+inf is never left out by ``nearest`` (no threshold lies above it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.registry import register_stage
from curation.stages.base import StageResult, split
from curation.stages.global_stage import GlobalStage, row_positions
from curation.stages.frame import Frame, mix64

log = logging.getLogger(__name__)

RESULT_SCHEMA = pa.schema([
    pa.field("_task", pa.int32(), nullable=False),
    pa.field("_row", pa.int64(), nullable=False),
    pa.field("id", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("score", pa.float64()),
    pa.field("threshold", pa.float64()),
])


BOUNDARIES = ("include", "nearest")


@dataclass(kw_only=True)
class SelectConfig:
    """``column``: score column (e.g. ``score_preselect``). Exactly one of ``threshold`` (keep
    score >= threshold) and ``top_fraction`` (keep the top share of characters). ``lowest``:
    keep the lowest scores instead (perplexity selection keeps the lowest ``bpc_<model>``); then a
    ``threshold`` keeps score <= threshold and the top fraction is the lowest-scoring one. ``group_by``: a
    column (e.g. ``domain``); the top fraction is then taken of each of its values' characters. ``boundary``
    (with ``top_fraction``): ``include`` keeps the document that crosses the share, ``nearest`` keeps it only
    when that ends closer to the share than leaving it out."""

    column: str
    lowest: bool = False
    threshold: float | None = None
    top_fraction: float | None = None
    group_by: str | None = None
    boundary: str = "include"
    sample_fraction: float = 1.0
    seed: int = 0
    #: Left out of the fingerprint at these values: runs made before the options existed keep theirs (and resume).
    FINGERPRINT_DEFAULTS: ClassVar[dict[str, Any]] = {"group_by": None, "boundary": "include"}

    def __post_init__(self) -> None:
        if (self.threshold is None) == (self.top_fraction is None):
            raise ValueError("set exactly one of threshold and top_fraction")
        if self.group_by is not None and self.top_fraction is None:
            raise ValueError("group_by needs top_fraction (a threshold is the same for every group)")
        if self.top_fraction is not None and not 0.0 < self.top_fraction <= 1.0:
            raise ValueError("top_fraction must be in (0, 1]")
        if self.boundary not in BOUNDARIES:
            raise ValueError(f"boundary must be one of {list(BOUNDARIES)}, got {self.boundary!r}")
        if self.boundary != "include" and self.top_fraction is None:
            raise ValueError("boundary needs top_fraction (a threshold has no share to land near)")
        if not 0.0 < self.sample_fraction <= 1.0:
            raise ValueError("sample_fraction must be in (0, 1]")


def _group_codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list[str]]:
    """Each row's group as an integer code, and the group names in code order (dictionary encoding: no Python
    object per row)."""
    enc = pc.dictionary_encode(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), enc.dictionary.to_pylist()


def top_fraction_threshold(scores: np.ndarray, chars: np.ndarray, fraction: float, boundary: str = "include") -> float:
    """The score at which documents sorted by score (descending) reach ``fraction`` of the characters: the
    crossing document's (``include``), or with ``nearest`` the score just above the crossing document's tie block
    when stopping there ends at least as close to the share as keeping the block (+inf, keeping nothing, when
    the block is the first)."""
    ok = ~np.isnan(scores)
    scores, chars = scores[ok], chars[ok]
    if len(scores) == 0:
        return float("inf")
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    cum = np.cumsum(chars[order])
    target = fraction * cum[-1]
    k = min(int(np.searchsorted(cum, target, side="left")), len(order) - 1)
    if boundary == "nearest":
        # a threshold keeps or drops a tie block whole: compare the block that holds the crossing document
        # kept (through its last member) with it dropped (up to its first member)
        ascending = -ranked
        first = int(np.searchsorted(ascending, ascending[k], side="left"))
        last = int(np.searchsorted(ascending, ascending[k], side="right")) - 1
        before = float(cum[first - 1]) if first > 0 else 0.0
        # keeping nothing is a threshold of +inf, which cannot drop a score of +inf: such a block stays
        if target - before <= cum[last] - target and not (first == 0 and np.isposinf(ranked[0])):
            return float(ranked[first - 1]) if first > 0 else float("inf")
    return float(ranked[k])


@register_stage("select_v1")
class Select(GlobalStage):
    Config = SelectConfig
    reason = "below_threshold"
    result_schema = RESULT_SCHEMA

    def key_columns(self) -> dict[str, pa.DataType]:
        group = {"_sel_group": pa.string()} if self.config.group_by else {}
        return {"_sel_score": pa.float64(), "_sel_chars": pa.int64(), **group}

    def add_keys(self, batch: pa.Table) -> pa.Table:
        c = self.config
        for col in (c.column, c.group_by):
            if col is not None and col not in batch.column_names:
                raise ValueError(f"select_v1: no column {col!r} (columns: {batch.column_names})")
        score = batch.column(c.column).cast(pa.float64())
        if c.lowest:  # select on -score: the machinery below keeps the highest
            score = pc.negate(score)
        out = batch.append_column("_sel_score", score).append_column("_sel_chars", batch.column("n_chars"))
        if c.group_by:  # a null value is a group of its own, under the same name as an empty string
            out = out.append_column("_sel_group", pc.fill_null(batch.column(c.group_by).cast(pa.string()), ""))
        return out

    def _sample(self, t: pa.Table) -> pa.Table:
        node = (t.column("_task").to_numpy().astype(np.int64) << 32) | t.column("_row").to_numpy().astype(np.int64)
        with np.errstate(over="ignore"):  # salted: splitmix64 maps 0 to 0, so node 0 would always be sampled
            salted = node.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(self.config.seed + 1)
        keep = (mix64(salted) % np.uint64(1_000_000)) < np.uint64(
            int(self.config.sample_fraction * 1_000_000))
        return t.select(list(self.key_columns())).filter(pa.array(keep))

    def thresholds(self, keys: Frame) -> dict[str | None, float]:
        """The threshold on ``_sel_score``: under the key None, or per group with ``group_by``."""
        c = self.config
        if c.threshold is not None:
            return {None: -c.threshold if c.lowest else c.threshold}
        sample = keys.map(self._sample).collect()
        if len(sample) == 0:
            if keys.count() == 0:
                return {None: 0.0}
            raise ValueError(f"select_v1: the sample (sample_fraction={c.sample_fraction}) holds no document; raise it")
        if not c.group_by:
            out: dict[str | None, float] = {None: self._threshold_of(sample)}
        else:
            out = self._group_thresholds(keys, sample)
        shown = dict(list(out.items())[:10])
        log.info("select_v1: top %.1f%% of characters of %s%s: threshold(s) %s%s (from %d sampled documents)",
                 100 * (c.top_fraction or 1.0), c.column, f" per {c.group_by}" if c.group_by else "",
                 {g: f"{v:.6g}" for g, v in shown.items()}, f" and {len(out) - 10} more" if len(out) > 10 else "",
                 len(sample))
        return out

    def _threshold_of(self, t: pa.Table, group: str | None = None) -> float:
        scores = t.column("_sel_score").to_numpy(zero_copy_only=False).astype(np.float64)
        thr = top_fraction_threshold(scores, t.column("_sel_chars").to_numpy().astype(np.float64),
                                     self.config.top_fraction or 1.0, self.config.boundary)
        if thr == float("inf") and not np.isnan(scores).all():
            # decisions report an infinite threshold as null, as for a group without a score: say which it is
            log.warning("select_v1: boundary nearest keeps nothing of %s: its top-scored document alone lies "
                        "further from the %.1f%% share than none", "the pool" if group is None else f"group {group!r}",
                        100 * (self.config.top_fraction or 1.0))
        return thr

    def _group_thresholds(self, keys: Frame, sample: pa.Table) -> dict[str | None, float]:
        """Each group's threshold from its sampled documents; a group the sample missed (a rare value, with
        ``sample_fraction`` < 1) from all of its documents, gathered exactly: one odd value never fails a run."""
        out: dict[str | None, float] = {}
        codes, names = _group_codes(sample.column("_sel_group"))
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
        for i, g in enumerate(names):
            out[g] = self._threshold_of(sample.take(pa.array(order[bounds[i]:bounds[i + 1]])), g)
        if self.config.sample_fraction >= 1.0:  # the sample is every document: no group can be missing
            return out
        uniques = keys.map(lambda t: pa.table({"g": pc.unique(t.column("_sel_group"))})).collect()
        every = set(uniques.column("g").to_pylist())
        missing = pa.array(sorted(every - set(out)), pa.string())
        if len(missing):
            rest = keys.map(lambda t: t.filter(pc.is_in(t.column("_sel_group"), value_set=missing))).collect()
            for g in missing.to_pylist():
                out[g] = self._threshold_of(rest.filter(pc.equal(rest.column("_sel_group"), g)), g)
            log.info("select_v1: %d %s value(s) had no sampled document; their thresholds use all their documents",
                     len(missing), self.config.group_by)
        return out

    def run_global(self, keys: Frame) -> Frame:
        thresholds = self.thresholds(keys)
        sign = -1.0 if self.config.lowest else 1.0  # decisions report the column's own values
        by_group = self.config.group_by is not None
        group_names = pa.array([g for g in thresholds if g is not None], pa.string())
        group_thr = np.array([thresholds[g] for g in group_names.to_pylist()], dtype=np.float64)

        def below(t: pa.Table) -> pa.Table:
            s = t.column("_sel_score").to_numpy(zero_copy_only=False).astype(np.float64)
            if by_group:  # every group has a threshold (``_group_thresholds``): index_in finds each row's
                idx = pc.index_in(t.column("_sel_group"), value_set=group_names)
                idx = idx.to_numpy(zero_copy_only=False)
                thr = group_thr[idx.astype(np.int64)]
            else:
                thr = np.full(len(s), thresholds[None])
            null = np.isnan(s)
            drop = null | (s < thr)
            n = int(drop.sum())
            return pa.table({
                "_task": t.column("_task").filter(pa.array(drop)), "_row": t.column("_row").filter(pa.array(drop)),
                "id": t.column("id").filter(pa.array(drop)),
                "reason": pa.array(np.where(null[drop], "no_score", self.reason), pa.string()),
                "score": pa.array(sign * s[drop], pa.float64(), from_pandas=True),
                # a group (or pool) without one scored document has no finite threshold: reported as null
                "threshold": pa.array(np.where(np.isfinite(thr[drop]), sign * thr[drop], np.nan), pa.float64(),
                                      from_pandas=True),
            }, schema=RESULT_SCHEMA)

        return keys.map(below)

    def apply(self, batch: pa.Table, marks: pa.Table) -> StageResult:
        pos = row_positions(batch, marks)
        keep = pos < 0
        reasons: list[str | None] = [None] * len(batch)
        details: list[dict[str, float | None] | None] = [None] * len(batch)
        if (~keep).any():
            hit = pa.array(pos[~keep], pa.int64())
            for i, r, s, t in zip(np.flatnonzero(~keep), marks.column("reason").take(hit).to_pylist(),
                                  marks.column("score").take(hit).to_pylist(), marks.column("threshold").take(hit).to_pylist()):
                reasons[i] = r
                details[i] = {"score": s, "threshold": t, "column": self.config.column}
        return split(batch, keep, reasons, details)
