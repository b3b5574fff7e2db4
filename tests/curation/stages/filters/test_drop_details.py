"""Every heuristic-filter drop explains itself: the measured value and the threshold of the rule that fired, the
same from our fast filters and from datatrove's classes, and on the failing side of the threshold."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.io.readers import InputConfig, read_documents
from curation.stages.base import Doc
from curation.stages.filters.c4_quality import C4Quality, C4QualityConfig
from curation.stages.filters.fineweb_quality import FineWebQuality, FineWebQualityConfig
from curation.stages.filters.gopher_quality import GopherQuality, GopherQualityConfig
from curation.stages.filters.gopher_repetition import GopherRepetition, GopherRepetitionConfig
from tests.conftest import PROSE, SAMPLE
from tests.curation.stages.filters.helpers import batch_of

# Texts that fire rules the sample corpus rarely fires.
ODD = [
    PROSE[0] + " ## ### #### … ... -- ²³ ½",
    "\n".join(f"- item {i} with some words here ..." for i in range(60)),
    "\n".join(f"• {w} {w}" for w in PROSE[1].split()),
    " ".join(["!!!", "???", "...", "word"] * 40),
    (PROSE[0] + "\n\n") * 6,
    "\n".join([PROSE[1]] * 8),
    " ".join(["the cat sat on the mat"] * 40),
    PROSE[2] + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.\n" + PROSE[0],
    PROSE[1] + "\nfunction f() { return 1; } is some code here\n" + PROSE[0],
    "Short line.\nAnother one.\nok",
    "\n".join(["word"] * 50),
    "",  # empty (Gopher repetition) and whitespace only (FineWeb): their drops say so too
    " \n \t\n",
]


def _filters(implementation: str) -> list[Any]:
    impl = {"implementation": implementation}
    return [GopherQuality(GopherQualityConfig(**impl)), GopherRepetition(GopherRepetitionConfig(**impl)),
            C4Quality(C4QualityConfig(**impl)), FineWebQuality(FineWebQualityConfig())]


def _texts() -> list[str]:
    cfg = InputConfig(paths=["-"])
    files = sorted(SAMPLE.glob("*.jsonl.gz"))
    table = pa.concat_tables([b.table for f in files for b in read_documents(str(f), f.name, cfg)])
    return table.column("text").to_pylist()[::3] + ODD


def _check(stage: Any, text: str, outcome: Any) -> None:
    """A drop's details hold a threshold and a measured value beyond it (or the line that fired)."""
    if outcome is True:
        return
    name = type(stage).__name__
    assert len(outcome) == 3 and outcome[2], (name, outcome, text[:200])
    details = outcome[2]
    if "line" in details:  # C4's whole-document rules: the line (or sentence) holding the trigger
        lines = text.splitlines() if details["unit"] == "line" else None
        if lines is not None:
            line = lines[details["line"] - 1].lower()
            assert ("lorem ipsum" in line) if outcome[1] == "lorem_ipsum" else ("{" in line), (details, line)
        return
    (value,) = [v for k, v in details.items() if k not in ("min", "max", "n", "short_line_length")]
    if "min" in details:
        assert value < details["min"], (name, outcome)
    else:
        assert value > details["max"], (name, outcome)


def test_every_drop_has_its_value_and_threshold_and_both_implementations_agree() -> None:
    texts = _texts()
    fast, ref = _filters("fast"), _filters("datatrove")
    seen: dict[str, set[str]] = {}
    for f, r in zip(fast, ref):
        for i, text in enumerate(texts):
            a, b = f.filter(Doc(id=str(i), text=text)), r.filter(Doc(id=str(i), text=text))
            assert a == b, (type(f).__name__, a, b)
            _check(f, text, a)
            if a is not True:
                seen.setdefault(type(f).__name__, set()).add(a[1])
    # The texts exercise several rules of every filter (so the assertions above are not vacuous).
    assert {k: len(v) >= 2 for k, v in seen.items()} == dict.fromkeys(
        ["GopherQuality", "GopherRepetition", "C4Quality", "FineWebQuality"], True), seen


def test_fineweb_decides_as_datatrove_s_own_class() -> None:
    from datatrove.data import Document
    from datatrove.pipeline.filters import FineWebQualityFilter

    ours, theirs = FineWebQuality(FineWebQualityConfig()), FineWebQualityFilter()
    ours.setup()
    theirs.language = ours._impl.language  # (the same word tokenizer)
    for i, text in enumerate(_texts()):
        a, b = ours.filter(Doc(id=str(i), text=text)), theirs.filter(Document(text=text, id=str(i)))
        assert (a is True and b is True) or (a is not True and b is not True and a[1] == b[1]), (a, b)


def test_a_drop_reads_back_from_the_stage_as_json_details() -> None:
    """Through ``process`` (what the executors write to decisions/): `details` is the JSON of the values."""
    import json

    stage = GopherQuality(GopherQualityConfig())
    res = stage.process(batch_of([" ".join(["ab"] * 60)]))
    assert res.reasons == ["gopher_below_avg_threshold"]
    assert json.loads(res.details[0]) == {"avg_word_length": 2.0, "min": 3}

words = st.sampled_from(["the", "a", "of", "word", "cat", "...", "#", "-", "•", "lorem", "ipsum", "{", "}", "x" * 12,
                         "and", "is", "to", "Déjà", "123", "!!!"])
lines = st.lists(words, min_size=0, max_size=14).map(" ".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(lines, min_size=1, max_size=30).map("\n".join))
def test_fuzzed_texts_drop_with_consistent_details(text: str) -> None:
    for f in _FAST:
        _check(f, text, f.filter(Doc(id="h", text=text)))


_FAST = _filters("fast")
