"""The job table, validation and the job routes without Ray: compare-and-set, one active job per
run, idempotency, `curate run`'s validation messages as 422, token redaction."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from curation.errors import ConfigError
from curation.service.job_store import JobStore
from curation.service.jobs import JobError, JobManager, redact, validate
from curation.service.routes_jobs import job_error, router
from curation.service.settings import ServiceSettings
from tests.conftest import pipeline_dict


def _row(store: JobStore, job_id: str, run_id: str, state: str = "validated", key: str | None = None) -> None:
    with store.transaction() as db:
        db.execute("INSERT INTO jobs (job_id, run_id, run_dir, submitted_at, updated_at, config_yaml, overrides_json,"
                   " pipeline_yaml, fingerprint, ray_job_id, state, submitter_role, idempotency_key, request_hash)"
                   " VALUES (?, ?, 'd', 0, 0, 'c', '[]', 'p', 'f', ?, ?, 'submit', ?, 'h')",
                   (job_id, run_id, f"curate-{job_id}", state, key))


def test_table_is_wal_and_transitions_are_compare_and_set(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    with store.connect() as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    _row(store, "j1", "r1")
    assert store.transition("j1", ("validated",), "submitting")
    assert not store.transition("j1", ("validated",), "submitting")  # already moved: the second mover loses
    assert not store.transition("j1", ("running",), "finished")
    assert store.get("j1")["state"] == "submitting"


def test_only_one_of_many_racing_threads_wins_a_transition(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    _row(store, "j1", "r1", state="running")
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def move(to: str) -> None:
        barrier.wait()
        wins.append(store.transition("j1", ("running",), to))

    threads = [threading.Thread(target=move, args=(("finished", "failed", "cancelled")[i % 3],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]


def test_at_most_one_active_job_per_run_and_one_job_per_idempotency_key(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite")
    _row(store, "j1", "r1", state="running", key="k1")
    with pytest.raises(sqlite3.IntegrityError):
        _row(store, "j2", "r1")  # r1 is active
    with pytest.raises(sqlite3.IntegrityError):
        _row(store, "j3", "r2", key="k1")
    assert store.transition("j1", ("running",), "cancelled")
    _row(store, "j2", "r1")  # a cancelled run may be submitted again (it resumes)
    assert [r["job_id"] for r in store.list(run_id="r1")] == ["j2", "j1"]


def _yaml(tmp_path: Path, **output: object) -> str:
    return yaml.safe_dump(pipeline_dict([str(tmp_path / "in" / "*.jsonl")], tmp_path / "elsewhere", **output))


def test_validate_forces_the_run_dir_and_says_so(tmp_path: Path) -> None:
    v = validate(_yaml(tmp_path), [], str(tmp_path / "runs" / "r1"))
    assert yaml.safe_load(v.pipeline_yaml)["output"]["dir"] == str(tmp_path / "runs" / "r1")
    assert len(v.warnings) == 1 and "was replaced by" in v.warnings[0] and "elsewhere" in v.warnings[0]
    # An override of output.dir is overridden too; the same run dir given explicitly warns nothing.
    assert validate(_yaml(tmp_path), [f"output.dir={tmp_path / 'runs' / 'r1'}"], str(tmp_path / "runs" / "r1")) \
        .warnings == []
    # The fingerprint is the config's, not where it is written from.
    assert v.fingerprint == validate(_yaml(tmp_path), ["output.dir=x"], str(tmp_path / "runs" / "r1")).fingerprint


@pytest.mark.parametrize("text, overrides, match", [
    ("a: [", [], "config_yaml: invalid YAML"),
    ("- 1", [], "config_yaml: top level must be a mapping"),
    (None, ["stages.0.min_charz=3"], r"config_yaml.stages\[0\] \(text_length_v1\): unknown key\(s\) 'min_charz'"),
    (None, ["input.batch_size=many"], "batch_size"),
])
def test_validation_errors_are_curate_runs(tmp_path: Path, text: str | None, overrides: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        validate(text if text is not None else _yaml(tmp_path), overrides, str(tmp_path / "r"))


def test_redact_blanks_tokens_from_env_and_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", "abcdef0123456789abcdef")
    monkeypatch.setenv("HOME_DIR_NAME", "abcdefghij")  # not a secret's name: left alone
    text = ("env RAY_AUTH_TOKEN=abcdef0123456789abcdef at /home/abcdefghij\nAuthorization: Bearer zzzzzzzzzzzz\n"
            "token: 0123456789abcdef0123 and svc-secret-value-1234")
    out = redact(text, ("svc-secret-value-1234",))
    assert "abcdef0123456789abcdef" not in out and "zzzzzzzzzzzz" not in out and "0123456789abcdef0123" not in out
    assert "svc-secret-value-1234" not in out and "/home/abcdefghij" in out and out.count("[redacted]") == 4


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    """The job routes with a manager whose Ray never comes up (an unused loopback port)."""
    (tmp_path / "in").mkdir()  # where _yaml's inputs are: the jobs' input root
    settings = ServiceSettings(runs_root=str(tmp_path / "runs"), state_dir=tmp_path / "state",
                               ray_address="http://127.0.0.1:9", submit_tokens=frozenset({"s" * 20}),
                               read_tokens=frozenset({"r" * 20}), input_roots=(str(tmp_path / "in"),))
    app = FastAPI()
    app.include_router(router)
    app.add_exception_handler(JobError, job_error)  # as create_app does
    app.state.settings = settings
    app.state.jobs = JobManager(settings, ready_timeout_s=0.1)  # never started: no Ray behind it
    return TestClient(app)


SUBMIT = {"Authorization": "Bearer " + "s" * 20}
READ = {"Authorization": "Bearer " + "r" * 20}


def test_422_carries_curate_runs_message_with_the_dotted_path(client: TestClient, tmp_path: Path) -> None:
    r = client.post("/api/runs", headers=SUBMIT, json={"config_yaml": _yaml(tmp_path), "run_id": "r1",
                                                       "overrides": ["stages.1.num_bucketz=2"]})
    assert r.status_code == 422, r.text
    (d,) = r.json()["detail"]
    assert d["loc"] == ["body", "config_yaml"] and d["type"] == "config_error"
    assert d["msg"].startswith("config_yaml.stages[1] (exact_dedup_v1): unknown key(s) 'num_bucketz'")
    r = client.post("/api/runs", headers=SUBMIT, json={"config_yaml": _yaml(tmp_path), "run_id": "../etc"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "run_id"]
    r = client.post("/api/runs", headers=SUBMIT, json={"overrides": []})  # pydantic: config_yaml missing
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "config_yaml"]
    assert client.get("/api/jobs", headers=READ).json() == {"jobs": []}  # nothing was written


def test_roles_and_a_cluster_that_is_not_up(client: TestClient, tmp_path: Path) -> None:
    body = {"config_yaml": _yaml(tmp_path), "run_id": "r1"}
    assert client.post("/api/runs", json=body).status_code == 401
    assert client.post("/api/runs", headers=READ, json=body).status_code == 403
    assert client.post("/api/runs/r1/cancel", headers=READ).status_code == 403
    r = client.post("/api/runs", headers=SUBMIT, json=body)
    # 503 either way: while the manager is still connecting, or once it failed to (which of the two depends on
    # how fast the refused connection to port 9 comes back).
    detail = r.json()["detail"]
    assert r.status_code == 503 and ("still starting" in detail or "unavailable" in detail), detail
    assert client.get("/api/jobs", headers=READ).json() == {"jobs": []}
    assert client.get("/api/jobs/nope", headers=READ).status_code == 404
    assert client.post("/api/runs/r1/cancel", headers=SUBMIT).status_code == 404
    assert json.loads(client.get("/api/jobs", headers=READ).text) == {"jobs": []}


def test_job_driver_writes_the_pipeline_and_runs_curate_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from curation.job_driver import job_main
    from curation.service.jobs import DRIVER_ENV, PIPELINE_ENV, RUN_ID_ENV

    text = _yaml(tmp_path)
    monkeypatch.setenv(PIPELINE_ENV, text)
    monkeypatch.setenv(RUN_ID_ENV, "r7")
    monkeypatch.setenv(DRIVER_ENV, json.dumps({"AWS_REGION": "eu-west-1"}))
    monkeypatch.delenv("AWS_REGION", raising=False)
    seen: list[list[str]] = []
    job_main([], run=seen.append)
    (args,) = seen
    assert args[0] == "run" and args[2:] == ["--ray-address", "auto", "--executor", "ray"]
    assert Path(args[1]).name == "r7.yaml" and Path(args[1]).read_text() == text
    assert os.environ["AWS_REGION"] == "eu-west-1" and DRIVER_ENV not in os.environ


def test_a_token_never_goes_in_clear_text_to_a_remote_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t0ken-t0ken-t0ken-t0ken")
    settings = ServiceSettings(runs_root=str(tmp_path / "runs"), state_dir=tmp_path / "state",
                               ray_address="http://cluster-head.invalid:8265")  # .invalid: never resolves
    jobs = JobManager(settings)
    jobs.start()
    with pytest.raises(JobError, match="refusing to send the cluster token over plain http") as err:
        jobs.wait_ready(timeout=30)
    assert err.value.status == 503 and "t0ken" not in str(err.value)
    jobs.close()


def test_free_ports_never_hands_out_a_port_twice() -> None:
    """``ray start`` refuses a port named twice: a head's ports and its agents' ports came from two
    calls, and the kernel gave both the same one on CI."""
    from curation.service.local_ray import free_ports

    ports = [p for _ in range(60) for p in free_ports(9)]
    assert len(ports) == 540 and len(set(ports)) == 540
