"""The fast tokenizer against spaCy (datatrove's default): tokens and filter decisions."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.io.readers import InputConfig, read_documents
from curation.registry import get_stage
from curation.stages.filters.word_tokenizer import FastEnglishTokenizer
from tests.conftest import SAMPLE


def test_tokens_match_spacy_conventions() -> None:
    tok = FastEnglishTokenizer()
    text = "Don't stop-gap e.g. the U.S. at https://x.org/a?b=1. It's 3.14, ok!! (maybe) $5 50%"
    assert tok.word_tokenize(text) == [
        "Do", "n't", "stop", "-", "gap", "e.g.", "the", "U.S.", "at", "https://x.org/a?b=1", ".", "It", "'s",
        "3.14", ",", "ok", "!", "!", "(", "maybe", ")", "$", "5", "50", "%"]
    assert tok.sent_tokenize("Hello world. This is a test! Is it? yes... (maybe) so.") == [
        "Hello world.", "This is a test!", "Is it?", "yes... (maybe) so."]


@pytest.mark.slow
@pytest.mark.parametrize("name,minimum", [
    ("gopher_quality_v1", 0.97), ("gopher_repetition_v1", 0.95), ("c4_quality_v1", 0.98), ("fineweb_quality_v1", 0.99)])
def test_decisions_agree_with_spacy_on_prose(name: str, minimum: float) -> None:
    """On the sample corpus's prose (code excluded: these rules are not meant for it)."""
    cfg = InputConfig(paths=["-"])
    files = sorted(p for p in SAMPLE.glob("*.jsonl.gz") if not p.name.startswith("code"))
    table = pa.concat_tables([b.table for f in files for b in read_documents(str(f), f.name, cfg)])
    table = table.slice(0, 600)
    kept = {}
    for tok in ("spacy", "fast"):
        cls = get_stage(name)
        stage = cls(cls.Config(word_tokenizer=tok))
        stage.setup()
        kept[tok] = set(stage.process(table).kept.column("id").to_pylist())
    agreement = 1 - len(kept["spacy"] ^ kept["fast"]) / len(table)
    assert agreement >= minimum, (name, agreement)


def test_chunked_fast_path_gives_the_regex_tokens() -> None:
    import gzip
    import json

    from curation.stages.filters.word_tokenizer import FastEnglishTokenizer
    from tests.conftest import SAMPLE

    tok = FastEnglishTokenizer()
    texts = ["Don't won't y'all o'clock ain't", "mail a.b+c@example.co.uk, or x@y", "a\u00a0b\u2003c\x1cd e\u0301",
             "U.S. e.g. Dr. Smith vs. Jones etc.", "http://x.com/a?b=c. www.y.org, (see https://z.io/p)", "--- … — –"]
    for f in sorted(SAMPLE.glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            texts += [json.loads(line)["text"] for line in fh]
    assert all(tok.word_tokenize(t) == tok.word_tokenize_regex(t) for t in texts)


def test_chunk_memo_is_bounded_and_never_changes_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    from curation.stages.filters import word_tokenizer
    from curation.stages.filters.word_tokenizer import FastEnglishTokenizer

    monkeypatch.setattr(word_tokenizer, "_MEMO_MAX", 8)
    tok = FastEnglishTokenizer()
    texts = ["Don't stop, it's fine.", "a b c d e f g h i j k (l) m.", "Dr. Who's e.g. U.S. x@y.com", "Don't stop, it's fine."]
    for t in texts:
        assert tok.word_tokenize(t) == tok.word_tokenize_regex(t)
        assert len(tok._memo) <= max(8, len(set(t.split())))  # cleared when full, never grows past a text


_SENTENCE_WORDS = ["Hello", "world", ".", "!", "?", "...", "…", "e.g.", "U.S.", "Dr.", "3.14", "(", ")", '"', "'",
                   "end.", "end.)", ".word", "?!", "x.y", "a", "", "。", "Yes!", "--", "https://x.org/a."]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_SENTENCE_WORDS), max_size=20), st.sampled_from([" ", "", "  ", "\t"]))
def test_count_sentences_is_the_length_of_datatrove_s_split(words: list[str], sep: str) -> None:
    """C4 counts with ``count_sentences``: the same number as splitting (datatrove gives one part for no token)."""
    from datatrove.utils.text import split_into_sentences

    tok = FastEnglishTokenizer()
    text = sep.join(words)
    assert tok.count_sentences(text) == len(split_into_sentences(text, tok)), text


def test_count_sentences_on_the_sample_corpus_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip
    import json

    from datatrove.utils.text import split_into_sentences

    from curation.stages.filters import word_tokenizer

    monkeypatch.setattr(word_tokenizer, "_MEMO_MAX", 500)  # the memo clears itself several times on the way
    tok = FastEnglishTokenizer()
    lines = []
    for f in sorted(SAMPLE.glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            lines += [line.strip() for doc in fh for line in json.loads(doc)["text"].splitlines()]
    assert len(lines) > 50_000
    assert [tok.count_sentences(x) for x in lines] == [len(split_into_sentences(x, tok)) for x in lines]
