"""The API's response models (``curation/service/models.py``) describe the answers exactly: the keys the code builds,
in its order, so a validated model never drops, renames or reorders a field, and the OpenAPI document names them."""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from curation.io.runs import RunInfo
from curation.service.app import create_app
from curation.service.job_store import STATES, JobStore, public
from curation.service.jobs import JobManager
from curation.service.models import FunnelStage, Job, JobDetail, JobList, QueryResult, RunDetail, RunList, RunSummary
from curation.service.settings import ServiceSettings
from tests.conftest import PROSE, pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline


def _keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _job_row(tmp_path: Path) -> dict[str, typing.Any]:
    store = JobStore(tmp_path / "jobs.sqlite")
    with store.transaction() as db:
        db.execute("INSERT INTO jobs (job_id, run_id, run_dir, submitted_at, updated_at, config_yaml, overrides_json,"
                   " pipeline_yaml, fingerprint, ray_job_id, state, submitter_role, request_hash) VALUES "
                   "('j1', 'r1', '/runs/r1', 1.5, 2.5, 'name: x', '[\"a=1\"]', 'p', 'f', 'curate-j1', 'running',"
                   " 'submit', 'h')")
    row = store.get("j1")
    assert row is not None
    return row


def test_validated_models_have_the_keys_the_code_builds_in_its_order(tmp_path: Path) -> None:
    info = RunInfo("r1", tmp_path, "finished", funnel=[("input", 3, 3, 0)])
    assert _keys(RunSummary) == list(info.to_json())
    assert _keys(FunnelStage) == list(info.to_json()["funnel"][0])
    assert _keys(RunList) == ["root", "runs"] and _keys(JobList) == ["jobs"]
    row = _job_row(tmp_path)
    assert _keys(Job) == list(public(row))
    assert _keys(JobDetail) == [*public(row, detail=True), "log_tail"]
    assert typing.get_args(Job.model_fields["state"].annotation) == STATES


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """create_app over one finished run (``run``) and one whose manifest holds values of odd types (``odd``), with
    a job manager whose Ray never comes up."""
    root = tmp_path_factory.mktemp("models")
    docs = [{"id": f"d{i}", "domain": "web", "text": PROSE[i % 3] + f" number {i}"} for i in range(5)]
    docs.append({"id": "short", "domain": "web", "text": "too short"})
    write_jsonl(root / "in" / "a.jsonl", docs)
    run_pipeline(pipeline_dict([str(root / "in" / "*.jsonl")], root / "runs" / "run"))
    import shutil

    shutil.copytree(root / "runs" / "run", root / "runs" / "odd")
    manifest = json.loads((root / "runs" / "odd" / "manifest.json").read_text())
    # Run files are untrusted: the runs list passes whatever they hold through (RunSummary's File* fields).
    manifest.update(totals=[[1, 2], ["b", None]], domains=[["web", "x"]],
                    stages=[{"name": 7, "in": "9", "out": None, "dropped": {"a": 1.5}}])
    (root / "runs" / "odd" / "manifest.json").write_text(json.dumps(manifest))
    settings = ServiceSettings(runs_root=str(root / "runs"), state_dir=root / "state",
                               ray_address="http://127.0.0.1:9")
    app: FastAPI = create_app(settings)
    app.state.jobs = JobManager(settings, ready_timeout_s=0.1)  # never started: no Ray behind it
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def test_described_models_have_the_keys_of_the_answers(client: TestClient) -> None:
    detail = client.get("/api/runs/run").json()
    assert list(detail) == _keys(RunDetail)
    RunDetail.model_validate(detail)  # its types describe a well-formed run
    r = client.post("/api/runs/run/query", json={"sql": "SELECT id, n_chars FROM docs ORDER BY id", "limit": 2})
    assert list(r.json()) == _keys(QueryResult)
    QueryResult.model_validate(r.json())


def test_the_runs_list_passes_odd_manifest_values_through(client: TestClient) -> None:
    runs = {r["id"]: r for r in client.get("/api/runs").json()["runs"]}
    odd = runs["odd"]
    assert odd["totals"] == {"1": 2, "b": None} and odd["domains"] == {"web": "x"}
    assert odd["funnel"] == [{"stage": 7, "in": "9", "out": None, "dropped": 1.5}]
    assert list(runs["run"]) == _keys(RunSummary)


def test_the_openapi_document_names_the_response_models(client: TestClient) -> None:
    doc = client.get("/api/openapi.json").json()

    def schema(path: str, method: str, status: str = "200") -> str:
        return doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]["$ref"]

    assert schema("/api/runs", "get").endswith("/RunList")
    assert schema("/api/runs/{run_id}", "get").endswith("/RunDetail")
    assert schema("/api/runs/{run_id}/query", "post").endswith("/QueryResult")
    assert "text/csv" in doc["paths"]["/api/runs/{run_id}/query"]["post"]["responses"]["200"]["content"]
    assert schema("/api/jobs", "get").endswith("/JobList")
    assert schema("/api/jobs/{job_id}", "get").endswith("/JobDetail")
    assert schema("/api/runs", "post", "202").endswith("/JobSubmitted")
    assert schema("/api/runs/{run_id}/cancel", "post", "202").endswith("/JobCancelled")
    assert doc["components"]["schemas"]["RunSummary"]["properties"]["funnel"]["items"]["$ref"].endswith("/FunnelStage")


def test_the_app_answers_a_job_error_in_the_job_routes_shape(client: TestClient) -> None:
    assert client.get("/api/jobs/nope").status_code == 404
    assert client.get("/api/jobs/nope").json() == {"detail": "no job nope"}
    r = client.post("/api/runs", json={"config_yaml": "name: x\n", "run_id": "../etc"})
    assert r.status_code == 422
    (d,) = r.json()["detail"]
    assert d["loc"] == ["body", "run_id"] and d["type"] == "config_error" and d["msg"].startswith("run_id '../etc'")
