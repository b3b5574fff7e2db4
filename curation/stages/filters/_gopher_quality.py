"""datatrove's Gopher quality rules with per-word properties memoised: the same decisions, faster.

datatrove's ``GopherQualityFilter.filter`` evaluates two per-character generators for every word
of every document (is it all punctuation? does it contain a letter?). Words repeat heavily, so
here those two answers (and the length) are computed once per distinct word and cached; every
rule and threshold is datatrove's, evaluated in the same order (parity test:
``tests/curation/stages/filters/test_gopher_quality_parity.py``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any


def make_fast_filter(**kwargs: Any) -> Any:
    from datatrove.pipeline.filters.gopher_quality_filter import GopherQualityFilter
    from datatrove.utils.text import PUNCTUATION_SET, split_into_words

    class FastGopherQualityFilter(GopherQualityFilter):  # type: ignore[misc, valid-type]
        _flags: dict[str, tuple[bool, bool, int]]
        #: Set by the stage for ``metrics: true``: a kept document comes back as (True, "", {column: value}).
        return_metrics: bool = False

        def _word_flags(self, w: str) -> tuple[bool, bool, int]:
            f = self._flags.get(w)
            if f is None:
                f = (any(ch not in PUNCTUATION_SET for ch in w), any(c.isalpha() for c in w), len(w))
                if len(self._flags) > 1_000_000:  # bound the memo on endless vocabularies
                    self._flags.clear()
                self._flags[w] = f
            return f

        def filter(self, doc: Any) -> bool | tuple[bool, str, dict[str, Any]]:
            text = doc.text
            words = split_into_words(text, self.language)  # datatrove's lru-cached split, shared with other filters
            n_words = len(words)
            counts = Counter(words)  # per distinct word from here on (C-speed counting)
            n_non_symbol = total_len = n_alpha = 0
            memo, compute = self._flags.get, self._word_flags
            for w, c in counts.items():
                non_symbol, alpha, length = memo(w) or compute(w)
                if non_symbol:
                    n_non_symbol += c
                    total_len += length * c
                if alpha:
                    n_alpha += c
            if self.min_doc_words and n_non_symbol < self.min_doc_words:
                return False, "gopher_short_doc", {"words": n_non_symbol, "min": self.min_doc_words}
            if self.max_doc_words and n_non_symbol > self.max_doc_words:
                return False, "gopher_long_doc", {"words": n_non_symbol, "max": self.max_doc_words}
            # An exact integer sum over a count, as np.mean of the lengths (no float rounding differs).
            avg = total_len / n_non_symbol if n_non_symbol else float("nan")
            if self.min_avg_word_length and avg < self.min_avg_word_length:
                return False, "gopher_below_avg_threshold", {"avg_word_length": avg, "min": self.min_avg_word_length}
            if self.max_avg_word_length and avg > self.max_avg_word_length:
                return False, "gopher_above_avg_threshold", {"avg_word_length": avg, "max": self.max_avg_word_length}
            # Each ratio is computed only when its rule is on, as datatrove does (n_words may be 0 otherwise).
            hashes = text.count("#") / n_words if self.max_symbol_word_ratio else None
            if hashes is not None and hashes > self.max_symbol_word_ratio:
                return False, "gopher_too_many_hashes", {"hash_word_ratio": hashes, "max": self.max_symbol_word_ratio}
            ellipses = (text.count("...") + text.count("…")) / n_words if self.max_symbol_word_ratio else None
            if ellipses is not None and ellipses > self.max_symbol_word_ratio:
                return False, "gopher_too_many_ellipsis", {"ellipsis_word_ratio": ellipses,
                                                           "max": self.max_symbol_word_ratio}
            lines = text.splitlines()
            bullets = (sum(s.lstrip().startswith("•") or s.lstrip().startswith("-") for s in lines) / len(lines)
                       if self.max_bullet_lines_ratio else None)
            if bullets is not None and bullets > self.max_bullet_lines_ratio:
                return False, "gopher_too_many_bullets", {"bullet_lines_ratio": bullets,
                                                          "max": self.max_bullet_lines_ratio}
            end_ellipses = (sum(s.rstrip().endswith("...") or s.rstrip().endswith("…") for s in lines) / len(lines)
                            if self.max_ellipsis_lines_ratio else None)
            if end_ellipses is not None and end_ellipses > self.max_ellipsis_lines_ratio:
                return False, "gopher_too_many_end_ellipsis", {"ellipsis_lines_ratio": end_ellipses,
                                                               "max": self.max_ellipsis_lines_ratio}
            alpha_ratio = n_alpha / n_words if self.max_non_alpha_words_ratio else None
            if alpha_ratio is not None and alpha_ratio < self.max_non_alpha_words_ratio:
                return False, "gopher_below_alpha_threshold", {"alpha_words_ratio": alpha_ratio,
                                                               "min": self.max_non_alpha_words_ratio}
            stops = len(self.stop_words.intersection(counts)) if self.min_stop_words else None
            if stops is not None and stops < self.min_stop_words:
                return False, "gopher_enough_stop_words", {"stop_words": stops, "min": self.min_stop_words}
            if not self.return_metrics:
                return True
            # Kept, with every rule's value (names: metrics.py); None where the rule is off or had nothing to measure.
            return True, "", {
                "gopher_n_words": n_non_symbol if self.min_doc_words or self.max_doc_words else None,
                "gopher_avg_word_length": (avg if (self.min_avg_word_length or self.max_avg_word_length)
                                           and n_non_symbol else None),
                "gopher_hash_word_ratio": hashes, "gopher_ellipsis_word_ratio": ellipses,
                "gopher_bullet_lines_ratio": bullets, "gopher_ellipsis_lines_ratio": end_ellipses,
                "gopher_alpha_words_ratio": alpha_ratio, "gopher_n_stop_words": stops}

    f = FastGopherQualityFilter(**kwargs)
    f._flags = {}
    return f
