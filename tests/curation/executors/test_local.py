"""End-to-end runs with the in-process executor: outputs, manifest, reruns, refusals, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.errors import ConfigError, FatalError, ShardError
from tests.conftest import PROSE, pipeline_dict, write_jsonl
from tests.curation.executors.runs import content, run_pipeline


def test_tiny_run_outputs_and_manifest(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = run_pipeline(pipeline_dict([str(tiny_corpus / "*")], out))
    m = res.manifest
    assert [r[0] for r in content(out)] == ["a1", "a2", "b2", "c2"]
    assert m["totals"] == {"input_files": 3, "input_bytes": m["totals"]["input_bytes"], "lines": 7, "blank_lines": 0,
                           "quarantined": 0, "docs_read": 7, "docs_out": 4}
    assert [(s["name"], s["in"], s["out"], s["dropped"]) for s in m["stages"]] == [
        ("input", 7, 7, {}), ("text_length_v1", 7, 6, {"too_short": 1}),
        ("exact_dedup_v1", 6, 4, {"exact_duplicate": 2})]
    assert m["domains"]["web"]["docs"] == 3 and m["domains"]["books"]["docs"] == 1
    assert m["domains"]["books"]["tokens"] == len(PROSE[2].split())
    for s in m["shards"]:
        assert pq.read_metadata(out / s["path"]).num_rows == s["rows"]
    dec = pq.read_table(out / "decisions").to_pylist()
    by_id = {d["id"]: d for d in dec}
    assert by_id["a3"]["reason"] == "too_short" and by_id["a3"]["text"] == "too short"
    assert by_id["b1"]["reason"] == "exact_duplicate" and json.loads(by_id["b1"]["details"]) == {"dup_of": "a1"}
    assert json.loads(by_id["c1"]["details"]) == {"dup_of": "a2"}
    assert not list(out.rglob("*.tmp"))


def test_rerun_of_finished_run_does_nothing(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = run_pipeline(pipeline_dict([str(tiny_corpus / "*")], out))
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    res = run_pipeline(pipeline_dict([str(tiny_corpus / "*")], out))
    assert res.nothing_to_do and res.tasks_run == 0
    assert list(res.manifest.items()) == list(first.manifest.items())  # the manifest as the run returned it
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes


def test_changed_config_or_inputs_are_refused(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_pipeline(pipeline_dict([str(tiny_corpus / "*")], out))
    changed = pipeline_dict([str(tiny_corpus / "*")], out, stages=[{"stage": "text_length_v1", "min_chars": 5}])
    with pytest.raises(FatalError, match=r"different config.*changed: config.stages.0.min_chars.*--overwrite"):
        run_pipeline(changed)
    write_jsonl(tiny_corpus / "d.jsonl", [{"text": "new"}])
    with pytest.raises(FatalError, match=r"changed: .*inputs"):
        run_pipeline(pipeline_dict([str(tiny_corpus / "*")], out))
    redone = run_pipeline(changed, overwrite=True).manifest
    assert redone["totals"]["input_files"] == 4
    # This process already ran the old config into this directory: its set-up stages must not be reused.
    fresh = run_pipeline(pipeline_dict([str(tiny_corpus / "*")], tmp_path / "fresh",
                                       stages=[{"stage": "text_length_v1", "min_chars": 5}])).manifest
    assert [(s["in"], s["out"]) for s in redone["stages"]] == [(s["in"], s["out"]) for s in fresh["stages"]]
    assert redone["totals"]["docs_out"] == fresh["totals"]["docs_out"]


def test_refuses_non_empty_dir_without_run(tiny_corpus: Path, tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "important.txt").write_text("x")
    with pytest.raises(FatalError, match="not empty"):
        run_pipeline(pipeline_dict([str(tiny_corpus / "*")], tmp_path / "busy"))


def test_crash_after_publish_before_marker_rewrites_same_files(tiny_corpus: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    golden = tmp_path / "golden"
    run_pipeline(pipeline_dict([str(tiny_corpus / "*")], golden))
    out = tmp_path / "run"
    monkeypatch.setenv("CURATION_ENABLE_FAULT_INJECTION", "1")
    monkeypatch.setenv("CURATION_FAULT", "raise_before_marker:1:0")
    with pytest.raises(ShardError, match="injected failure in seg 1 task 0"):
        run_pipeline(pipeline_dict([str(tiny_corpus / "*")], out))
    assert list((out / "shards").glob("00000-*.parquet"))  # published, but no marker
    assert not (out / "_markers" / "seg1" / "00000.json").exists()
    monkeypatch.delenv("CURATION_FAULT")
    res = run_pipeline(pipeline_dict([str(tiny_corpus / "*")], out))
    assert res.tasks_run == 3  # all of pass 1; pass 0 was complete
    assert content(out) == content(golden)
    assert sorted(p.name for p in (out / "shards").iterdir()) == sorted(p.name for p in (golden / "shards").iterdir())


def test_stage_exception_fails_fast_naming_shard(tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURATION_ENABLE_FAULT_INJECTION", "1")
    monkeypatch.setenv("CURATION_FAULT", "raise:0:1")
    with pytest.raises(ShardError, match=r"pass 0 task 1 \(b.jsonl.gz\): ValueError: injected failure"):
        run_pipeline(pipeline_dict([str(tiny_corpus / "*")], tmp_path / "run"))


def test_bad_input_is_quarantined_and_counted(tmp_path: Path) -> None:
    d = tmp_path / "in"
    write_jsonl(d / "mixed.jsonl", [{"id": "ok", "text": PROSE[0]}, '{"text": broken', {"id": "e", "text": "   "},
                                    {"id": "n", "text": None}, {"id": "m"}, b'{"text": "\xff"}', ""])
    huge = "word " * 10_000_000  # 50 MB single document
    write_jsonl(d / "huge.jsonl", [{"id": "huge", "text": huge}, {"id": "ok2", "text": PROSE[1]}])
    res = run_pipeline(pipeline_dict([str(d / "*.jsonl")], tmp_path / "run", stages=[], ))
    m = res.manifest
    assert m["totals"]["quarantined"] == 3 and m["totals"]["blank_lines"] == 1 and m["totals"]["docs_out"] == 2
    assert m["stages"][0]["dropped"] == {"empty": 2, "too_long": 1}
    q = pq.read_table(tmp_path / "run" / "quarantine").to_pylist()
    assert sorted((r["file"], r["line"]) for r in q) == [("mixed.jsonl", 2), ("mixed.jsonl", 5), ("mixed.jsonl", 6)]


def test_too_many_malformed_lines_fail_the_run_naming_the_file(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in" / "junk.jsonl", ["not json"] * 9 + [{"text": "fine"}])
    with pytest.raises(ShardError, match=r"junk.jsonl: 9 of 10 lines are malformed"):
        run_pipeline(pipeline_dict([str(tmp_path / "in" / "*")], tmp_path / "run", stages=[]))


def test_input_pattern_matching_nothing_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="matches no file"):
        run_pipeline(pipeline_dict([str(tmp_path / "nothing*.jsonl")], tmp_path / "run"))


def test_shard_rollover_by_size(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in" / "x.jsonl", [{"id": f"{i:03d}", "text": PROSE[i % 3] + f" {i}"} for i in range(60)])
    res = run_pipeline(pipeline_dict([str(tmp_path / "in" / "x.jsonl")], tmp_path / "run", stages=[],
                                     target_shard_bytes=8000))
    shards = res.manifest["shards"]
    assert len(shards) > 3 and sum(s["rows"] for s in shards) == 60
    assert [s["path"] for s in shards] == [f"shards/00000-{i:03d}.parquet" for i in range(len(shards))]
    assert os.path.getsize(tmp_path / "run" / shards[0]["path"]) == shards[0]["bytes"]


def test_fsspec_url_inputs(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    payload = b'{"id": "m1", "text": "' + PROSE[0].encode() + b'"}\n{"id": "m2", "text": "tiny"}\n'
    with fs.open("/bucket/in/x.jsonl", "wb") as fh:
        fh.write(payload)
    res = run_pipeline(pipeline_dict(["memory://bucket/in/*.jsonl"], tmp_path / "run"))
    assert [r[0] for r in content(tmp_path / "run")] == ["m1"]
    assert res.manifest["inputs"] == [{"source": "x.jsonl", "bytes": len(payload)}]


def near_corpus(root: Path) -> Path:
    d = root / "near"
    write_jsonl(d / "a.jsonl", [{"id": "a1", "text": PROSE[0]}, {"id": "a2", "text": PROSE[1]}])
    write_jsonl(d / "b.jsonl", [{"id": "b1", "text": PROSE[0] + " One more sentence for the longest copy."},
                                {"id": "b2", "text": PROSE[2]}, {"id": "b3", "text": PROSE[1].lower()}])
    return d


def test_near_dedup_pipeline_shards_decisions_and_sql(tmp_path: Path) -> None:
    from curation.stats import query

    stages = [{"stage": "near_dedup_v1", "threshold": 0.7, "num_buckets": 4}]
    out = tmp_path / "run"
    res = run_pipeline(pipeline_dict([str(near_corpus(tmp_path) / "*.jsonl")], out, stages=stages))
    assert [r[0] for r in content(out)] == ["a2", "b1", "b2"]  # b1 is the longest copy; a2 is first of an equal pair
    assert res.manifest["stages"][-1]["dropped"] == {"near_duplicate": 2}
    names = [c["name"] for c in res.manifest["schema"]]
    assert names[-3:] == ["dup_cluster", "dup_cluster_size", "dup_kept"] and "_nd_bands" not in names
    _, rows = query(out, "SELECT id, dup_cluster, dup_cluster_size, dup_kept FROM docs ORDER BY id")
    assert rows == [("a2", "a2", 2, True), ("b1", "b1", 2, True), ("b2", "b2", 1, True)]
    _, rows = query(out, "SELECT id, reason, json_extract_string(details, '$.dup_of') FROM decisions ORDER BY id")
    assert rows == [("a1", "near_duplicate", "b1"), ("b3", "near_duplicate", "a2")]
    # mark mode keeps everyone and flags the non-keepers
    stages[0]["mode"] = "mark"
    run_pipeline(pipeline_dict([str(near_corpus(tmp_path) / "*.jsonl")], tmp_path / "mark", stages=stages))
    _, rows = query(tmp_path / "mark", "SELECT id, dup_cluster, dup_kept FROM docs ORDER BY id")
    assert rows == [("a1", "b1", False), ("a2", "a2", True), ("b1", "b1", True), ("b2", "b2", True), ("b3", "a2", False)]


@pytest.mark.parametrize("enable", [None, "0", "true"])
def test_fault_variables_alone_are_inert(tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         enable: str | None) -> None:
    """CURATION_FAULT fires only with CURATION_ENABLE_FAULT_INJECTION=1 (exactly), never from a stray variable."""
    if enable is None:
        monkeypatch.delenv("CURATION_ENABLE_FAULT_INJECTION", raising=False)
    else:
        monkeypatch.setenv("CURATION_ENABLE_FAULT_INJECTION", enable)
    monkeypatch.setenv("CURATION_FAULT", "raise:0:*")
    monkeypatch.setenv("CURATION_FAULT_ONCE", str(tmp_path / "fired"))
    res = run_pipeline(pipeline_dict([str(tiny_corpus / "*")], tmp_path / "run"))
    assert res.manifest["totals"]["docs_out"] == 4 and not (tmp_path / "fired").exists()
    from curation.faults import fault_injection_env

    assert fault_injection_env() == {}  # nothing is forwarded to Ray workers either
