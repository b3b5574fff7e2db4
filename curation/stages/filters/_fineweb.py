"""datatrove's FineWeb rules, returning with each drop the measured value and the threshold of the rule that fired.

Every rule, threshold and order is ``FineWebQualityFilter.filter``'s; only the return value differs (a third
element, the details). ``fineweb_quality_v1`` decides with it; ``tests/curation/stages/filters/test_drop_details.py``
holds it to datatrove's class's decisions.
"""

from __future__ import annotations

from typing import Any


def make_fast_filter(**kwargs: Any) -> Any:
    from datatrove.pipeline.filters.fineweb_quality_filter import FineWebQualityFilter
    from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates
    from datatrove.utils.text import split_into_words

    class ExplainingFineWebQualityFilter(FineWebQualityFilter):  # type: ignore[misc, valid-type]
        #: Set by the stage for ``metrics: true``: a kept document comes back as (True, "", {column: value}).
        return_metrics: bool = False

        def filter(self, doc: Any) -> bool | tuple[bool, str] | tuple[bool, str, dict[str, Any]]:
            lines = [line for line in doc.text.split("\n") if line.strip() != ""]
            if len(lines) == 0:
                return False, "empty", {"non_blank_lines": 0, "min": 1}  # whitespace only: says so, as every drop
            punct = sum(1 for line in lines if line.endswith(self.stop_chars)) / len(lines)
            if punct < self.line_punct_thr and not (punct == 0 and self.line_punct_exclude_zero):
                return False, "line_punct_ratio", {"line_punct_ratio": punct, "min": self.line_punct_thr}
            short = sum(1 for line in lines if len(line) <= self.short_line_length) / len(lines)
            if short > self.short_line_threshold:
                return False, "short_line_ratio", {"short_line_ratio": short, "max": self.short_line_threshold,
                                                   "short_line_length": self.short_line_length}
            dup = find_duplicates(lines)[1] / len(doc.text.replace("\n", ""))
            if dup > self.char_duplicates_ratio:
                return False, "char_dup_ratio", {"char_dup_ratio": dup, "max": self.char_duplicates_ratio}
            words = split_into_words(doc.text, self.language)
            newline = doc.text.count("\n") / len(words)
            if newline > self.new_line_ratio:
                return False, "list_ratio", {"newline_word_ratio": newline, "max": self.new_line_ratio}
            if self.return_metrics:  # every rule always runs, so every value is measured (names: metrics.py)
                return True, "", {"fineweb_line_punct_ratio": punct, "fineweb_short_line_ratio": short,
                                  "fineweb_char_dup_ratio": dup, "fineweb_newline_word_ratio": newline}
            return True

    return ExplainingFineWebQualityFilter(**kwargs)
