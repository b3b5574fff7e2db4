"""datatrove's C4 rules with the same decisions and rewrites, minus work that cannot change them.

Two differences from ``C4QualityFilter.filter``, neither of which can change an outcome:
sentences are counted only until ``min_num_sentences`` is reached (the count is only ever
compared with that minimum, and it never decreases), and datatrove's per-line stats counters,
which this project does not read, are not updated. Parity test:
``tests/curation/stages/filters/test_c4_parity.py`` (decision and rewritten text).
"""

from __future__ import annotations

from typing import Any


def make_fast_filter(**kwargs: Any) -> Any:
    from datatrove.pipeline.filters.c4_filters import (
        CITATION_REGEX, ELLIPSIS, END_PUNCTUATION, POLICY_SUBSTRINGS, C4QualityFilter,
    )
    from datatrove.utils.text import split_into_sentences

    class FastC4QualityFilter(C4QualityFilter):  # type: ignore[misc, valid-type]
        def filter(self, doc: Any) -> bool | tuple[bool, str, dict[str, Any]]:
            lines = doc.text.splitlines() if self.split_paragraph else split_into_sentences(doc.text, self.language)
            need = self.min_num_sentences
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
                if need != -1 and num_sentences < need:  # counting further cannot change the outcome
                    num_sentences += len(split_into_sentences(line, self.language)) if self.split_paragraph else 1
                kept_lines.append(line)
            if num_sentences < self.min_num_sentences:
                return False, "too_few_sentences", {"sentences": num_sentences, "min": self.min_num_sentences}
            doc.text = ("\n" if self.split_paragraph else " ").join(kept_lines).strip()
            return True

    return FastC4QualityFilter(**kwargs)
