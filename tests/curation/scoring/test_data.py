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
    strength = np.random.default_rng(0).choice([0.0, 0.4, 1.0], size=600).tolist()
    run = _run_with_strength(tmp_path, strength)
    whole = preselect_set(run)
    parts = [preselect_set(run, part=(k, 3)) for k in range(3)]
    part_texts = [set(p.positives) | set(p.negatives) for p in parts]
    assert all(not (part_texts[a] & part_texts[b]) for a in range(3) for b in range(a + 1, 3))
    assert sum(len(p.positives) for p in parts) <= len(whole.positives) and all(p.positives for p in parts)
    assert parts[0].data["part"] == "0/3" and sum(p.data["scored_docs"] for p in parts) == 600


def _run_with_strength(tmp_path: Path, strength: list[float]) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(strength)
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": f"d{i}", "text": f"text number {i}"} for i in range(n)])
    run_pipeline(pipeline_dict([str(tmp_path / "in" / "*.jsonl")], tmp_path / "run", stages=[]))
    shard = sorted((tmp_path / "run" / "shards").glob("*.parquet"))[0]
    t = pq.read_table(shard)
    s_of = {f"d{i}": strength[i] for i in range(n)}
    pq.write_table(t.append_column("predictive_strength", pa.array([s_of[i] for i in t.column("id").to_pylist()])), shard)
    return str(tmp_path / "run")


def test_a_held_out_part_is_measured_on_labels_the_scorer_never_saw(tmp_path: Path) -> None:
    import numpy as np
    import pytest

    from curation.errors import CurationError
    from curation.scoring.data import in_part, preselect_set, training_set

    strength = np.random.default_rng(1).choice([0.2, 0.6, 0.9, 1.0], size=900).tolist()
    run = _run_with_strength(tmp_path, strength)
    ids = [f"d{i}" for i in range(900)]
    for k in range(3):
        ts = preselect_set(run, part=(k, 3), holdout=True)
        assert ts.valid is not None
        train_ids = {t.rsplit(" ", 1)[1] for t in ts.positives + ts.negatives}
        valid_ids = {t.rsplit(" ", 1)[1] for t in ts.valid[0] + ts.valid[1]}
        held = {str(i) for i in np.flatnonzero(in_part(ids, (k, 3)))}
        assert valid_ids <= held and not (train_ids & held) and not (train_ids & valid_ids)
        # training labels come from the other two parts: twice a part's labels, about
        assert len(ts.positives) > 1.5 * len(ts.valid[0]) and ts.data["holdout_part"] == f"{k}/3"
        assert all(strength[int(i)] == 1.0 for i in (t.rsplit(" ", 1)[1] for t in ts.valid[0]))
    with pytest.raises(CurationError, match="not both"):
        training_set(run, [], [], part="0/3", holdout_part="1/3")

    # the command: trained on every other part, its card's AUC is on the held-out part's labels
    import json
    import subprocess
    import sys

    out = tmp_path / "scorer"
    r = subprocess.run([sys.executable, "-m", "curation.cli", "train-scorer", str(out), "--run", run,
                        "--holdout-part", "1/3", "--bucket", "10000", "--max-class-share", "0.2"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    card = json.loads(out.joinpath("card.json").read_text())
    held = preselect_set(run, part=(1, 3), holdout=True, max_class_share=0.2)
    assert held.valid is not None
    assert card["metrics"]["valid_docs"] == len(held.valid[0]) + len(held.valid[1])
    assert card["metrics"]["train_docs"] == len(held.positives) + len(held.negatives)
    assert card["data"]["holdout_part"] == "1/3" and 0.0 <= card["metrics"]["valid_auc"] <= 1.0


def test_max_class_share_caps_the_classes_so_negatives_are_the_lowest_s(tmp_path: Path) -> None:
    import pytest

    from curation.errors import CurationError
    from curation.scoring.data import preselect_set, training_set

    # 40% of documents at S = 1: uncapped, the negatives reach into S = 0.9; a 10% cap keeps them at S = 0.2
    strength = [1.0] * 400 + [0.9] * 400 + [0.2] * 200
    run = _run_with_strength(tmp_path, strength)
    s_of = lambda texts: sorted({strength[int(t.rsplit(" ", 1)[1])] for t in texts})  # noqa: E731
    whole = preselect_set(run)
    assert len(whole.positives) == 400 and s_of(whole.negatives) == [0.2, 0.9]
    capped = preselect_set(run, max_class_share=0.1)
    assert len(capped.positives) == len(capped.negatives) == 100 and s_of(capped.negatives) == [0.2]
    assert capped.data["max_class_share"] == 0.1
    # the cap is a share of the labels' own documents: a held-out part caps its labels by its own size
    held = preselect_set(run, part=(0, 3), holdout=True, max_class_share=0.1)
    assert held.valid is not None
    assert len(held.valid[0]) == int(0.1 * held.data["holdout_scored_docs"])
    assert len(held.positives) == int(0.1 * held.data["scored_docs"])
    for bad in (0.0, 0.6):
        with pytest.raises(CurationError, match="max-class-share"):
            preselect_set(run, max_class_share=bad)
    with pytest.raises(CurationError, match="use them with --run"):
        training_set(None, ["a"], ["b"], max_class_share=0.1)
    # a cap that rounds down to 0 is named, not reported as an empty training set
    with pytest.raises(CurationError, match="class cap of 0 documents"):
        preselect_set(run, max_class_share=0.0005)
    # a held-out part needs another part to train on, and a bad spec is named by its own option
    with pytest.raises(CurationError, match="N must be at least 2"):
        training_set(run, [], [], holdout_part="0/1")
    with pytest.raises(CurationError, match="--holdout-part '3/3'"):
        training_set(run, [], [], holdout_part="3/3")
