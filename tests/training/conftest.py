"""Curation runs the training tests read: the bundled sample as-is, and the quickstart's output."""

from __future__ import annotations

from pathlib import Path

import pytest

from curation.config import load_yaml
from tests.conftest import REPO, SAMPLE
from tests.curation.executors.runs import run_pipeline


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample_run") / "run"
    run_pipeline({"name": "sample", "input": {"paths": [str(SAMPLE / "*.jsonl.gz")]}, "stages": [],
                  "output": {"dir": str(out), "token_counter": "whitespace", "target_shard_bytes": 300_000},
                  "executor": {"kind": "local"}})
    return out


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = load_yaml(REPO / "pipelines" / "quickstart.yaml")
    cfg["input"]["paths"] = [str(SAMPLE / "*.jsonl.gz")]
    cfg["output"]["dir"] = str(tmp_path_factory.mktemp("quickstart") / "run")
    cfg["executor"] = {"kind": "local"}
    run_pipeline(cfg)
    return Path(cfg["output"]["dir"])
