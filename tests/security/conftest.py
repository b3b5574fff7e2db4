"""Fixtures of the security tests: a tiny finished run (local executor, built once per module) and fresh copies
of it that a test may tamper with."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import PROSE, pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline


def make_tiny_run(out: Path, n: int = 6) -> Path:
    """A finished run of ``n`` prose documents (one too short, so ``decisions/`` is not empty)."""
    docs = [{"id": f"d{i}", "domain": "web", "text": PROSE[i % 3] + f" number {i}"} for i in range(n)]
    docs.append({"id": "short", "domain": "web", "text": "too short"})
    inp = out.parent / f"{out.name}-in"
    write_jsonl(inp / "a.jsonl", docs)
    write_jsonl(inp / "b.jsonl", docs[:2])  # two input files: two shards
    run_pipeline(pipeline_dict([str(inp / "*.jsonl")], out))
    return out


@pytest.fixture(scope="module")
def tiny_run_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("sec") / "src")


@pytest.fixture
def tiny_run(tiny_run_src: Path, tmp_path: Path) -> Path:
    """A copy of the tiny run under ``tmp_path/runs/run`` (a runs root of its own)."""
    out = tmp_path / "runs" / "run"
    shutil.copytree(tiny_run_src, out)
    return out


SUBMIT_TOKEN = "s" * 20
READ_TOKEN = "r" * 20


@pytest.fixture
def jobs_client(tmp_path: Path):  # noqa: ANN201 - a TestClient
    """The job routes with a manager whose Ray never comes up (as ``tests/curation/service/test_jobs.py``):
    enough for everything that happens before a job is handed to Ray (validation)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from curation.service.jobs import JobError, JobManager
    from curation.service.routes_jobs import job_error, router
    from curation.service.settings import ServiceSettings

    settings = ServiceSettings(runs_root=str(tmp_path / "runs"), state_dir=tmp_path / "state",
                               ray_address="http://127.0.0.1:9", submit_tokens=frozenset({SUBMIT_TOKEN}),
                               read_tokens=frozenset({READ_TOKEN}))
    app = FastAPI()
    app.include_router(router)
    app.add_exception_handler(JobError, job_error)  # as create_app does
    app.state.settings = settings
    app.state.jobs = JobManager(settings, ready_timeout_s=0.1)  # never started: no Ray behind it
    return TestClient(app)
