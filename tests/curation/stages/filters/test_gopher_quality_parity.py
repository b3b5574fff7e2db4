"""The memoised Gopher quality filter decides exactly as datatrove's, on the sample corpus and odd words."""

from __future__ import annotations

import pyarrow as pa
import pytest

from curation.io.readers import InputConfig, read_documents
from curation.stages.base import Doc
from curation.stages.filters.gopher_quality import GopherQuality, GopherQualityConfig
from tests.conftest import PROSE, SAMPLE

ODD = [
    PROSE[0] + " ## ### #### … ... -- ²³ ½ ０１２ café naïve Ωmega _under_ ---",
    "\n".join(f"- item {i} with some words here ..." for i in range(60)),
    "\n".join(f"• {w} {w}" for w in PROSE[1].split()),
    " ".join(["!!!", "???", "...", "word"] * 40),
    PROSE[2].replace(" the ", " ") + " 12345 67890 " * 30,
]


@pytest.mark.parametrize("tokenizer", ["fast", "spacy"])
def test_decisions_equal_datatrove(tokenizer: str) -> None:
    cfg = InputConfig(paths=["-"])
    files = sorted(SAMPLE.glob("*.jsonl.gz"))
    table = pa.concat_tables([b.table for f in files for b in read_documents(str(f), f.name, cfg)])
    texts = table.column("text").to_pylist() + ODD
    if tokenizer == "spacy":
        texts = texts[::5] + ODD  # spaCy is slow: every fifth document
    fast = GopherQuality(GopherQualityConfig(implementation="fast", word_tokenizer=tokenizer))
    ref = GopherQuality(GopherQualityConfig(implementation="datatrove", word_tokenizer=tokenizer))
    fast.setup()
    ref.setup()
    mismatches = [(i, a, b) for i, t in enumerate(texts)
                  if (a := fast.filter(Doc(id=str(i), text=t))) != (b := ref.filter(Doc(id=str(i), text=t)))]
    assert mismatches == []
    reasons = {o if o is True else o[1] for o in (ref.filter(Doc(id="x", text=t)) for t in texts)}
    assert len(reasons) >= 4  # the corpus exercises several rules, not just 'keep'
