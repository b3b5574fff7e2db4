"""C4 rules (Raffel et al. 2020) via datatrove's ``C4QualityFilter``; it also removes bad lines.

Defaults follow FineWeb's use (``filter_no_terminal_punct=False``) and datatrove's thresholds
(5 sentences, 3 words per line), which differ from TFDS (docs/methods.md, C4 rules).
"""

from __future__ import annotations

from dataclasses import dataclass

from curation.registry import register_stage
from curation.stages.filters._datatrove import DatatroveFilter, DatatroveImplOptions


@dataclass(kw_only=True)
class C4QualityConfig(DatatroveImplOptions):
    """Line- and page-level C4 rules; each boolean switches one rule."""

    split_paragraph: bool = True
    remove_citations: bool = True
    filter_no_terminal_punct: bool = False
    min_num_sentences: int = 5
    min_words_per_line: int = 3
    max_word_length: int = 1000
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True


@register_stage("c4_quality_v1")
class C4Quality(DatatroveFilter):
    """Drops pages failing C4's rules and rewrites kept pages without their bad lines."""

    Config = C4QualityConfig
    datatrove_filter = "C4QualityFilter"
    fast_filter = "curation.stages.filters._c4"  # stops counting sentences once enough, same results
