"""SIGKILL the driver of a Ray run mid-way, rerun, and get exactly the clean run's shards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import PROSE, REPO, pipeline_dict, write_jsonl
from tests.curation.executors.runs import content, run_pipeline, shard_bytes

pytestmark = [pytest.mark.ray, pytest.mark.fault, pytest.mark.slow]


def _curate(config: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "curation.cli", "run", str(config)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def test_driver_sigkill_then_rerun_matches_clean_run(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    for f in range(4):
        write_jsonl(inputs / f"part-{f}.jsonl", [{"id": f"{f}-{i}", "text": PROSE[(f + i) % 3] + f" Note {i % 5}."}
                                                for i in range(40)])
    golden = tmp_path / "golden"
    run_pipeline(pipeline_dict([str(inputs / "*.jsonl")], golden))

    out = tmp_path / "run"
    data = pipeline_dict([str(inputs / "*.jsonl")], out, kind="ray")
    data["executor"]["concurrency"] = 2
    config = tmp_path / "p.yaml"
    config.write_text(yaml.safe_dump(data))
    env = {**os.environ, "CURATION_FAULT": "hang:0:3", "CURATION_ENABLE_FAULT_INJECTION": "1", "HF_HUB_OFFLINE": "1"}
    proc = _curate(config, env)
    deadline = time.time() + 120
    markers = out / "_markers" / "seg0"
    try:
        while time.time() < deadline:  # three tasks finished, the fourth hangs with its temp files open
            done = len(list(markers.glob("*.json"))) if markers.exists() else 0
            if done == 3 and list(out.rglob("*.tmp")):
                break
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.2)
        else:
            pytest.fail("the run did not reach the kill point")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray cluster it started
        proc.wait()
    assert not (out / "manifest.json").exists()
    assert list(out.rglob("*.tmp"))  # a partial file was left behind

    env.pop("CURATION_FAULT")
    proc = _curate(config, env)
    log = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, log
    assert content(out) == content(golden)
    assert shard_bytes(out) == shard_bytes(golden)
    assert not list(out.rglob("*.tmp"))
    for f in out.rglob("*.parquet"):
        pq.read_metadata(f)

    proc = _curate(config, env)  # a third run has nothing to do
    log = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0 and "nothing to do" in log
