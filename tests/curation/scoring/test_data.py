"""Scorer training data read from a finished run: a stable order even where ids repeat."""

from __future__ import annotations

import random
from pathlib import Path

from curation.scoring.data import run_documents
from tests.conftest import pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline


def test_run_documents_order_is_by_id_then_text_when_ids_repeat(tmp_path: Path) -> None:
    # Docstring ids repeat (two methods of one name in a module). Ordered by id alone, DuckDB
    # returned the tied rows in thread order, and `curate train-scorer --run` trained a different
    # fastText model on the same labels from one run to the next.
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "omega", "kappa", "sigma"]
    for f in range(3):
        write_jsonl(tmp_path / "in" / f"p{f}.jsonl",
                    [{"id": f"dup{rng.randrange(3)}", "text": " ".join(rng.choices(words, k=12)) + f" {f}-{i}"}
                     for i in range(100)])
    run_pipeline(pipeline_dict([str(tmp_path / "in" / "*.jsonl")], tmp_path / "run", stages=[]))
    got = run_documents(tmp_path / "run", ["id", "text"])
    pairs = list(zip(got["id"], got["text"]))
    assert len(pairs) == 300 and pairs == sorted(pairs)
    assert run_documents(tmp_path / "run", ["id", "text"]) == got


def test_parts_are_disjoint_cover_everything_and_split_the_labels(tmp_path: Path) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pytest

    from curation.errors import CurationError
    from curation.scoring.data import in_part, parse_part, preselect_set

    ids = [f"doc{i}" for i in range(3000)]
    masks = [in_part(ids, (k, 3)) for k in range(3)]
    assert (np.sum(masks, axis=0) == 1).all()  # every id in exactly one part
    assert all(900 < m.sum() < 1100 for m in masks)  # about a third each
    assert (in_part(ids[::-1], (1, 3)) == masks[1][::-1]).all()  # a function of the id, not of the order
    for bad in ("3/3", "x/3", "1", "-1/2"):
        with pytest.raises(CurationError, match="--part"):
            parse_part(bad)

    # A run whose documents carry S: each part's labels come from that part's documents only.
    rng = np.random.default_rng(0)
    strength = rng.choice([0.0, 0.4, 1.0], size=600).tolist()
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": f"d{i}", "text": f"text number {i}"} for i in range(600)])
    run_pipeline(pipeline_dict([str(tmp_path / "in" / "*.jsonl")], tmp_path / "run2", stages=[]))
    shard = sorted((tmp_path / "run2" / "shards").glob("*.parquet"))[0]
    t = pq.read_table(shard)
    s_of = {f"d{i}": strength[i] for i in range(600)}
    pq.write_table(t.append_column("predictive_strength", pa.array([s_of[i] for i in t.column("id").to_pylist()])), shard)
    whole = preselect_set(str(tmp_path / "run2"))
    parts = [preselect_set(str(tmp_path / "run2"), part=(k, 3)) for k in range(3)]
    part_texts = [set(p.positives) | set(p.negatives) for p in parts]
    assert all(not (part_texts[a] & part_texts[b]) for a in range(3) for b in range(a + 1, 3))
    assert sum(len(p.positives) for p in parts) <= len(whole.positives) and all(p.positives for p in parts)
    assert parts[0].data["part"] == "0/3" and sum(p.data["scored_docs"] for p in parts) == 600
