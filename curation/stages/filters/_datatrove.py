"""Adapter that runs one of datatrove's document filters as a batch stage.

We reuse datatrove's rule implementations rather than rewrite them (their decisions are the
reference the parity tests hold us to); this class only converts rows to
``datatrove.data.Document`` and carries back text rewrites (C4 removes lines) and the reason
string datatrove returns.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

import pyarrow as pa

from curation.config import check_choices

from curation.stages.base import Doc, Filter, FilterOutcome
from curation.stages.filters import metrics as filter_metrics

Implementation = Literal["datatrove", "fast"]
IMPLEMENTATIONS = get_args(Implementation)


@dataclass(kw_only=True)
class DatatroveOptions:
    """Options every datatrove-backed heuristic filter takes, besides its thresholds."""

    language: str = "en"
    word_tokenizer: str = "fast"  # "fast" (regex, see word_tokenizer.py) or "spacy" (datatrove default)
    #: Write every rule's measured value as a column on kept documents (names and types: metrics.py), so a
    #: what-if can move these thresholds too. Off by default: it costs the values the decisions do not need.
    metrics: bool = False

    #: Left out of the fingerprint at these values (as dedup's ``against: []``): runs made before keep theirs.
    FINGERPRINT_DEFAULTS: ClassVar[dict[str, Any]] = {"metrics": False}


@dataclass(kw_only=True)
class DatatroveImplOptions(DatatroveOptions):
    """Options of a filter that also has its own faster implementation with the same decisions."""

    implementation: Implementation = "fast"  # "fast" (ours, same decisions as datatrove's) or "datatrove"

    def __post_init__(self) -> None:
        check_choices(self)


class DatatroveFilter(Filter):
    """Base of the datatrove-backed filters.

    A subclass names datatrove's filter class (``datatrove_filter``) and, when it has a faster
    equivalent, the module whose ``make_fast_filter(**kwargs)`` builds it (``fast_filter``);
    both are imported only in ``setup`` so that building the stage on the driver stays cheap.
    Subclasses with other constructor arguments override ``make_filter``.
    """

    requires = ("datatrove", "spacy")
    #: Class name in ``datatrove.pipeline.filters``.
    datatrove_filter: ClassVar[str] = ""
    #: Module with ``make_fast_filter`` for ``implementation: fast`` (same decisions, each drop with its details);
    #: None: datatrove's class serves both. A config without ``implementation`` decides with datatrove's class and
    #: uses this one only to explain drops.
    fast_filter: ClassVar[str | None] = None

    def make_filter(self) -> Any:
        kwargs = self._kwargs()
        if kwargs.pop("implementation", "datatrove") == "fast" and self.fast_filter:
            return importlib.import_module(self.fast_filter).make_fast_filter(**kwargs)
        return getattr(importlib.import_module("datatrove.pipeline.filters"), self.datatrove_filter)(**kwargs)

    def setup(self) -> None:
        self._impl = self.make_filter()
        # Our filters return a kept document's values themselves; datatrove's classes cannot, so ``filter``
        # measures their kept documents with the restatement of datatrove's code (``_reference_metrics``).
        self._measure: Callable[[Any, str], dict[str, Any]] | None = None
        if self._metrics_on():
            if hasattr(self._impl, "return_metrics"):
                self._impl.return_metrics = True
            else:
                from curation.stages.filters._reference_metrics import MEASURE

                self._measure = MEASURE[self.name]

    def _metrics_on(self) -> bool:
        return bool(getattr(self.config, "metrics", False))  # (url_filter_v1's config has no such option)

    def output_columns(self) -> dict[str, pa.DataType]:
        """The metric columns with ``metrics: true`` (null where a rule is off or had nothing to measure)."""
        return filter_metrics.columns(self.name, dataclasses.asdict(self.config)) if self._metrics_on() else {}

    def _kwargs(self) -> dict[str, Any]:
        kw = dataclasses.asdict(self.config)
        kw.pop("metrics", None)  # ours, not a datatrove argument: ``setup`` switches it on the filter built
        tokenizer = kw.pop("word_tokenizer", "fast")
        if tokenizer == "fast" and kw.get("language", "en") == "en":
            from curation.stages.filters.word_tokenizer import FastEnglishTokenizer

            kw["language"] = FastEnglishTokenizer()  # datatrove accepts a WordTokenizer here
        return kw

    def filter(self, doc: Doc) -> FilterOutcome:
        from datatrove.data import Document

        if not hasattr(self, "_impl"):
            self.setup()
        text = doc.text
        dt_doc = Document(text=text, id=doc.id, metadata={"url": doc.url} if doc.url else {})
        outcome = self._impl.filter(dt_doc)
        if dt_doc.text != doc.text:
            doc.text = dt_doc.text
        if isinstance(outcome, tuple) and len(outcome) == 2 and not outcome[0]:
            details = self.explain(outcome[1], text, doc)
            if details is not None:
                return False, outcome[1], details
        if outcome is True and self._measure is not None:
            return True, "", self._measure(self._impl, text)  # the text as the filter saw it (C4 rewrites)
        return outcome

    def explain(self, reason: str, text: str, doc: Doc) -> dict[str, Any] | None:
        """Details of a drop whose filter gave only a reason (datatrove's classes): the measured value and the
        threshold of the rule that fired. Our fast filters return them with the decision; for datatrove's own
        class the fast filter is run again on the same text (drops only) and its details are used when it names
        the same rule (the parity tests hold them to the same decisions)."""
        if not self.fast_filter:
            return None
        from datatrove.data import Document

        if not hasattr(self, "_explainer"):
            kwargs = self._kwargs()
            kwargs.pop("implementation", None)
            self._explainer = importlib.import_module(self.fast_filter).make_fast_filter(**kwargs)
        again = self._explainer.filter(Document(text=text, id=doc.id, metadata={"url": doc.url} if doc.url else {}))
        if isinstance(again, tuple) and len(again) == 3 and again[1] == reason:
            return again[2]
        return None
