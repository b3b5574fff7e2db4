"""Gopher repetition rules (Rae et al. 2021, Table A1), with datatrove's exact semantics.

``implementation: fast`` (default) computes datatrove's statistics with hashed n-grams
(``_repetition.py``, same decisions, several times faster); ``datatrove`` runs datatrove's
``GopherRepetitionFilter`` itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from curation.registry import register_stage
from curation.stages.base import Doc, FilterOutcome
from curation.stages.filters._datatrove import DatatroveFilter, DatatroveImplOptions
from curation.stages.filters._repetition import NgramStats

_PARAGRAPH = re.compile(r"\n{2,}")
_LINES = re.compile("\n+")


@dataclass(kw_only=True)
class GopherRepetitionConfig(DatatroveImplOptions):
    """Maximum duplicated fractions (docs/methods.md, Gopher repetition rules).

    n-gram lists are ``[[n, max_fraction], ...]``.
    """

    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    top_n_grams: list[list[float]] = field(default_factory=lambda: [[2, 0.2], [3, 0.18], [4, 0.16]])
    dup_n_grams: list[list[float]] = field(
        default_factory=lambda: [[5, 0.15], [6, 0.14], [7, 0.13], [8, 0.12], [9, 0.11], [10, 0.1]]
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("top_n_grams", "dup_n_grams"):
            for pair in getattr(self, name):
                if len(pair) != 2 or int(pair[0]) != pair[0] or pair[0] < 1:
                    raise ValueError(f"{name}: each entry must be [n, max_fraction], got {pair}")


def _duplicates(parts: list[str]) -> tuple[int, int]:
    seen: set[str] = set()
    count = chars = 0
    for p in parts:
        if p in seen:
            count += 1
            chars += len(p)
        else:
            seen.add(p)
    return count, chars


@register_stage("gopher_repetition_v1")
class GopherRepetition(DatatroveFilter):
    """Drops documents with too many repeated lines, paragraphs or n-grams."""

    Config = GopherRepetitionConfig
    # implementation: fast runs ``filter`` below; datatrove's filter still holds the language and n-gram lists
    datatrove_filter = "GopherRepetitionFilter"

    def _kwargs(self) -> dict[str, Any]:
        kw = super()._kwargs()
        kw["top_n_grams"] = tuple((int(n), float(f)) for n, f in kw["top_n_grams"])
        kw["dup_n_grams"] = tuple((int(n), float(f)) for n, f in kw["dup_n_grams"])
        return kw

    def filter(self, doc: Doc) -> FilterOutcome:
        if self.config.implementation == "datatrove":
            return super().filter(doc)  # (explain below gives its drops their details)
        return self._fast(doc.text)

    def explain(self, reason: str, text: str, doc: Doc) -> dict[str, Any] | None:
        again = self._fast(text)
        if isinstance(again, tuple) and len(again) == 3 and again[1] == reason:
            return again[2]
        return None

    def _fast(self, text: str) -> FilterOutcome:
        """datatrove's rules in its order; a drop carries the measured fraction and its maximum."""
        from datatrove.utils.text import split_into_words

        if not hasattr(self, "_impl"):
            self.setup()
        c = self.config
        if not text:
            return False, "empty"
        paragraphs = _PARAGRAPH.split(text.strip())
        dups, chars = _duplicates(paragraphs)
        if c.dup_para_frac and (r := dups / len(paragraphs)) > c.dup_para_frac:
            return False, "dup_para_frac", {"dup_para_frac": r, "max": c.dup_para_frac}
        if c.dup_para_char_frac and (r := chars / len(text)) > c.dup_para_char_frac:
            return False, "dup_para_char_frac", {"dup_para_char_frac": r, "max": c.dup_para_char_frac}
        lines = _LINES.split(text)
        dups, chars = _duplicates(lines)
        if c.dup_line_frac and (r := dups / len(lines)) > c.dup_line_frac:
            return False, "dup_line_frac", {"dup_line_frac": r, "max": c.dup_line_frac}
        if c.dup_line_char_frac and (r := chars / len(text)) > c.dup_line_char_frac:
            return False, "dup_line_char_frac", {"dup_line_char_frac": r, "max": c.dup_line_char_frac}
        stats = NgramStats(split_into_words(text, self._impl.language))  # shares datatrove's per-text cache
        for n, frac in self._impl.top_n_grams:
            if stats.top_ngram_exceeds(n, frac, len(text)):  # (the exact fraction is computed for drops only)
                return False, f"top_{n}_gram", {"top_ngram_char_frac": stats.top_ngram_chars(n) / len(text),
                                                 "n": n, "max": frac}
        for n, frac in self._impl.dup_n_grams:
            if stats.duplicated_ngram_exceeds(n, frac, len(text)):
                return False, f"duplicated_{n}_n_grams", {
                    "dup_ngram_char_frac": stats.duplicated_ngram_chars(n) / len(text), "n": n, "max": frac}
        return True
