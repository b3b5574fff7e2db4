"""CI smoke run of the full-pipeline scale benchmark at its 10k size (in-process executor)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # about 40 s on two shared cores


def test_pipeline_scale_10k_smoke(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "pipeline_scale.py"), "--sizes", "10000",
                        "--executors", "local", "--work", str(tmp_path), "--json", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (res,) = json.loads(out.read_text())
    assert res["size"] == 10000 and res["input_mb"] > 20 and 2000 < res["docs_out"] < 6000  # most prose survives the filters; select keeps half
    assert res["wall_s"] > 0 and res["driver_peak_mb"] > 0
    # CPU figures: the tasks' own (markers' cpu_seconds) are part of all the run's processes' CPU time.
    assert 0 < res["task_cpu_s"] <= res["process_cpu_s"] and 0 <= res["startup_s"] < res["wall_s"]
    assert res["mb_per_cpu_s"] == pytest.approx(res["input_mb"] / res["process_cpu_s"], rel=0.01)
    d = res["dedup"]  # scored against the generator's ground truth
    assert d["removable"] > 500 and d["removed"] > 0 and d["precision"] > 0.9 and d["recall"] > 0.5
    assert abs(sum(res["stage_share"].values()) - 1.0) < 0.01 and "language_id_v1" in res["stage_share"]
    assert (tmp_path / "run-10000-local" / "progress.json").exists()
