"""datatrove's C4 rules with the same decisions and rewrites, minus work that cannot change them.

Differences from ``C4QualityFilter.filter``, none of which can change an outcome:
- sentences are counted only until ``min_num_sentences`` is reached (the count is only ever compared with that
  minimum, and it never decreases); ``metrics: true`` counts them all, for its column;
- with our regex tokenizer a line's sentences are counted without building them
  (``FastEnglishTokenizer.count_sentences``, the same count);
- datatrove's per-line stats counters, which this project does not read, are not updated.
Parity test: ``tests/curation/stages/filters/test_c4_parity.py`` (decision and rewritten text).
"""

from __future__ import annotations

import sys
from typing import Any


def make_fast_filter(**kwargs: Any) -> Any:
    from datatrove.pipeline.filters.c4_filters import (
        CITATION_REGEX, ELLIPSIS, END_PUNCTUATION, POLICY_SUBSTRINGS, C4QualityFilter,
    )
    from datatrove.utils.text import split_into_sentences

    class FastC4QualityFilter(C4QualityFilter):  # type: ignore[misc, valid-type]
        #: Set by the stage for ``metrics: true``: a kept document comes back as (True, "", {column: value}),
        #: its sentences counted to the end (datatrove's count) instead of stopping at the minimum.
        return_metrics: bool = False

        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            # Our regex tokenizer counts a line's sentences without building them (the same count, tested in
            # test_word_tokenizer.py); spaCy's has no such method.
            self._count_sentences = getattr(self.language, "count_sentences", None) or self._split_count

        def _split_count(self, line: str) -> int:
            return len(split_into_sentences(line, self.language))

        def filter(self, doc: Any) -> bool | tuple[bool, str, dict[str, Any]]:
            lines = doc.text.splitlines() if self.split_paragraph else split_into_sentences(doc.text, self.language)
            # Counting past the minimum cannot change a decision; only a kept document's metric needs the full count.
            # (-1, rule off, counts nothing, as datatrove.)
            stop_at = sys.maxsize if self.return_metrics and self.min_num_sentences != -1 else self.min_num_sentences
            unit = "line" if self.split_paragraph else "sentence"  # what ``line`` numbers below
            num_sentences = 0
            kept_lines = []
            for number, line in enumerate(lines, start=1):
                line = line.strip()
                words = line.split()
                if self.max_word_length != -1 and any(len(word) > self.max_word_length for word in words):
                    continue
                if self.remove_citations:
                    line = CITATION_REGEX.sub("", line)
                if self.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS)):
                    continue
                if len(words) < self.min_words_per_line:
                    continue
                line_l = line.lower()
                if self.filter_lorem_ipsum and "lorem ipsum" in line_l:
                    return False, "lorem_ipsum", {"line": number, "unit": unit}
                if self.filter_javascript and "javascript" in line_l:
                    continue
                if self.filter_curly_bracket and "{" in line:
                    return False, "curly_bracket", {"line": number, "unit": unit}
                if self.filter_policy and any(p in line_l for p in POLICY_SUBSTRINGS):
                    continue
                if num_sentences < stop_at:
                    num_sentences += self._count_sentences(line) if self.split_paragraph else 1
                kept_lines.append(line)
            if num_sentences < self.min_num_sentences:
                return False, "too_few_sentences", {"sentences": num_sentences, "min": self.min_num_sentences}
            doc.text = ("\n" if self.split_paragraph else " ").join(kept_lines).strip()
            if self.return_metrics:  # None where the rule is off (datatrove does not count then); names: metrics.py
                return True, "", {"c4_n_sentences": num_sentences if self.min_num_sentences != -1 else None}
            return True

    return FastC4QualityFilter(**kwargs)
