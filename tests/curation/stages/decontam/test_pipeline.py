"""decontaminate_v1 in real pipeline runs: local and Ray executors, decisions, run identity."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.errors import FatalError
from tests.conftest import pipeline_dict, write_jsonl
from tests.curation.executors.runs import content, run_pipeline
from tests.curation.stages.decontam.evalsets import DOCS, eval_config, write_eval_sets


def corpus(tmp_path: Path) -> str:
    names = list(DOCS)
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": k, "text": DOCS[k]} for k in names[:4]])
    write_jsonl(tmp_path / "in" / "b.jsonl", [{"id": k, "text": DOCS[k]} for k in names[4:]])
    return str(tmp_path / "in" / "*.jsonl")


def decisions(out: Path) -> dict[str, tuple[str, dict]]:
    return {d["id"]: (d["reason"], json.loads(d["details"])) for d in pq.read_table(out / "decisions").to_pylist()}


def check_run(out: Path, files: dict[str, Path]) -> None:
    dec = decisions(out)
    assert sorted(dec) == ["d_case", "d_parquet", "d_short", "d_txt"]
    assert dec["d_case"] == ("contaminated", {"eval_file": str(files["jsonl"]), "eval_id": "q-alpha", "eval_items": 1,
                                              "matched_ngrams": 1, "overlap_fraction": 0.8125})
    assert dec["d_parquet"][1]["eval_id"] == "2" and dec["d_txt"][1]["eval_id"] == "3"
    assert [i for i, _ in content(out)] == ["d_12", "d_clean", "d_tiny"]
    stage = json.loads((out / "manifest.json").read_text())["stages"][1]
    assert stage["name"] == "decontaminate_v1" and stage["dropped"] == {"contaminated": 4}


def test_local_run_drops_with_reason_and_details(tmp_path: Path) -> None:
    files = write_eval_sets(tmp_path / "evals")
    out = tmp_path / "run"
    run_pipeline(pipeline_dict([corpus(tmp_path)], out, stages=[eval_config(files)]))
    check_run(out, files)


def test_ray_run_drops_with_reason_and_details(ray_cluster: None, tmp_path: Path) -> None:
    files = write_eval_sets(tmp_path / "evals")
    out = tmp_path / "run"
    run_pipeline(pipeline_dict([corpus(tmp_path)], out, stages=[eval_config(files)], kind="ray"))
    check_run(out, files)


def test_mark_mode_columns_reach_the_shards(tmp_path: Path) -> None:
    files = write_eval_sets(tmp_path / "evals")
    out = tmp_path / "run"
    run_pipeline(pipeline_dict([corpus(tmp_path)], out, stages=[eval_config(files, mode="mark")]))
    rows = {r["id"]: r for f in sorted((out / "shards").glob("*.parquet")) for r in pq.read_table(f).to_pylist()}
    assert len(rows) == len(DOCS)
    assert rows["d_case"]["contam_source"] == f"{files['jsonl']}#q-alpha" and rows["d_12"]["contam_source"] is None


def test_an_edited_eval_file_refuses_a_resume(tmp_path: Path) -> None:
    files = write_eval_sets(tmp_path / "evals")
    out = tmp_path / "run"
    data = pipeline_dict([corpus(tmp_path)], out, stages=[eval_config(files)])
    run_pipeline(data)
    assert run_pipeline(data).nothing_to_do
    files["txt"].write_text(files["txt"].read_text() + "one more evaluation line of some length for the set\n")
    with pytest.raises(FatalError, match=r"changed: artifacts\.stages\.0\.eval_files\.2\.path"):
        run_pipeline(data)
