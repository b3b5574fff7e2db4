"""Skill-ordered shards: rounds follow the planned Skill-It mixtures, documents are used once, manifest last."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.io.dedup_index import open_index
from curation.io.manifest import ManifestError, OrderedRunManifest, RunManifest
from curation.skill_order import plan_mixtures, skill_order
from curation.stages.dedup.index import index_run
from curation.verify import verify_run
from tests.conftest import REPO, SAMPLE
from tests.curation.executors.runs import run_pipeline
from tests.curation.moto_s3 import s3  # noqa: F401  (module-scoped fixture)

GRAPH = {"train_skills": ["python_docs", "code", "license"], "eval_skills": ["python_docs", "code", "license"],
         "A": [[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]}
LOSSES = {"python_docs": 3.0, "code": 4.0, "license": 2.0}


def test_plan_by_hand() -> None:
    a = np.array(GRAPH["A"])
    l0 = np.array([3.0, 4.0, 2.0])
    p = plan_mixtures(a, l0, rounds=2, eta=0.5, window=3, alpha=0.1)
    z = np.exp(0.5 * a @ l0)
    assert np.allclose(p[0], z / z.sum())
    l1 = l0 * (1 - 0.1 * a.T @ p[0])
    z = np.exp(0.5 * a @ (l0 + l1))  # window covers both loss vectors
    assert np.allclose(p[1], z / z.sum())


def test_ordered_shards_follow_the_schedule(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_pipeline({"name": "s", "input": {"paths": [str(SAMPLE / "*.jsonl.gz")]}, "stages": [],
                  "output": {"dir": str(run), "token_counter": "whitespace"}, "executor": {"kind": "local"}})
    (tmp_path / "g.json").write_text(json.dumps(GRAPH))
    (tmp_path / "l.json").write_text(json.dumps(LOSSES))
    r = subprocess.run([sys.executable, "-m", "curation.cli", "skill-order", str(run), str(tmp_path / "out"),
                        "--graph", str(tmp_path / "g.json"), "--losses", str(tmp_path / "l.json"), "--rounds", "3",
                        "--chars-per-round", "200000", "--column", "domain"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [x["round"] for x in m["rounds"]] == [0, 1, 2]
    assert [s["path"] for s in m["shards"]] == ["shards/round-000.parquet", "shards/round-001.parquet", "shards/round-002.parquet"]
    ids: list[str] = []
    for rnd in m["rounds"]:
        t = pq.read_table(tmp_path / "out" / rnd["shard"])
        ids += t.column("id").to_pylist()
        for skill, share in rnd["planned_mixture"].items():
            assert rnd["realised_mixture"][skill] == pytest.approx(share, abs=0.08)  # whole documents overshoot a little
    assert len(ids) == len(set(ids))  # no document twice
    # Its own record, of its own kind: the typed reader of a `curate run` run refuses it, naming the file.
    ordered = OrderedRunManifest.read(tmp_path / "out")
    assert m["kind"] == "skill-ordered" and ordered.docs_out == len(ids) == m["totals"]["docs_out"]
    assert ordered.source_fingerprint == RunManifest.read(run).fingerprint and ordered.source_run == str(run)
    with pytest.raises(ManifestError, match=r"out/manifest.json: the manifest of skill-ordered output"):
        RunManifest.read(tmp_path / "out")
    report = verify_run(tmp_path / "out")  # a derived dataset: its shards match its manifest
    assert report.ok and report.shards == 3 and not report.has_run_json, report.problems
    # Its manifest is not a `curate run` one (no config, stages or token counts), yet it is a corpus: `curate
    # index` builds its dedup index and a later run's `against` opens it.
    entry, built = index_run(str(tmp_path / "out"))
    assert built and entry["docs"] == len(ids) == open_index(str(tmp_path / "out")).docs
    with pytest.raises(FileExistsError):
        skill_order(run, tmp_path / "out", GRAPH, LOSSES, 1, 1000, column="domain")


def test_skill_order_of_skill_ordered_output(tmp_path: Path) -> None:
    """Chained: skill-ordered output is a source too; the second order takes documents of the first only."""
    run = tmp_path / "run"
    run_pipeline({"name": "s", "input": {"paths": [str(SAMPLE / "*.jsonl.gz")]}, "stages": [],
                  "output": {"dir": str(run), "token_counter": "whitespace"}, "executor": {"kind": "local"}})
    first = skill_order(run, tmp_path / "first", GRAPH, LOSSES, 3, 50_000, column="domain")
    r = _skill_order_cli(tmp_path / "first", tmp_path / "second", tmp_path)
    assert r.returncode == 0 and "round 0: shards/round-000.parquet" in r.stdout, r.stdout + r.stderr
    second = OrderedRunManifest.read(tmp_path / "second")
    assert second.name == "s-skill-ordered-skill-ordered" and second.source_run == str(tmp_path / "first")
    assert second.source_fingerprint is None  # skill-ordered output has no fingerprint of its own
    ids = {i for s in first.shards for i in pq.read_table(tmp_path / "first" / s.path).column("id").to_pylist()}
    again = [i for s in second.shards for i in pq.read_table(tmp_path / "second" / s.path).column("id").to_pylist()]
    assert again and len(again) == len(set(again)) and set(again) <= ids
    assert verify_run(tmp_path / "second").ok


def _skill_order_cli(run: Path, out: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    (tmp_path / "g.json").write_text(json.dumps(GRAPH))
    (tmp_path / "l.json").write_text(json.dumps(LOSSES))
    return subprocess.run([sys.executable, "-m", "curation.cli", "skill-order", str(run), str(out), "--graph",
                           str(tmp_path / "g.json"), "--losses", str(tmp_path / "l.json"), "--column", "domain"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_run_with_no_kept_document_gets_a_clear_message(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_pipeline({"name": "s", "input": {"paths": [str(SAMPLE / "license-000.jsonl.gz")]},
                  "stages": [{"stage": "text_length_v1", "min_chars": 10**9}],
                  "output": {"dir": str(run), "token_counter": "whitespace"}, "executor": {"kind": "local"}})
    with pytest.raises(ValueError, match="kept 0 documents"):
        skill_order(run, tmp_path / "out", GRAPH, LOSSES, 1, 1000, column="domain")
    r = _skill_order_cli(run, tmp_path / "out", tmp_path)
    assert r.returncode == 2 and "kept 0 documents" in r.stdout and "Traceback" not in r.stdout + r.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.parametrize("evil", ["../outside.parquet", "ABS", "shards/../../outside.parquet",
                                  "shards\\..\\..\\outside.parquet", "file:///etc/passwd"])
def test_manifest_shard_paths_outside_the_run_are_refused(tmp_path: Path, evil: str) -> None:
    # A parquet file beside the run that an edited manifest points at: it must never be read.
    outside = tmp_path / "outside.parquet"
    pq.write_table(pa.table({"id": ["x"], "domain": ["code"], "n_chars": [10], "text": ["secret"]}), outside)
    run = tmp_path / "run"
    run.mkdir()
    path = str(outside) if evil == "ABS" else evil
    entry = {"path": path, "rows": 1, "bytes": outside.stat().st_size, "sha256": "0" * 64}
    (run / "manifest.json").write_text(json.dumps({**RunManifest(name="evil").to_json(), "shards": [entry]}))
    with pytest.raises(ManifestError, match=r"manifest.json: shard 0 \(.*\): refused: the path"):
        skill_order(run, tmp_path / "out", GRAPH, LOSSES, 1, 1000, column="domain")
    r = _skill_order_cli(run, tmp_path / "out", tmp_path)
    assert r.returncode == 2 and "refused: the path" in r.stdout, r.stdout + r.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_offline_round_zero_equals_the_online_sampler_on_a_binary_chain(tmp_path: Path) -> None:
    """a -> b -> c as a 0/1 graph with equal losses: the planner and the sampler follow one rule."""
    from training.skillit import SkillGraph, SkillItSampler

    skills = ["python_docs", "code", "license"]  # a, b, c: domains of the sample corpus
    chain = {"train_skills": skills, "eval_skills": skills, "A": [[1, 1, 0], [0, 1, 1], [0, 0, 1]]}
    losses = dict.fromkeys(skills, 2.0)
    (tmp_path / "g.json").write_text(json.dumps(chain))
    (tmp_path / "l.json").write_text(json.dumps(losses))
    run = tmp_path / "run"
    run_pipeline({"name": "s", "input": {"paths": [str(SAMPLE / "*.jsonl.gz")]}, "stages": [],
                  "output": {"dir": str(run), "token_counter": "whitespace"}, "executor": {"kind": "local"}})
    r = subprocess.run([sys.executable, "-m", "curation.cli", "skill-order", str(run), str(tmp_path / "out"),
                        "--graph", str(tmp_path / "g.json"), "--losses", str(tmp_path / "l.json"), "--rounds", "1",
                        "--chars-per-round", "20000", "--column", "domain"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    offline = json.loads((tmp_path / "out" / "manifest.json").read_text())["rounds"][0]["planned_mixture"]

    sampler = SkillItSampler(SkillGraph.load(tmp_path / "g.json"), eta=0.5, window=3)
    sampler.observe(losses)
    online = sampler.update(step=1)

    # By hand: the binary off-diagonal ones count 0.5, so A = [[1, .5, 0], [0, 1, .5], [0, 0, 1]];
    # A @ [2, 2, 2] = [3, 3, 2]; p = softmax(0.5 * [3, 3, 2]) = (e^1.5, e^1.5, e^1) / sum
    # = (0.3837, 0.3837, 0.2327). The raw 0/1 matrix would give softmax([2, 2, 1]) = (0.422, 0.422, 0.155).
    z = [math.exp(1.5), math.exp(1.5), math.exp(1.0)]
    hand = {s: v / sum(z) for s, v in zip(skills, z)}
    assert online == pytest.approx(hand, abs=1e-12)
    assert offline == pytest.approx(hand, abs=1e-12)
    assert [round(hand[s], 3) for s in skills] == [0.384, 0.384, 0.233]


def test_skill_order_reads_and_writes_runs_on_an_object_store(s3: Any, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_pipeline({"name": "s", "input": {"paths": [str(SAMPLE / "*.jsonl.gz")]}, "stages": [],
                  "output": {"dir": str(run), "token_counter": "whitespace"}, "executor": {"kind": "local"}})
    s3.put(str(run) + "/", "runs/src/", recursive=True)
    leftovers_before = set(Path(tempfile.gettempdir()).glob("curation-*.tmp"))
    remote = skill_order("s3://runs/src", "s3://runs/ordered", GRAPH, LOSSES, 3, 200_000, column="domain")
    local = skill_order(run, tmp_path / "ordered", GRAPH, LOSSES, 3, 200_000, column="domain")
    # The same schedule and the same bytes as a local run, read from and written to the bucket.
    assert [s.path for s in remote.shards] == [f"shards/round-{r:03d}.parquet" for r in range(3)]
    assert remote.shards == local.shards and remote.domains == local.domains
    assert remote.source_run == "s3://runs/src" and local.source_run == str(run.resolve())
    stored = OrderedRunManifest.read("s3://runs/ordered")
    assert stored.shards == remote.shards and stored.rounds == local.rounds
    for s in stored.shards:  # every object is the finished file the manifest describes
        data = s3.cat(f"runs/ordered/{s.path}")
        assert (len(data), hashlib.sha256(data).hexdigest()) == (s.bytes, s.sha256)
    assert sorted(p.rsplit("/", 1)[-1] for p in s3.find("runs/ordered")) == [
        "manifest.json", "round-000.parquet", "round-001.parquet", "round-002.parquet"]  # no temp object
    assert set(Path(tempfile.gettempdir()).glob("curation-*.tmp")) == leftovers_before  # local temps removed
    report = verify_run("s3://runs/ordered")
    assert report.ok and report.shards == 3 and not report.has_run_json, report.problems
    with pytest.raises(FileExistsError, match="already holds a manifest"):
        skill_order(run, "s3://runs/ordered", GRAPH, LOSSES, 1, 1000, column="domain")
