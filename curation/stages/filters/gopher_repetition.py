"""Gopher repetition rules (Rae et al. 2021, Table A1), with datatrove's exact semantics.

``implementation: fast`` (default) computes datatrove's statistics with hashed n-grams
(``_repetition.py``, same decisions, several times faster); ``datatrove`` runs datatrove's
``GopherRepetitionFilter`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from curation.registry import register_stage
from curation.stages.filters._datatrove import DatatroveFilter, DatatroveImplOptions


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


@register_stage("gopher_repetition_v1")
class GopherRepetition(DatatroveFilter):
    """Drops documents with too many repeated lines, paragraphs or n-grams."""

    Config = GopherRepetitionConfig
    datatrove_filter = "GopherRepetitionFilter"
    fast_filter = "curation.stages.filters._repetition"  # hashed n-grams, same decisions

    def _kwargs(self) -> dict[str, Any]:
        kw = super()._kwargs()
        kw["top_n_grams"] = tuple((int(n), float(f)) for n, f in kw["top_n_grams"])
        kw["dup_n_grams"] = tuple((int(n), float(f)) for n, f in kw["dup_n_grams"])
        return kw
