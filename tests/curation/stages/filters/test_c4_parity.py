"""The fast C4 filter gives datatrove's decision and rewritten text on the sample corpus and odd pages."""

from __future__ import annotations

import pyarrow as pa
import pytest

from curation.io.readers import InputConfig, read_documents
from curation.stages.base import Doc
from curation.stages.filters.c4_quality import C4Quality, C4QualityConfig
from tests.conftest import PROSE, SAMPLE

ODD = [
    PROSE[0] + "\nLorem ipsum dolor sit amet.",
    PROSE[1] + "\nThis site uses cookies to work.\nEnable JavaScript to see it.\n" + PROSE[2],
    "One. Two. Three.\nFour five six.",  # too few sentences
    PROSE[0] + " [1] [edit] [citation needed]\n" + "x" * 1200 + " long word line.\nA {bracket} here.",
    "\n".join(PROSE) + "\nshort\n...\nEnds without punctuation",
]


@pytest.mark.parametrize("cfg", [{}, {"filter_no_terminal_punct": True}, {"split_paragraph": False},
                                 {"min_num_sentences": -1}])
def test_same_decisions_and_text_as_datatrove(cfg: dict) -> None:
    files = sorted(SAMPLE.glob("*.jsonl.gz"))
    table = pa.concat_tables([b.table for f in files for b in read_documents(str(f), f.name, InputConfig(paths=["-"]))])
    texts = table.column("text").to_pylist() + ODD
    fast = C4Quality(C4QualityConfig(implementation="fast", **cfg))
    ref = C4Quality(C4QualityConfig(implementation="datatrove", **cfg))
    fast.setup()
    ref.setup()
    outcomes = set()
    for i, t in enumerate(texts):
        a, b = Doc(id=str(i), text=t), Doc(id=str(i), text=t)
        oa, ob = fast.filter(a), ref.filter(b)
        assert (oa, a.text) == (ob, b.text), i
        outcomes.add(str(ob))
    assert len(outcomes) >= 3
