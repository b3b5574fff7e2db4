"""A kept document's metric values measured as datatrove's own filter code measures them.

datatrove's classes only say keep or drop, so with ``implementation: datatrove`` and ``metrics: true`` the stage
measures each kept document here. Every formula restates the line of datatrove's ``filter`` it mirrors, with
datatrove's own helpers (``find_duplicates``, ``get_n_grams``, ``find_top_duplicate``, ``find_all_duplicate``) and
none of our fast paths, so the metrics tests hold the fast filters' values to an independent computation. A value is
None where its rule is off (datatrove computes nothing then) or where there is nothing to measure. ``f`` is the
configured datatrove filter (its attributes are the thresholds); column names are those of ``metrics.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np


def gopher_quality(f: Any, text: str) -> dict[str, Any]:
    from datatrove.utils.text import PUNCTUATION_SET, split_into_words

    words = split_into_words(text, f.language)
    non_symbol_words = [w for w in words if any(ch not in PUNCTUATION_SET for ch in w)]
    lines = text.splitlines()
    symbol = f.max_symbol_word_ratio
    return {
        "gopher_n_words": len(non_symbol_words) if f.min_doc_words or f.max_doc_words else None,
        "gopher_avg_word_length": (float(np.mean([len(w) for w in non_symbol_words]))
                                   if (f.min_avg_word_length or f.max_avg_word_length) and non_symbol_words else None),
        "gopher_hash_word_ratio": text.count("#") / len(words) if symbol else None,
        "gopher_ellipsis_word_ratio": (text.count("...") + text.count("…")) / len(words) if symbol else None,
        "gopher_bullet_lines_ratio": (sum(s.lstrip().startswith("•") or s.lstrip().startswith("-") for s in lines)
                                      / len(lines) if f.max_bullet_lines_ratio else None),
        "gopher_ellipsis_lines_ratio": (sum(s.rstrip().endswith("...") or s.rstrip().endswith("…") for s in lines)
                                        / len(lines) if f.max_ellipsis_lines_ratio else None),
        "gopher_alpha_words_ratio": (sum([any(c.isalpha() for c in w) for w in words]) / len(words)
                                     if f.max_non_alpha_words_ratio else None),
        "gopher_n_stop_words": len(f.stop_words.intersection(set(words))) if f.min_stop_words else None,
    }


def gopher_repetition(f: Any, text: str) -> dict[str, Any]:
    from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate as find_all
    from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates, find_top_duplicate, get_n_grams
    from datatrove.utils.text import split_into_words

    paragraphs = re.split(r"\n{2,}", text.strip())
    para_dups, para_chars = find_duplicates(paragraphs)
    lines = re.split("\n+", text)
    line_dups, line_chars = find_duplicates(lines)
    out: dict[str, Any] = {
        "gopher_rep_dup_para_frac": para_dups / len(paragraphs) if f.dup_para_frac else None,
        "gopher_rep_dup_para_char_frac": para_chars / len(text) if f.dup_para_char_frac else None,
        "gopher_rep_dup_line_frac": line_dups / len(lines) if f.dup_line_frac else None,
        "gopher_rep_dup_line_char_frac": line_chars / len(text) if f.dup_line_char_frac else None,
    }
    words = split_into_words(text, f.language)
    for n, _ in f.top_n_grams:
        n_grams = get_n_grams(words, n)
        out[f"gopher_rep_top_{n}_gram_char_frac"] = find_top_duplicate(n_grams) / len(text) if n_grams else None
    for n, _ in f.dup_n_grams:
        out[f"gopher_rep_dup_{n}_gram_char_frac"] = find_all(words, n) / len(text)
    return out


def c4_quality(f: Any, text: str) -> dict[str, Any]:
    """The sentence count of datatrove's line loop (its page-dropping rules cannot fire on a kept document)."""
    from datatrove.pipeline.filters.c4_filters import CITATION_REGEX, ELLIPSIS, END_PUNCTUATION, POLICY_SUBSTRINGS
    from datatrove.utils.text import split_into_sentences

    if f.min_num_sentences == -1:
        return {"c4_n_sentences": None}
    num_sentences = 0
    for line in text.splitlines() if f.split_paragraph else split_into_sentences(text, f.language):
        line = line.strip()
        words = line.split()
        if f.max_word_length != -1 and any(len(word) > f.max_word_length for word in words):
            continue
        if f.remove_citations:
            line = CITATION_REGEX.sub("", line)
        if f.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS)):
            continue
        if len(words) < f.min_words_per_line:
            continue
        line_l = line.lower()
        if (f.filter_javascript and "javascript" in line_l) or (
                f.filter_policy and any(p in line_l for p in POLICY_SUBSTRINGS)):
            continue
        num_sentences += len(split_into_sentences(line, f.language)) if f.split_paragraph else 1
    return {"c4_n_sentences": num_sentences}


def fineweb_quality(f: Any, text: str) -> dict[str, Any]:
    from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates
    from datatrove.utils.text import split_into_words

    lines = [line for line in text.split("\n") if line.strip() != ""]
    return {
        "fineweb_line_punct_ratio": sum(1 for line in lines if line.endswith(f.stop_chars)) / len(lines),
        "fineweb_short_line_ratio": sum(1 for line in lines if len(line) <= f.short_line_length) / len(lines),
        "fineweb_char_dup_ratio": find_duplicates(lines)[1] / len(text.replace("\n", "")),
        "fineweb_newline_word_ratio": text.count("\n") / len(split_into_words(text, f.language)),
    }


#: Per stage name: how a kept document is measured when the stage's filter cannot say.
MEASURE: dict[str, Callable[[Any, str], dict[str, Any]]] = {
    "gopher_quality_v1": gopher_quality, "gopher_repetition_v1": gopher_repetition,
    "c4_quality_v1": c4_quality, "fineweb_quality_v1": fineweb_quality,
}
