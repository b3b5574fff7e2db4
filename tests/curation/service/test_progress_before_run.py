"""Right after a submission the page polls ``/api/runs/{id}/progress`` before the job has created the run directory:
a run whose latest job is active is answered as ``queued``/``starting``, not 404 (issue 27 item 22)."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from curation.service.app import create_app
from curation.service.job_store import JobStore
from tests.curation.service.conftest import make_settings


def _job(store: JobStore, run_id: str, state: str) -> None:
    now = time.time()
    with store.transaction() as db:
        db.execute("INSERT INTO jobs (job_id, run_id, run_dir, submitted_at, updated_at, config_yaml, overrides_json,"
                   " pipeline_yaml, fingerprint, ray_job_id, state, submitter_role, request_hash) VALUES "
                   "(?, ?, ?, ?, ?, '', '[]', '', '', ?, ?, 'submit', '')",
                   (f"job-{run_id}", run_id, f"/nowhere/{run_id}", now, now, f"curate-job-{run_id}", state))


def test_a_submitted_run_without_its_directory_is_queued_not_missing(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    settings = make_settings(tmp_path / "runs", tmp_path)
    store = JobStore(Path(settings.state_dir) / "jobs.sqlite")
    _job(store, "waiting", "submitted")
    _job(store, "booting", "running")
    _job(store, "gone", "failed")
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as c:
        r = c.get("/api/runs/waiting/progress")
        assert r.status_code == 200, r.text
        p = r.json()
        assert p["state"] == "queued" and p["job_id"] == "job-waiting"
        assert (p["tasks_done"], p["tasks_total"], p["passes"], p["eta_s"]) == (0, 0, [], None)
        assert c.get("/api/runs/booting/progress").json()["state"] == "starting"
        # No active job: still 404, as for a run nobody submitted.
        assert c.get("/api/runs/gone/progress").status_code == 404
        assert c.get("/api/runs/nobody/progress").status_code == 404
        assert c.get("/api/runs/.bad/progress").status_code == 400
