"""decontaminate_v1 on hand-made eval sets: exact matches, modes, details, config errors, the index's travel."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from curation.config import from_dict
from curation.errors import ConfigError
from curation.stages.decontam.stage import Decontaminate, DecontaminateConfig
from tests.curation.stages.decontam.evalsets import DOCS, eval_config, write_eval_sets
from tests.curation.stages.filters.helpers import batch_of


def make(tmp_path: Path, **extra: object) -> tuple[Decontaminate, dict[str, Path]]:
    files = write_eval_sets(tmp_path / "evals")
    params = {k: v for k, v in eval_config(files, **extra).items() if k != "stage"}
    return Decontaminate(from_dict(DecontaminateConfig, params)), files


def process(stage: Decontaminate, docs: dict[str, str]):  # noqa: ANN201  (a StageResult)
    batch = batch_of(list(docs.values()))
    ids = dict(zip(batch.column("id").to_pylist(), docs))
    res = stage.process(batch)
    return res, ids


def test_drop_finds_exactly_the_expected_items(tmp_path: Path) -> None:
    stage, files = make(tmp_path)
    res, ids = process(stage, DOCS)
    dropped = {ids[i]: (r, json.loads(d))
               for i, r, d in zip(res.dropped.column("id").to_pylist(), res.reasons, res.details)}
    assert set(dropped) == {"d_case", "d_parquet", "d_txt", "d_short"}
    assert all(r == "contaminated" for r, _ in dropped.values())
    assert dropped["d_case"][1] == {"eval_file": str(files["jsonl"]), "eval_id": "q-alpha", "eval_items": 1,
                                    "matched_ngrams": 1, "overlap_fraction": 0.8125}  # 13 of 16 words
    assert dropped["d_parquet"][1]["eval_file"] == str(files["parquet"]) and dropped["d_parquet"][1]["eval_id"] == "2"
    assert dropped["d_txt"][1]["eval_file"] == str(files["txt"]) and dropped["d_txt"][1]["eval_id"] == "3"
    assert dropped["d_txt"][1]["matched_ngrams"] == 2  # 14 colours: two 13-grams
    # An 8-word question is matched whole; a 3-word one (below min_item_words) is not indexed.
    assert dropped["d_short"][1]["eval_id"] == "q-short" and dropped["d_short"][1]["matched_ngrams"] == 1
    assert stage.index.skipped_short == 3  # "yes or no", "an unrelated first prompt", "first line is short"
    assert sorted(stage.index.tables) == [8, 13]


def test_twelve_words_do_not_match_and_thirteen_do(tmp_path: Path) -> None:
    stage, _ = make(tmp_path)
    twelve = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu"
    res, _ = process(stage, {"a": twelve, "b": twelve + " NU"})
    assert res.kept.column("text").to_pylist() == [twelve]


def test_mark_adds_columns_and_keeps_everything(tmp_path: Path) -> None:
    stage, files = make(tmp_path, mode="mark")
    res, ids = process(stage, DOCS)
    assert len(res.dropped) == 0
    rows = {ids[r["id"]]: r for r in res.kept.to_pylist()}
    assert rows["d_case"]["contam_ngrams"] == 1
    assert rows["d_case"]["contam_fraction"] == pytest.approx(13 / 16)
    assert rows["d_case"]["contam_source"] == f"{files['jsonl']}#q-alpha"
    assert rows["d_12"]["contam_ngrams"] == 0 and rows["d_12"]["contam_source"] is None
    assert {k for k, r in rows.items() if r["contam_source"]} == {"d_case", "d_parquet", "d_txt", "d_short"}
    assert set(stage.output_columns()) == {"contam_ngrams", "contam_fraction", "contam_source"}


def test_min_overlap_fraction_spares_documents_with_a_small_overlap(tmp_path: Path) -> None:
    stage, _ = make(tmp_path, min_overlap_fraction=0.5)
    long_doc = DOCS["d_case"] + " " + " ".join(f"filler{i}" for i in range(20))  # 13 of 36 words
    res, ids = process(stage, {"d_case": DOCS["d_case"], "long": long_doc})
    assert [ids[i] for i in res.dropped.column("id").to_pylist()] == ["d_case"]


def test_remove_spans_cuts_exactly_the_matched_words(tmp_path: Path) -> None:
    stage, _ = make(tmp_path, mode="remove_spans", min_remaining_chars=10)
    res, ids = process(stage, {"d_case": DOCS["d_case"], "d_txt": DOCS["d_txt"], "d_short": DOCS["d_short"],
                               "d_12": DOCS["d_12"]})
    kept = {ids[r["id"]]: r for r in res.kept.to_pylist()}
    assert kept["d_case"]["text"] == "Intro.  outro words"
    assert kept["d_case"]["n_chars"] == len("Intro.  outro words")
    assert kept["d_case"]["contam_removed_chars"] == len(DOCS["d_case"]) - len("Intro.  outro words")
    assert kept["d_txt"]["text"] == "colours  and more"
    assert kept["d_12"]["text"] == DOCS["d_12"] and kept["d_12"]["contam_removed_chars"] == 0
    # "Tell me:  Paris." has 16 characters; with min_remaining_chars=10 it stays.
    assert kept["d_short"]["text"] == "Tell me:  Paris."


def test_remove_spans_drops_a_document_with_too_little_left(tmp_path: Path) -> None:
    stage, _ = make(tmp_path, mode="remove_spans", min_remaining_chars=17)
    res, ids = process(stage, {"d_short": DOCS["d_short"]})
    assert res.reasons == ["contaminated"]
    assert json.loads(res.details[0])["remaining_chars"] == len("Tell me:  Paris.")


def test_remove_spans_recuts_an_n_gram_formed_by_the_cut(tmp_path: Path) -> None:
    # Cutting the colour run joins "alpha..zeta" and "eta..omicron" into a new ALPHA 13-gram.
    from tests.curation.stages.decontam.evalsets import COLOURS

    stage, _ = make(tmp_path, mode="remove_spans", min_remaining_chars=0)
    doc = "start alpha beta gamma delta epsilon zeta " + COLOURS + " eta theta iota kappa lambda mu nu end"
    res, _ = process(stage, {"x": doc})
    assert res.kept.column("text").to_pylist() == ["start  end"]


@pytest.mark.parametrize(("extra", "message"), [
    ({"mode": "erase"}, r"mode: 'erase' is not one of \['drop', 'mark', 'remove_spans'\]"),
    ({"n": 0}, "n: must be >= 1"),
    ({"min_item_words": 14}, r"min_item_words: must be in \[1, n=13\]"),
    ({"min_overlap_fraction": 1.5}, r"min_overlap_fraction: must be in \[0, 1\]"),
])
def test_config_errors(tmp_path: Path, extra: dict[str, object], message: str) -> None:
    files = write_eval_sets(tmp_path)
    params = {k: v for k, v in eval_config(files, **extra).items() if k != "stage"}
    with pytest.raises(ConfigError, match=message):
        from_dict(DecontaminateConfig, params, "stages[0]")


def test_missing_eval_file_is_named(tmp_path: Path) -> None:
    cfg = from_dict(DecontaminateConfig, {"eval_files": [{"path": str(tmp_path / "nope.jsonl")}]})
    with pytest.raises(ConfigError, match=r"eval file .*nope\.jsonl does not exist"):
        Decontaminate(cfg)
    with pytest.raises(ConfigError, match="eval_files: name at least one eval file"):
        from_dict(DecontaminateConfig, {"eval_files": []})


def test_missing_field_names_file_and_line(tmp_path: Path) -> None:
    files = write_eval_sets(tmp_path)
    cfg = from_dict(DecontaminateConfig, {"eval_files": [{"path": str(files["jsonl"]), "fields": ["prompt"]}]})
    with pytest.raises(ConfigError, match=r"eval\.jsonl line 1: no field 'prompt'"):
        Decontaminate(cfg)
    cfg = from_dict(DecontaminateConfig, {"eval_files": [{"path": str(files["parquet"]), "fields": ["question"]}]})
    with pytest.raises(ConfigError, match=r"eval\.parquet: no column\(s\) \['question'\]"):
        Decontaminate(cfg)


def test_built_index_travels_with_the_pickled_config(tmp_path: Path) -> None:
    """Workers get the driver's index inside the pickled plan: they need not read the eval files."""
    stage, files = make(tmp_path)
    shipped = pickle.loads(pickle.dumps(stage.config))
    for f in files.values():
        f.unlink()
    worker_stage = Decontaminate(shipped)  # would raise 'does not exist' if it re-read the files
    res, ids = process(worker_stage, {"d_case": DOCS["d_case"]})
    assert res.reasons == ["contaminated"]


def test_an_edited_eval_file_is_reread(tmp_path: Path) -> None:
    stage, files = make(tmp_path)
    files["txt"].write_text("an entirely different line of text that is long enough to index here\n")
    rebuilt = Decontaminate(stage.config)
    res, _ = process(rebuilt, {"d_txt": DOCS["d_txt"]})
    assert res.reasons == []
