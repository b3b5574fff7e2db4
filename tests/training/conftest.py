"""Curation runs the training tests read: the bundled sample as-is, the quickstart's output, and the sample in
Skill-It curriculum order (``curate skill-order`` output)."""

from __future__ import annotations

from pathlib import Path

import pytest

from curation.config import load_yaml
from curation.skill_order import skill_order
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


#: A skills graph over the sample's domains (python_docs helps code) and initial losses: round 0 leans to code.
GRAPH = {"train_skills": ["python_docs", "code", "license"], "eval_skills": ["python_docs", "code", "license"],
         "A": [[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]}
LOSSES = {"python_docs": 3.0, "code": 4.0, "license": 2.0}


@pytest.fixture(scope="session")
def ordered_run(sample_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample in three rounds planned at 8,000 characters each, a shard per round: 39 python_docs documents
    (the code and license ones are longer than their shares of a round), small enough that a few batches cross the
    rounds and start the curriculum again."""
    out = tmp_path_factory.mktemp("ordered") / "run"
    skill_order(sample_run, out, GRAPH, LOSSES, rounds=3, chars_per_round=8_000, column="domain")
    return out
