"""``metrics: true`` on the heuristic filters: every rule's measured value as a typed column on kept documents.

Hand-checked values on a few exact documents, from our fast filters and from datatrove's classes (measured by
``_reference_metrics``); equal values from both on the sample corpus; and on random texts, a kept document's value
is what a drop's ``details`` say once the rule's threshold moves just past it. Off, nothing changes: no columns,
the same decisions, the same fingerprint.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.pipeline import PipelineConfig
from curation.stages.base import Doc, run_chain
from curation.stages.filters import metrics
from curation.stages.filters._datatrove import DatatroveFilter
from curation.stages.filters._reference_metrics import MEASURE
from curation.stages.filters.c4_quality import C4Quality, C4QualityConfig
from curation.stages.filters.fineweb_quality import FineWebQuality, FineWebQualityConfig
from curation.stages.filters.gopher_quality import GopherQuality, GopherQualityConfig
from curation.stages.filters.gopher_repetition import GopherRepetition, GopherRepetitionConfig
from tests.curation.stages.filters.helpers import batch_of
from tests.curation.stages.filters.test_drop_details import ODD, _texts

GOPHER_TEXT = "The cat sat on the mat.\n- And the dog ran...\n# Title here"
GOPHER = {"min_doc_words": 5, "max_ellipsis_lines_ratio": 0.5, "max_non_alpha_words_ratio": 0.7, "min_stop_words": 1}
REPETITION_TEXT = "one two three\n\none two three\n\nfour five"  # 39 characters, 8 words
REPETITION = {"dup_para_frac": 0.99, "dup_para_char_frac": 0.99, "dup_line_frac": 0.99, "dup_line_char_frac": 0.99,
              "top_n_grams": [[2, 0.99], [3, 0.99], [4, 0.99], [9, 0.99]],
              "dup_n_grams": [[3, 0.99], [5, 0.99], [9, 0.99]]}
C4_TEXT = ("First line here. Second sentence here.\nshort\nThis uses javascript a lot.\n"
           "Third line has three words. And more! Yes.")
FINEWEB_TEXT = ("A line that ends with a period.\nshort\nA line that ends with a period.\n"  # 31, 5, 31 characters
                "no punct here at the end of line")  # 32

# Each value worked out by hand from datatrove's rules (the fast tokenizer splits "." "-" "..." "#" off as words).
HAND = [
    (GopherQuality, GopherQualityConfig, GOPHER, GOPHER_TEXT, {
        "gopher_n_words": 12,  # 16 words less the 4 all-punctuation ones
        "gopher_avg_word_length": 38 / 12, "gopher_hash_word_ratio": 1 / 16, "gopher_ellipsis_word_ratio": 1 / 16,
        "gopher_bullet_lines_ratio": 1 / 3, "gopher_ellipsis_lines_ratio": 1 / 3, "gopher_alpha_words_ratio": 12 / 16,
        "gopher_n_stop_words": 1}),  # only "the": stop words are case-sensitive
    (GopherRepetition, GopherRepetitionConfig, REPETITION, REPETITION_TEXT, {
        "gopher_rep_dup_para_frac": 1 / 3, "gopher_rep_dup_para_char_frac": 13 / 39,
        "gopher_rep_dup_line_frac": 1 / 3, "gopher_rep_dup_line_char_frac": 13 / 39,
        "gopher_rep_top_2_gram_char_frac": 14 / 39,  # "one two" x2, the first-seen of the two most common
        "gopher_rep_top_3_gram_char_frac": 26 / 39, "gopher_rep_top_4_gram_char_frac": 17 / 39,
        "gopher_rep_top_9_gram_char_frac": None,  # fewer than 9 words: datatrove skips the rule
        "gopher_rep_dup_3_gram_char_frac": 11 / 39,  # "onetwothree" again at word 3
        "gopher_rep_dup_5_gram_char_frac": 0.0, "gopher_rep_dup_9_gram_char_frac": 0.0}),
    # 2 + 3 sentences in the two lines C4 keeps: counted to the end although the minimum (2) is met on line 1
    (C4Quality, C4QualityConfig, {"min_num_sentences": 2}, C4_TEXT, {"c4_n_sentences": 5}),
    (FineWebQuality, FineWebQualityConfig, {"char_duplicates_ratio": 0.5}, FINEWEB_TEXT, {
        "fineweb_line_punct_ratio": 2 / 4, "fineweb_short_line_ratio": 1 / 4,
        "fineweb_char_dup_ratio": 31 / (31 + 5 + 31 + 32), "fineweb_newline_word_ratio": 3 / 25}),
]
IMPLEMENTED_TWICE = (GopherQuality, GopherRepetition, C4Quality)


def _stage(cls: type, config: type, implementation: str = "fast", **kw: Any) -> DatatroveFilter:
    if cls in IMPLEMENTED_TWICE:
        kw["implementation"] = implementation
    stage = cls(config(**kw))
    stage.setup()
    return stage


def _values(stage: DatatroveFilter, text: str) -> dict[str, Any] | None:
    """A kept document's metric values (None: dropped)."""
    outcome = stage.filter(Doc(id="d", text=text))
    if outcome is True or not outcome[0]:
        assert outcome is not True, "metrics on: a kept document comes back with its values"
        return None
    return outcome[2]


def _implementations(cls: type) -> list[str]:
    return ["fast", "datatrove"] if cls in IMPLEMENTED_TWICE else ["fast"]


@pytest.mark.parametrize("cls, config, kw, text, want", HAND, ids=lambda x: getattr(x, "__name__", None))
def test_hand_checked_values_from_both_implementations(cls: type, config: type, kw: dict[str, Any], text: str,
                                                       want: dict[str, Any]) -> None:
    for impl in _implementations(cls):
        stage = _stage(cls, config, impl, metrics=True, **kw)
        assert _values(stage, text) == want, impl
        assert set(stage.output_columns()) == set(want)
        if cls is FineWebQuality:  # the copy's values against the restatement of datatrove's code
            assert MEASURE[cls.name](stage._impl, text) == want


def test_through_process_the_columns_are_typed_and_null_where_off() -> None:
    """Disabled rules (None, and C4's -1) leave their columns null; ints are int64, ratios float64."""
    kw = {**GOPHER, "min_doc_words": None, "max_doc_words": None, "max_symbol_word_ratio": None}
    for impl in ("fast", "datatrove"):
        stage = GopherQuality(GopherQualityConfig(metrics=True, implementation=impl, **kw))
        res = stage.process(batch_of([GOPHER_TEXT, "ab ab ab ab ab ab"]))
        assert res.reasons == ["gopher_below_avg_threshold"]  # a dropped document has no row in kept
        row = res.kept.select(list(stage.output_columns())).to_pylist()[0]
        assert row == {**HAND[0][4], "gopher_n_words": None, "gopher_hash_word_ratio": None,
                       "gopher_ellipsis_word_ratio": None}
        assert res.kept.schema.field("gopher_n_stop_words").type == pa.int64()
        assert res.kept.schema.field("gopher_alpha_words_ratio").type == pa.float64()
        c4 = C4Quality(C4QualityConfig(metrics=True, implementation=impl, min_num_sentences=-1))
        assert c4.process(batch_of([C4_TEXT])).kept.column("c4_n_sentences").to_pylist() == [None]


def test_output_columns_only_with_metrics_and_follow_the_n_gram_lists() -> None:
    for cls, config, kw, _, want in HAND:
        assert cls(config(**kw)).output_columns() == {}
        cols = cls(config(metrics=True, **kw)).output_columns()
        assert set(cols) == set(want) and set(cols.values()) <= {pa.int64(), pa.float64()}
    rep = GopherRepetition(GopherRepetitionConfig(metrics=True, top_n_grams=[[2, 0.2]], dup_n_grams=[]))
    assert [c for c in rep.output_columns() if "gram" in c] == ["gopher_rep_top_2_gram_char_frac"]


def test_metrics_off_changes_nothing_and_on_changes_no_decision() -> None:
    """Off: the kept table has the input's columns only and the fingerprint data has no ``metrics`` key (as before
    the option existed). On: the same keep/drop, reasons, details and rewritten texts."""
    texts = _texts()[::4] + ODD
    batch = batch_of(texts)

    def chain(on: bool) -> list[DatatroveFilter]:
        return [_stage(cls, config, metrics=on) for cls, config in
                ((GopherRepetition, GopherRepetitionConfig), (GopherQuality, GopherQualityConfig),
                 (C4Quality, C4QualityConfig), (FineWebQuality, FineWebQualityConfig))]

    off_kept, off_steps = run_chain(chain(False), batch)
    on_kept, on_steps = run_chain(chain(True), batch)
    assert off_kept.column_names == batch.column_names  # (C4's rewrite rebuilds text: compare names, not schema)
    assert on_kept.select(batch.column_names).equals(off_kept) and on_kept.num_rows > 0
    for a, b in zip(off_steps, on_steps):
        assert (a.result.reasons, a.result.details) == (b.result.reasons, b.result.details)
        assert a.result.dropped.column("id").equals(b.result.dropped.column("id"))

    def fingerprint_stage(**kw: Any) -> dict[str, Any]:
        cfg = PipelineConfig.from_mapping({"name": "t", "input": {"paths": ["x"]}, "output": {"dir": "o"},
                                           "stages": [{"stage": "gopher_quality_v1", **kw}]})
        return cfg.fingerprint_data()["stages"][0]

    assert "metrics" not in fingerprint_stage() and fingerprint_stage() == fingerprint_stage(metrics=False)
    assert fingerprint_stage(metrics=True)["metrics"] is True


def test_fast_and_datatrove_give_equal_values_on_the_sample_corpus() -> None:
    """Default thresholds; every document either implementation keeps has the same values from both."""
    texts = _texts()
    for cls, config, *_ in HAND[:3]:
        fast, ref = _stage(cls, config, "fast", metrics=True), _stage(cls, config, "datatrove", metrics=True)
        kept = 0
        for text in texts:
            a, b = _values(fast, text), _values(ref, text)
            assert a == b, (cls.__name__, text[:200])
            kept += a is not None
        assert kept >= 20, cls.__name__  # not vacuous


# -- on random texts: a kept value is what the drop's details say once its threshold moves past it -------------

# Lenient thresholds, so that random texts are mostly kept (a kept document is what carries values).
LENIENT = [
    (GopherQuality, GopherQualityConfig, {"min_doc_words": 3, "min_avg_word_length": 1, "max_avg_word_length": 30,
                                          "max_symbol_word_ratio": 0.9, "max_bullet_lines_ratio": 0.99,
                                          "max_ellipsis_lines_ratio": 0.99, "max_non_alpha_words_ratio": 0.1,
                                          "min_stop_words": 1}),
    (GopherRepetition, GopherRepetitionConfig, {**REPETITION, "top_n_grams": [[2, 0.99], [4, 0.99], [12, 0.99]],
                                                "dup_n_grams": [[5, 0.99], [8, 0.99]]}),
    (C4Quality, C4QualityConfig, {"min_num_sentences": 1, "min_words_per_line": 2}),
    (FineWebQuality, FineWebQualityConfig, {"line_punct_thr": 0.05, "short_line_thr": 0.99,
                                            "char_duplicates_ratio": 0.99, "new_line_ratio": 0.99}),
]
_STAGES = {impl: [_stage(cls, config, impl, metrics=True, **kw) for cls, config, kw in LENIENT]
           for impl in ("fast", "datatrove")}
_REASONS = {r.reason: m for cls, _, kw in LENIENT for m in metrics.metrics(cls.name, kw) for r in m.rules}


def _past(value: float, keep: str) -> float:
    """A threshold just past ``value`` on the failing side (never 0, which would switch a Gopher rule off)."""
    if isinstance(value, int):
        return value + 0.5 if keep == "above" else value - 0.5
    return math.nextafter(value, math.inf if keep == "above" else -math.inf)


def _moved(stage: DatatroveFilter, rule: metrics.Rule, value: float) -> DatatroveFilter:
    """The stage (metrics off, fast) with ``rule``'s threshold just past ``value``."""
    cfg = dataclasses.asdict(stage.config)
    if rule.n is None:
        cfg[rule.key] = _past(value, rule.keep)
    else:
        cfg[rule.key] = [[n, _past(value, rule.keep) if n == rule.n else f] for n, f in cfg[rule.key]]
    cfg["metrics"] = False
    moved = type(stage)(type(stage.config)(**cfg))
    moved.setup()
    return moved


words = st.sampled_from(["the", "a", "of", "and", "word", "cat", "sat", "...", "…", "#", "-", "•", "x" * 14, "is",
                         "Déjà", "123", "!!!", "end.", "Yes!", "javascript", "lorem", "{", "one two three"])
lines = st.lists(words, min_size=0, max_size=12).map(" ".join)
# Half the texts repeat a few lines (empty ones make paragraphs), for the repetition rules.
texts = st.one_of(st.lists(lines, min_size=1, max_size=16),
                  st.lists(lines, min_size=1, max_size=5).flatmap(
                      lambda pool: st.lists(st.sampled_from(pool), min_size=1, max_size=16))).map("\n".join)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts)
def test_random_texts_kept_values_equal_the_details_of_a_drop_just_past_them(text: str) -> None:
    for fast, ref in zip(_STAGES["fast"], _STAGES["datatrove"]):
        values = _values(fast, text)
        assert _values(ref, text) == values, type(fast).__name__
        if values is None:
            continue
        assert MEASURE[fast.name](fast._impl, text) == values  # (FineWeb's only comparison with the restatement)
        cfg = dataclasses.asdict(fast.config)
        for m in metrics.metrics(fast.name, cfg):
            if not metrics.measured(fast.name, cfg, m):  # (a measured one may still be None: nothing to measure)
                assert values[m.column] is None, m.column
            if values[m.column] is None:
                continue
            for rule in m.rules:
                if metrics.threshold(fast.name, cfg, rule) is None:
                    continue
                outcome = _moved(fast, rule, values[m.column]).filter(Doc(id="d", text=text))
                assert outcome is not True and not outcome[0], (m.column, rule, values[m.column])
                # An earlier rule sharing the threshold key (Gopher's symbol ratio) may fire first: then its value.
                fired = _REASONS[outcome[1]]
                assert outcome[1] == rule.reason or fired.rules[0].key == rule.key, (outcome, rule)
                assert outcome[2][fired.detail] == values[fired.column], (m.column, outcome)
