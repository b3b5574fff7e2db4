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
