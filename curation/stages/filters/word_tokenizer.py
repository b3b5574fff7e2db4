"""A regex word/sentence tokenizer for datatrove's filters, ~30x faster than spaCy's blank English.

datatrove's English filters tokenise with ``spacy.blank("en")``, which is ~90% of their cost
(0.2-0.3 MB/s per core on the sample corpus). datatrove lets a filter take a ``WordTokenizer``
instance in place of a language code, so the rules stay datatrove's and only tokenisation changes.
This tokenizer follows spaCy's English rules where they move the filters' statistics: URLs stay
whole, punctuation is split off, contractions split (``do n't``, ``it 's``), letters joined by a
hyphen are split around it. Sentences end after ``.``/``!``/``?`` tokens as in spaCy's sentencizer.
``tests/curation/stages/filters/test_word_tokenizer.py`` measures decision agreement with spaCy.
"""

from __future__ import annotations

import re
from itertools import chain

from datatrove.utils.word_tokenizers import WordTokenizer

# Abbreviations spaCy keeps whole (a subset of its English tokenizer exceptions).
_ABBREV = (r"Inc|Ltd|Co|Corp|Mr|Mrs|Ms|Dr|Jr|Sr|St|vs|etc|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
           r"|Mt|No|Gov|Sen|Rep|Gen|Col|Lt|Sgt|Capt|Prof|Rev|Ph\.D|a\.m|p\.m|i\.e|e\.g|v|Fig|fig|approx|dept|est")
_TOKEN = re.compile(
    rf"""(?:https?://|www\.)[^\s<>"']+?(?=[.,;:!?)\]}}'"]*(?:\s|$))   # URL; trailing punctuation split off
      | [\w.+-]+@\w[\w-]*(?:\.\w[\w-]*)+                              # e-mail address
      | (?i:n't)(?=\W|$)                                              # contraction tail
      | '(?i:s|re|ll|ve|m|d)(?=\W|$)                                  # clitics
      | \b(?:{_ABBREV})\.(?=\s|$)                                     # known abbreviations
      | \d+(?:[.,:/]\d+)*                                             # numbers, times, dates
      | (?:[^\W\d_]\.){{2,}}                                          # initialisms like e.g. / U.S.
      | \w+?(?=n't(?:\W|$))                                           # stem before n't
      | \w+(?:(?:[./]|['’](?!(?i:s|re|ll|ve|m|d)\b)|(?<=[^\W\d_])-(?=\d))\w+)*  # words (MPL-2.0 stays whole)
      | \.\.\.+|…                                                     # ellipsis
      | -{{2,}}                                                       # a dash rule (spaCy splits other runs)
      | [^\w\s]                                                       # any other symbol alone
    """,
    re.VERBOSE,
)
# spaCy's sentencizer compares whole tokens to single characters, so "..." never ends a sentence.
_SENT_END = frozenset({".", "!", "?", "‼", "‽", "。", "！", "？", "．"})
_PUNCT = re.compile(r"^[^\w\s]+$")
_MEMO_MAX = 200_000  # distinct chunks (~45 MB); cleared when full


class FastEnglishTokenizer(WordTokenizer):
    """Regex tokenizer with datatrove's ``WordTokenizer`` interface."""

    def __init__(self) -> None:
        super().__init__("en")
        self._memo: dict[str, list[str]] = {}
        self._sent_memo: dict[str, tuple[bool, bool, int, bool]] = {}

    def __hash__(self) -> int:  # datatrove lru-caches on (text, mode, tokenizer)
        return hash("curation.FastEnglishTokenizer")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FastEnglishTokenizer)

    def word_tokenize(self, text: str) -> list[str]:
        # No token spans whitespace and every lookaround sees whitespace and a chunk edge alike, so
        # tokenising whitespace-separated chunks one by one gives the same tokens; a chunk of
        # letters only is one token under every alternative. Chunks repeat heavily, so each
        # distinct chunk's tokens are memoised and the text is assembled by C-level loops.
        chunks = text.split()
        memo = self._memo
        missing = set(chunks).difference(memo)
        if missing:
            if len(memo) + len(missing) > _MEMO_MAX:  # bound the memo on endless vocabularies
                memo.clear()
                missing = set(chunks)
            find = _TOKEN.findall
            for chunk in missing:
                memo[chunk] = [chunk] if chunk.isalpha() else find(chunk)
        return list(chain.from_iterable(map(memo.__getitem__, chunks)))

    @staticmethod
    def word_tokenize_regex(text: str) -> list[str]:
        """The same tokens from one regex pass over the whole text (the reference)."""
        return _TOKEN.findall(text)

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        start = None
        seen_end = False
        for m in _TOKEN.finditer(text):
            tok = m.group()
            if start is None:
                start = m.start()
            elif seen_end and not _PUNCT.match(tok):
                spans.append((start, prev_end))
                start, seen_end = m.start(), False
            if tok in _SENT_END:
                seen_end = True
            prev_end = m.end()
        if start is not None:
            spans.append((start, prev_end))
        return spans

    def sent_tokenize(self, text: str) -> list[str]:
        return [s for s in (text[a:b].strip() for a, b in self.span_tokenize(text)) if s]

    def count_sentences(self, text: str) -> int:
        """``len(split_into_sentences(text, self))`` without building them: C4 counts every kept line's sentences
        with ``metrics: true``, where building spans and slices was most of its cost (8x slower on the sample).

        ``span_tokenize`` starts a sentence at a non-punctuation token that follows a sentence end (with only
        punctuation between). Tokens never span whitespace, so each whitespace chunk's share of that scan is
        memoised as (an end before its first word, has a word, starts within it after that word, an end after its
        last word); a line is then one pass over its chunks. datatrove's split gives one part for a text without
        tokens, hence the count starts at 1.
        """
        memo = self._sent_memo
        n, after_end = 1, False
        for chunk in text.split():
            f = memo.get(chunk)
            if f is None:
                f = self._chunk_sentences(chunk)
            lead_end, has_word, inner, tail_end = f
            if has_word:
                n += (after_end or lead_end) + inner
                after_end = tail_end
            elif lead_end:
                after_end = True
        return n

    def _chunk_sentences(self, chunk: str) -> tuple[bool, bool, int, bool]:
        lead_end = has_word = after_end = False
        inner = 0
        for tok in self.word_tokenize(chunk):
            if _PUNCT.match(tok):
                if tok in _SENT_END:
                    if has_word:
                        after_end = True
                    else:
                        lead_end = True
            else:
                inner += has_word and after_end
                after_end, has_word = False, True
        if len(self._sent_memo) > _MEMO_MAX:  # bound the memo on endless vocabularies
            self._sent_memo.clear()
        f = self._sent_memo[chunk] = (lead_end, has_word, inner, after_end)
        return f
