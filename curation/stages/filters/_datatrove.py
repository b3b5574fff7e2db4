"""Adapter that runs one of datatrove's document filters as a batch stage.

We reuse datatrove's rule implementations unchanged (DESIGN: reuse, don't rewrite); this class
only converts rows to ``datatrove.data.Document`` and carries back text rewrites (C4 removes
lines) and the reason string datatrove returns.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from curation.stages.base import Doc, Filter, FilterOutcome


class DatatroveFilter(Filter):
    """Base of the datatrove-backed filters; subclasses implement ``make_filter``."""

    requires = ("datatrove", "spacy")

    def make_filter(self) -> Any:
        raise NotImplementedError

    def setup(self) -> None:
        self._impl = self.make_filter()

    def _kwargs(self) -> dict[str, Any]:
        kw = dataclasses.asdict(self.config)
        tokenizer = kw.pop("word_tokenizer", "fast")
        if tokenizer == "fast" and kw.get("language", "en") == "en":
            from curation.stages.filters.word_tokenizer import FastEnglishTokenizer

            kw["language"] = FastEnglishTokenizer()  # datatrove accepts a WordTokenizer here
        return kw

    def filter(self, doc: Doc) -> FilterOutcome:
        from datatrove.data import Document

        if not hasattr(self, "_impl"):
            self.setup()
        dt_doc = Document(text=doc.text, id=doc.id, metadata={"url": doc.url} if doc.url else {})
        outcome = self._impl.filter(dt_doc)
        if dt_doc.text != doc.text:
            doc.text = dt_doc.text
        return outcome
