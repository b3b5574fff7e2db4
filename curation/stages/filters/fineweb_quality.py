"""FineWeb's extra rules via datatrove's ``FineWebQualityFilter`` (docs/methods.md, FineWeb rules).

``char_duplicates_ratio`` defaults to datatrove's 0.01, not the FineWeb write-up's 0.1 (a deviation noted there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from curation.registry import register_stage
from curation.stages.filters._datatrove import DatatroveFilter, DatatroveOptions


@dataclass(kw_only=True)
class FineWebQualityConfig(DatatroveOptions):
    """Line punctuation, short-line, duplicated-character and newline-ratio thresholds."""

    line_punct_thr: float = 0.12
    line_punct_exclude_zero: bool = False
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3


@register_stage("fineweb_quality_v1")
class FineWebQuality(DatatroveFilter):
    """Drops list-like pages and pages with few punctuated or many duplicated lines."""

    Config = FineWebQualityConfig
    datatrove_filter = "FineWebQualityFilter"

    def make_filter(self) -> Any:
        # datatrove's rules, returning each drop's value and threshold (same decisions: test_drop_details.py)
        from curation.stages.filters._fineweb import make_fast_filter

        return make_fast_filter(**self._kwargs())
