"""Property tests for pii_v1: no input makes it raise, and planted e-mails and cards never survive."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from curation.stages.pii._rules import luhn_ok
from curation.stages.pii.detect import TYPES, Detector

DETECTOR = Detector()

EMAILS = st.builds("{}@{}.{}".format, st.from_regex(r"[a-z0-9]{1,8}(\.[a-z0-9_+]{1,6})?", fullmatch=True),
                   st.from_regex(r"[a-z0-9]([a-z0-9\-]{0,8}[a-z0-9])?(\.[a-z0-9]{1,6})?", fullmatch=True),
                   st.sampled_from(["com", "org", "de", "co", "io", "travel"]))


@st.composite
def cards(draw: st.DrawFn) -> str:
    prefix, length = draw(st.sampled_from([("4", 16), ("51", 16), ("2221", 16), ("37", 15), ("6011", 16),
                                           ("3530", 16)]))
    body = prefix + "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=length - len(prefix) - 1,
                                          max_size=length - len(prefix) - 1)))
    digits = next(body + d for d in "0123456789" if luhn_ok(body + d))
    sep = draw(st.sampled_from(["", " ", "-"]))
    return sep.join(digits[i:i + 4] for i in range(0, len(digits), 4)) if sep else digits


# Filler that cannot glue onto a planted value: no letters, digits or address punctuation.
FILLER = st.text(st.characters(blacklist_categories=("L", "N", "Cs"), blacklist_characters="@.-_+%'/:#=~&()"),
                 max_size=20)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises_and_spans_are_sane(text: str) -> None:
    _, counts = DETECTOR.redact(text)
    spans = DETECTOR.find(text)
    assert all(0 <= s < e <= len(text) for s, e, _ in spans)
    assert all(a.end <= b.start for a, b in itertools.pairwise(spans))
    assert sum(counts.values()) == len(spans) and set(counts) == set(TYPES)
    assert DETECTOR.redact(text, replace=False) == (text, counts)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(FILLER, st.one_of(EMAILS, cards())), min_size=1, max_size=5), FILLER)
def test_planted_emails_and_cards_never_survive(parts: list[tuple[str, str]], tail: str) -> None:
    text = "".join(f"{f} {v} " for f, v in parts) + tail
    out, counts = DETECTOR.redact(text)
    for _, value in parts:
        assert value not in out, (value, out)
    assert counts["email"] + counts["card"] == len(parts)
