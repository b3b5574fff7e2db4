"""Each heuristic filter on exact tiny inputs that trigger its named reasons."""

from __future__ import annotations

import pytest

from curation.stages.filters.c4_quality import C4Quality, C4QualityConfig
from curation.stages.filters.fineweb_quality import FineWebQuality
from curation.stages.filters.gopher_quality import GopherQuality
from curation.stages.filters.gopher_repetition import GopherRepetition
from curation.stages.filters.text_length import TextLength, TextLengthConfig
from curation.stages.filters.url import URLFilter, URLFilterConfig
from tests.conftest import PROSE
from tests.curation.stages.filters.helpers import run


@pytest.mark.parametrize("tokenizer", ["fast", "spacy"])
def test_gopher_quality_reasons(tokenizer: str) -> None:
    cfg = GopherQuality.Config(word_tokenizer=tokenizer)
    texts = [
        PROSE[0],
        "A short note with few words.",
        " ".join(["lorem"] * 60) + ".",  # no stop words
        " ".join(["supercalifragilistic"] * 60),  # average word length > 10
        "# " * 40 + PROSE[1],  # hash symbols over 10% of words
    ]
    kept, dropped = run(GopherQuality(cfg), texts)
    assert kept == [PROSE[0]]
    assert dropped == [("d1", "gopher_short_doc"), ("d2", "gopher_enough_stop_words"),
                       ("d3", "gopher_above_avg_threshold"), ("d4", "gopher_too_many_hashes")]


def test_gopher_repetition_reasons() -> None:
    line = "This line is repeated again and again in the page."
    texts = [PROSE[1], "\n".join([line] * 10 + [PROSE[2]]), "\n\n".join(["one paragraph here."] * 5 + [PROSE[0]])]
    kept, dropped = run(GopherRepetition(), texts)
    assert kept == [PROSE[1]]
    assert dropped == [("d1", "dup_line_frac"), ("d2", "dup_para_frac")]


def test_c4_drops_pages_and_removes_bad_lines() -> None:
    page = "\n".join(PROSE[0].split(". "))  # one sentence per line
    with_js = page + "\nPlease enable javascript to view this site."
    texts = [with_js, PROSE[1] + " lorem ipsum dolor sit amet.", PROSE[2] + " {x}", "One line. Two lines."]
    kept, dropped = run(C4Quality(), texts)
    assert kept == [page]  # the javascript line was removed, the page kept
    assert dropped == [("d1", "lorem_ipsum"), ("d2", "curly_bracket"), ("d3", "too_few_sentences")]


def test_c4_terminal_punct_rule_is_configurable() -> None:
    text = "\n".join(s.rstrip(".") for s in PROSE[0].split(". "))
    kept, _ = run(C4Quality(C4QualityConfig(filter_no_terminal_punct=True)), [text])
    assert kept == []
    kept, _ = run(C4Quality(), [text])
    assert kept == [text]


def test_fineweb_reasons() -> None:
    listy = "\n".join(f"item number {i}" for i in range(40))  # short lines, no punctuation
    dup = PROSE[0] + "\n" + "\n".join(["Copyright notice repeated on every page of the site."] * 3)
    kept, dropped = run(FineWebQuality(), [PROSE[2], listy, dup])
    assert kept == [PROSE[2]]
    assert dropped == [("d1", "line_punct_ratio"), ("d2", "char_dup_ratio")]


def test_url_filter_blocklist_and_missing_url() -> None:
    stage = URLFilter(URLFilterConfig(extra_domains=["blocked-example.com"]))
    kept, dropped = run(stage, ["a", "b", "c"], ["https://blocked-example.com/page", "https://docs.python.org/3/", None])
    assert kept == ["b", "c"] and dropped == [("d0", "domain")]
    kept, dropped = run(URLFilter(URLFilterConfig(missing_url="drop")), ["a"], [None])
    assert kept == [] and dropped == [("d0", "missing_url")]


def test_text_length() -> None:
    kept, dropped = run(TextLength(TextLengthConfig(min_chars=3, max_chars=5)), ["ab", "abc", "abcdef"])
    assert kept == ["abc"] and dropped == [("d0", "too_short"), ("d2", "too_long")]


@pytest.mark.parametrize("stage_cls", [GopherQuality, GopherRepetition, C4Quality, FineWebQuality])
@pytest.mark.parametrize("text", ["", "   ", "!!!???...", "x" * 50_000, "\n\n\n", "é" * 3])
def test_degenerate_text_never_raises(stage_cls: type, text: str) -> None:
    kept, dropped = run(stage_cls(), [text])
    assert len(kept) + len(dropped) == 1
