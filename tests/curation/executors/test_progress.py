"""Progress: the bytes-based ETA (fake clock), progress.json of a real local run, and the run API reading it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curation.executors.progress import ProgressTracker, eta_seconds
from curation.io.layout import Layout
from curation.io.runs import progress as run_progress
from tests.conftest import pipeline_dict
from tests.curation.executors.runs import run_pipeline


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_eta_is_bytes_left_over_byte_rate() -> None:
    assert eta_seconds(900, 100, 10.0) == pytest.approx(90.0)  # 10 B/s, 900 B left
    assert eta_seconds(0, 100, 10.0) == 0.0
    assert eta_seconds(500, 0, 10.0) is None  # no rate yet
    assert eta_seconds(500, 100, 0.0) is None


def test_eta_follows_bytes_not_files() -> None:
    # One big file (900 B) and nine small ones (10 B each): after the nine small files a file-count
    # ETA would say "almost done"; the byte ETA says 90% of the bytes are left.
    clock = FakeClock()
    tr = ProgressTracker(None, [900] + [10] * 9, n_passes=1, clock=clock)
    tr.start_pass(0, already_done=[])
    for t in range(1, 10):
        clock.t += 1.0
        tr.task_done({"seg": 0, "task": t, "docs_read": 5, "stages": []})
    snap = tr.snapshot()
    p = snap["passes"][0]
    assert p["tasks_done"] == 9 and p["bytes_in"] == 90 and p["bytes_total"] == 990
    assert p["bytes_per_s"] == pytest.approx(10.0) and p["docs_per_s"] == pytest.approx(5.0)
    assert p["eta_s"] == pytest.approx(90.0) and snap["eta_s"] == pytest.approx(90.0)
    assert snap["fraction"] == pytest.approx(90 / 990, abs=1e-4)


def test_resumed_tasks_count_as_done_but_not_in_the_rate() -> None:
    clock = FakeClock()
    tr = ProgressTracker(None, [100, 100, 100, 100], n_passes=2, clock=clock)
    tr.start_pass(0, already_done=[0, 1])  # an earlier attempt finished these
    clock.t += 5.0
    tr.task_done({"seg": 0, "task": 2, "docs_read": 7, "stages": []})
    snap = tr.snapshot()
    p0 = snap["passes"][0]
    assert p0["tasks_done"] == 3 and p0["bytes_in"] == 300 and p0["docs"] == 7
    assert p0["bytes_per_s"] == pytest.approx(20.0)  # 100 B in 5 s; the resumed 200 B took no time now
    assert p0["eta_s"] == pytest.approx(5.0)
    assert snap["eta_s"] == pytest.approx(5.0 + 400 / 20.0)  # this pass, then pass 1 at the same rate
    tr.task_done({"seg": 0, "task": 3, "docs_read": 7, "stages": []})
    tr.end_pass(0)
    clock.t += 100.0  # pass 1 starts later; until it has a rate, pass 0's stands in
    tr.start_pass(1, already_done=[])
    assert tr.snapshot()["eta_s"] == pytest.approx(400 / 40.0)
    clock.t += 2.0
    tr.task_done({"seg": 1, "task": 0, "stages": [{"in": 3}]})
    snap = tr.snapshot()
    assert snap["passes"][1]["docs"] == 3 and snap["eta_s"] == pytest.approx(300 / 50.0)
    tr.finish()
    assert tr.snapshot()["eta_s"] == 0.0 and tr.snapshot()["finished"] is True


def test_progress_json_is_written_at_most_every_interval(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "progress.json"
    tr = ProgressTracker(path, [10, 10, 10], n_passes=1, clock=clock, min_interval_s=2.0)
    tr.start_pass(0, already_done=[])  # pass starts always write
    clock.t += 0.5
    tr.task_done({"seg": 0, "task": 0, "docs_read": 1, "stages": []})
    assert json.loads(path.read_text())["tasks_done"] == 0  # 0.5 s after the last write: not yet
    clock.t += 2.0
    tr.task_done({"seg": 0, "task": 1, "docs_read": 1, "stages": []})
    assert json.loads(path.read_text())["tasks_done"] == 2
    tr.end_pass(0)
    assert json.loads(path.read_text())["passes"][0]["finished_unix"] == clock.t


def test_local_run_writes_final_progress_json(tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    seen: list[int] = []
    res = run_pipeline(pipeline_dict([str(tiny_corpus / "*")], out), progress=lambda s: seen.append(s["task"]))
    assert sorted(seen) == [0, 0, 1, 1, 2, 2]  # the caller's callback still gets every task (2 passes)
    assert Layout(out).progress == out / "progress.json"  # the one name of the file, for writer and readers
    p = json.loads(Layout(out).progress.read_text())
    sizes = sum(f.stat().st_size for f in (tiny_corpus).iterdir())
    assert p["finished"] is True and p["eta_s"] == 0.0 and p["fraction"] == 1.0
    assert p["tasks_done"] == p["tasks_total"] == 6 and p["input_bytes"] == p["input_bytes_done"] == sizes
    assert [x["docs"] for x in p["passes"]] == [7, 6]  # pass 1 sees what survived text_length_v1
    assert all(x["bytes_in"] == sizes and x["finished_unix"] is not None for x in p["passes"])
    assert res.manifest["totals"]["docs_read"] == 7
    api = run_progress(out)  # what the service shows: progress.json, with the run's state
    assert api["source"] == "progress.json" and api["state"] == "finished" and api["tasks_done"] == 6


def test_run_api_reads_progress_json_only(tiny_corpus: Path, tmp_path: Path) -> None:
    """No fallback to the markers: a damaged progress.json is refused naming it (another version's too:
    tests/curation/io/test_versions.py); before the first pass wrote one, every figure is zero."""
    out = tmp_path / "run"
    run_pipeline(pipeline_dict([str(tiny_corpus / "*")], out))
    (out / "progress.json").write_text("{not json")
    with pytest.raises(ValueError, match=rf"{out / 'progress.json'}: not valid JSON"):
        run_progress(out)
    (out / "progress.json").unlink()
    (out / "manifest.json").unlink()
    api = run_progress(out)
    assert api["source"] == "run.json" and api["tasks_done"] == 0 and api["tasks_total"] == 6 and api["passes"] == []
