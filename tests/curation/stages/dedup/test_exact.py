"""Exact dedup's resolve: first in input order wins, independent of row order and bucketing."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curation.stages.dedup.exact import ExactDedup, ExactDedupConfig
from curation.stages.frame import LocalFrame
from tests.curation.stages.filters.helpers import batch_of


def keyed(stage: ExactDedup, texts: list[str], tasks: list[int], rows: list[int]) -> pa.Table:
    b = batch_of(texts)
    b = b.append_column("_task", pa.array(tasks, pa.int32())).append_column("_row", pa.array(rows, pa.int64()))
    return stage.add_keys(b)


def test_keeps_first_in_input_order() -> None:
    stage = ExactDedup()
    t = keyed(stage, ["x  y", "a", "x y", "x y\n", "b", "a"], [1, 0, 0, 2, 0, 0], [5, 0, 3, 0, 1, 2])
    dups = stage.resolve(t).to_pylist()
    # "x y" variants: (task 0,row 3)=d2 is first; "a": (0,0)=d1 first.
    assert sorted((d["id"], d["dup_of"]) for d in dups) == [("d0", "d2"), ("d3", "d2"), ("d5", "d1")]


def test_result_independent_of_row_order_and_buckets() -> None:
    rng = np.random.default_rng(0)
    texts = [f"doc {i % 7}" for i in range(50)]
    stage1, stage8 = ExactDedup(ExactDedupConfig(num_buckets=1)), ExactDedup(ExactDedupConfig(num_buckets=8))
    t1 = keyed(stage1, texts, [i // 10 for i in range(50)], [i % 10 for i in range(50)])
    expected = sorted(tuple(r.values()) for r in stage1.resolve(t1).select(["id", "dup_of"]).to_pylist())
    assert len(expected) == 43
    t8 = keyed(stage8, texts, [i // 10 for i in range(50)], [i % 10 for i in range(50)])
    perm = rng.permutation(50)
    t8 = t8.take(pa.array(perm))
    result = stage8.run_global(LocalFrame(t8, num_buckets=8)).table
    got = [tuple(r.values()) for r in result.select(["id", "dup_of"]).to_pylist()]
    assert sorted(got) == expected


def test_normalisation_modes() -> None:
    texts = ["Hello  World", "hello world", "Hello World"]
    for mode, n_dups in (("none", 0), ("whitespace", 1), ("lower", 2)):
        stage = ExactDedup(ExactDedupConfig(normalize=mode))
        assert len(stage.resolve(keyed(stage, texts, [0, 0, 0], [0, 1, 2]))) == n_dups, mode


def test_whitespace_normalisation_is_the_regex_one() -> None:
    """``text_hashes`` collapses whitespace with ``str.split`` (fast); it must equal the definition
    ``re.sub(r"\\s+", " ", NFC(text)).strip()`` on every kind of whitespace and on composed accents."""
    import re
    import sys
    import unicodedata

    from curation.stages.dedup.exact import text_hashes

    spaces = [chr(c) for c in range(sys.maxunicode + 1) if re.fullmatch(r"\s", chr(c))]
    texts = ["  a\u2003b\u3000\u00a0c \x1c\x1f d\n", "e\u0301t\u00e9 \u200bz", "".join(spaces) + "x" + "".join(spaces), ""]
    for mode in ("whitespace", "lower"):
        want = [re.sub(r"\s+", " ", unicodedata.normalize("NFC", t)).strip() for t in texts]
        want = [w.lower() for w in want] if mode == "lower" else want
        assert text_hashes(texts, mode).tolist() == text_hashes(want, "none").tolist()
