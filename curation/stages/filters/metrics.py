"""The measured values the heuristic filters write as columns on kept documents with ``metrics: true``.

One table says, per stage, which column holds which measurement, the ``details`` key a drop by one of its rules
records it under, and the rules (config key, which side keeps, drop reason) that threshold it. The stages declare
their columns from it (``columns``), and the service's what-if reads it to pool the dropped documents with their
value and to find the run's threshold (``whatif_metrics``), so the two cannot disagree on a name. It imports
nothing heavy: the service loads it without datatrove.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa


@dataclass(frozen=True)
class Rule:
    """One threshold on a metric.

    Args:
        key: The config key holding the threshold (``min_doc_words``); for an n-gram rule, the list
            (``top_n_grams``) whose ``[n, max]`` entry holds it.
        keep: ``above``: the rule is a minimum (drops value < threshold); ``below``: a maximum (drops value >
            threshold). A what-if moving it with the same direction is exact when tightened.
        reason: The drop reason the rule writes (its ``details`` hold the metric's value).
        n: The n of an n-gram rule, else None.
    """

    key: str
    keep: Literal["above", "below"]
    reason: str
    n: int | None = None


@dataclass(frozen=True)
class Metric:
    """One column: its name, Arrow type, the ``details`` key of its value on a drop, and its rules."""

    column: str
    dtype: Literal["int64", "float64"]
    detail: str
    rules: tuple[Rule, ...]

    def arrow_type(self) -> pa.DataType:
        return pa.int64() if self.dtype == "int64" else pa.float64()


#: Threshold values that switch a rule off (and leave its column null), per stage. datatrove's Gopher rules test
#: ``if self.threshold and ...`` (None and 0 disable); C4 counts sentences unless ``min_num_sentences`` is -1;
#: FineWeb's rules and the n-gram rules always run.
_OFF: dict[str, tuple[Any, ...]] = {"gopher_quality_v1": (None, 0), "gopher_repetition_v1": (None, 0),
                                    "c4_quality_v1": (-1,), "fineweb_quality_v1": ()}


def _m(column: str, dtype: Literal["int64", "float64"], detail: str, *rules: Rule) -> Metric:
    return Metric(column, dtype, detail, rules)


_GOPHER = (
    _m("gopher_n_words", "int64", "words", Rule("min_doc_words", "above", "gopher_short_doc"),
       Rule("max_doc_words", "below", "gopher_long_doc")),
    _m("gopher_avg_word_length", "float64", "avg_word_length",
       Rule("min_avg_word_length", "above", "gopher_below_avg_threshold"),
       Rule("max_avg_word_length", "below", "gopher_above_avg_threshold")),
    _m("gopher_hash_word_ratio", "float64", "hash_word_ratio",
       Rule("max_symbol_word_ratio", "below", "gopher_too_many_hashes")),
    _m("gopher_ellipsis_word_ratio", "float64", "ellipsis_word_ratio",
       Rule("max_symbol_word_ratio", "below", "gopher_too_many_ellipsis")),
    _m("gopher_bullet_lines_ratio", "float64", "bullet_lines_ratio",
       Rule("max_bullet_lines_ratio", "below", "gopher_too_many_bullets")),
    _m("gopher_ellipsis_lines_ratio", "float64", "ellipsis_lines_ratio",
       Rule("max_ellipsis_lines_ratio", "below", "gopher_too_many_end_ellipsis")),
    # datatrove's max_non_alpha_words_ratio is a minimum on the alphabetic share (its own TODO says so)
    _m("gopher_alpha_words_ratio", "float64", "alpha_words_ratio",
       Rule("max_non_alpha_words_ratio", "above", "gopher_below_alpha_threshold")),
    _m("gopher_n_stop_words", "int64", "stop_words", Rule("min_stop_words", "above", "gopher_enough_stop_words")),
)

_REPETITION = tuple(
    _m(f"gopher_rep_{name}", "float64", name, Rule(name, "below", name))
    for name in ("dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac")
)

_C4 = (_m("c4_n_sentences", "int64", "sentences", Rule("min_num_sentences", "above", "too_few_sentences")),)

_FINEWEB = (
    _m("fineweb_line_punct_ratio", "float64", "line_punct_ratio",
       Rule("line_punct_thr", "above", "line_punct_ratio")),
    _m("fineweb_short_line_ratio", "float64", "short_line_ratio", Rule("short_line_thr", "below", "short_line_ratio")),
    _m("fineweb_char_dup_ratio", "float64", "char_dup_ratio",
       Rule("char_duplicates_ratio", "below", "char_dup_ratio")),
    _m("fineweb_newline_word_ratio", "float64", "newline_word_ratio", Rule("new_line_ratio", "below", "list_ratio")),
)


def _ngrams(config: Mapping[str, Any], key: str) -> list[int]:
    """The distinct n of a ``[[n, max], ...]`` list, in config order (a repeated n is one column)."""
    return list(dict.fromkeys(int(pair[0]) for pair in config.get(key) or []))


def metrics(stage: str, config: Mapping[str, Any]) -> tuple[Metric, ...]:
    """The metric columns of ``stage`` under ``config`` (its fields as a mapping); () for another stage.

    The repetition stage has one column per n of its n-gram lists, so the set depends on the config.
    """
    if stage == "gopher_quality_v1":
        return _GOPHER
    if stage == "gopher_repetition_v1":
        top = (_m(f"gopher_rep_top_{n}_gram_char_frac", "float64", "top_ngram_char_frac",
                  Rule("top_n_grams", "below", f"top_{n}_gram", n)) for n in _ngrams(config, "top_n_grams"))
        dup = (_m(f"gopher_rep_dup_{n}_gram_char_frac", "float64", "dup_ngram_char_frac",
                  Rule("dup_n_grams", "below", f"duplicated_{n}_n_grams", n)) for n in _ngrams(config, "dup_n_grams"))
        return (*_REPETITION, *top, *dup)
    if stage == "c4_quality_v1":
        return _C4
    if stage == "fineweb_quality_v1":
        return _FINEWEB
    return ()


def columns(stage: str, config: Mapping[str, Any]) -> dict[str, pa.DataType]:
    """``{column: Arrow type}`` a stage with ``metrics: true`` adds to kept documents."""
    return {m.column: m.arrow_type() for m in metrics(stage, config)}


def threshold(stage: str, config: Mapping[str, Any], rule: Rule) -> float | None:
    """The rule's threshold under ``config``, or None when the rule is off (then its metric is not measured)."""
    if rule.n is None:
        value = config.get(rule.key)
        return None if value in _OFF.get(stage, ()) else value
    # datatrove checks every [n, max] entry in turn: a repeated n is held to its smallest maximum
    fracs = [float(pair[1]) for pair in config.get(rule.key) or [] if int(pair[0]) == rule.n]
    return min(fracs) if fracs else None


def measured(stage: str, config: Mapping[str, Any], metric: Metric) -> bool:
    """True when at least one of the metric's rules is on: the filter computes it, so its column has values."""
    return any(threshold(stage, config, r) is not None for r in metric.rules)


@dataclass(frozen=True)
class WhatIfMetric:
    """A metric column of a run, as the what-if needs it: the stage that wrote it, that stage's config, and the
    metric (its rules give the drops to pool and the run's thresholds)."""

    stage: str
    config: Mapping[str, Any]
    metric: Metric


def whatif_metrics(stages: Iterable[Any]) -> dict[str, WhatIfMetric]:
    """``{column: WhatIfMetric}`` of the metric columns a run's config (its ``stages`` list) wrote.

    Only stages with ``metrics: true``; a stage name configured twice with metrics could not run (its columns
    would be declared twice), so each column names one stage.
    """
    out: dict[str, WhatIfMetric] = {}
    for s in stages:
        if isinstance(s, Mapping) and s.get("metrics") is True:
            cfg = {k: v for k, v in s.items() if k != "stage"}
            for m in metrics(str(s.get("stage")), cfg):
                out[m.column] = WhatIfMetric(str(s.get("stage")), cfg, m)
    return out
