"""The Ray executor: same output as the local one, for any concurrency, through worker crashes."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.errors import ShardError
from tests.conftest import PROSE, pipeline_dict, write_jsonl
from tests.curation.executors.runs import content, run_pipeline, shard_bytes

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_ray_equals_local_for_any_concurrency(ray_cluster: None, tiny_corpus: Path, tmp_path: Path) -> None:
    local = tmp_path / "local"
    run_pipeline(pipeline_dict([str(tiny_corpus / "*")], local))
    for conc in (1, 3):
        out = tmp_path / f"ray{conc}"
        data = pipeline_dict([str(tiny_corpus / "*")], out, kind="ray")
        data["executor"]["concurrency"] = conc
        data["executor"]["global_in_driver_mb"] = 256 if conc == 1 else 0  # in the driver / as Ray shuffles
        res = run_pipeline(data)
        assert content(out) == content(local)
        assert shard_bytes(out) == shard_bytes(local)  # byte-identical shards
        assert res.manifest["stages"] == run_pipeline(pipeline_dict([str(tiny_corpus / "*")], local)).manifest["stages"]


def test_stage_concurrency_caps_its_pass(ray_cluster: None, tiny_corpus: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    local = tmp_path / "local"
    run_pipeline(pipeline_dict([str(tiny_corpus / "*")], local))
    out = tmp_path / "capped"
    data = pipeline_dict([str(tiny_corpus / "*")], out, kind="ray")
    data["executor"]["concurrency"] = 3
    data["stages"][0]["resources"] = {"concurrency": 1, "num_cpus": 0.5}  # one model copy at a time, say
    monkeypatch.setenv("CURATION_ENABLE_FAULT_INJECTION", "1")
    monkeypatch.setenv("CURATION_FAULT", "sleep:0:*")  # every task of pass 0 takes >= 1 s
    run_pipeline(data)
    assert shard_bytes(out) == shard_bytes(local)
    spans = sorted((m["started_unix"], m["started_unix"] + m["seconds"])
                   for m in (json.loads(p.read_text()) for p in (out / "_markers" / "seg0").glob("*.json")))
    assert len(spans) == 3
    assert all(a[1] <= b[0] + 0.01 for a, b in zip(spans, spans[1:]))  # never two tasks of the pass at once


def test_tasks_start_largest_input_first(ray_cluster: None, tmp_path: Path) -> None:
    """A big file started last would leave the other workers idle while it alone finishes."""
    import json

    d = tmp_path / "in"
    for n, name in enumerate("abc"):  # a: 1 document, b: 2, c: 3, so the names sort smallest first
        write_jsonl(d / f"{name}.jsonl", [{"id": f"{name}{k}", "text": PROSE[k]} for k in range(n + 1)])
    out = tmp_path / "out"
    data = pipeline_dict([str(d / "*.jsonl")], out, kind="ray")
    data["executor"]["concurrency"] = 1  # one at a time: the start order is the submission order
    run_pipeline(data)
    for seg in ("seg0", "seg1"):
        markers = [json.loads(p.read_text()) for p in (out / "_markers" / seg).glob("*.json")]
        assert [Path(m["source"]).name for m in sorted(markers, key=lambda m: m["started_unix"])] == [
            "c.jsonl", "b.jsonl", "a.jsonl"]


@pytest.mark.fault
def test_worker_sigkill_mid_task_is_retried_with_identical_output(ray_cluster: None, tiny_corpus: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    golden = tmp_path / "golden"
    run_pipeline(pipeline_dict([str(tiny_corpus / "*")], golden))
    out = tmp_path / "run"
    once = tmp_path / "fired"
    monkeypatch.setenv("CURATION_ENABLE_FAULT_INJECTION", "1")
    monkeypatch.setenv("CURATION_FAULT", "kill:1:1")  # SIGKILL the worker after task 1 of pass 1 wrote a batch
    monkeypatch.setenv("CURATION_FAULT_ONCE", str(once))
    run_pipeline(pipeline_dict([str(tiny_corpus / "*")], out, kind="ray"))
    assert once.exists()  # the worker really was killed once
    assert content(out) == content(golden)
    assert shard_bytes(out) == shard_bytes(golden)
    for f in out.rglob("*.parquet"):
        pq.read_metadata(f)
    assert not list(out.rglob("*.tmp"))


def test_stage_error_fails_fast_and_names_the_shard(ray_cluster: None, tiny_corpus: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CURATION_ENABLE_FAULT_INJECTION", "1")
    monkeypatch.setenv("CURATION_FAULT", "raise:0:2")
    with pytest.raises(ShardError, match=r"pass 0 task 2 \(c.jsonl.zst\): ValueError: injected failure"):
        run_pipeline(pipeline_dict([str(tiny_corpus / "*")], tmp_path / "run", kind="ray"))


def test_fault_variable_alone_is_inert_on_ray_workers(ray_cluster: None, tiny_corpus: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CURATION_ENABLE_FAULT_INJECTION", raising=False)
    monkeypatch.setenv("CURATION_FAULT", "raise:0:*")
    res = run_pipeline(pipeline_dict([str(tiny_corpus / "*")], tmp_path / "run", kind="ray"))
    assert res.manifest["totals"]["docs_out"] == 4


def test_near_dedup_on_ray_same_clusters_for_any_buckets_and_blocks(ray_cluster: None, tmp_path: Path) -> None:
    from tests.curation.executors.test_local import near_corpus

    corpus = str(near_corpus(tmp_path) / "*.jsonl")
    stages = [{"stage": "near_dedup_v1", "threshold": 0.7, "mode": "mark", "num_buckets": 4}]
    local = tmp_path / "local"
    run_pipeline(pipeline_dict([corpus], local, stages=stages))
    for buckets, conc in ((1, 1), (16, 2)):
        stages[0]["num_buckets"] = buckets
        out = tmp_path / f"ray{buckets}"
        data = pipeline_dict([corpus], out, stages=stages, kind="ray")
        data["executor"]["concurrency"] = conc
        data["executor"]["global_in_driver_mb"] = 0  # every step as Ray Data shuffles
        run_pipeline(data)
        assert shard_bytes(out) == shard_bytes(local)
