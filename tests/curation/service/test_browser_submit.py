"""Submitting a run from the page, in a real browser (Debian's Chromium driven by Playwright), against the real
service process with its job routes and a small local Ray head (the Service helper of test_jobs_ray); and the
service SIGKILLed mid-run, then restarted: the run finishes and is listed once.

Jobs are slowed by the executor's fault-injection sleep (1 s per pass-0 task), so progress is visible.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.curation.service.test_browser import shot
from tests.curation.service.test_jobs_ray import Service, _config, _markers, running_service

pytestmark = [pytest.mark.ray, pytest.mark.slow]
QUICKSTART = (REPO / "pipelines" / "quickstart.yaml").read_text()
# The job's working directory is not the checkout: the sample corpus by absolute path; the local executor
# inside the job is much faster than Ray tasks for 1,265 documents.
OVERRIDES = f"executor.kind=local\ninput.paths=[{REPO}/curation/data/sample/*.jsonl.gz]"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from running_service(tmp_path_factory.mktemp("svc"))




def test_submit_from_the_page_watch_it_finish_and_open_the_run(browser, service: Service) -> None:  # noqa: ANN001
    ctx = browser.new_context(viewport={"width": 1200, "height": 1000})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(service.url + "/")
    assert pg.locator("#submit-form").is_visible()
    # A bad key: the config's dotted path, inline under the YAML field; nothing is submitted.
    pg.fill("#submit-form textarea[name=config_yaml]", QUICKSTART.replace("min_score: 0.65", "min_scroe: 0.65"))
    pg.fill("#submit-form textarea[name=overrides]", OVERRIDES)
    pg.fill("#submit-form input[name=run_id]", "qs-web")
    pg.click("#submit-form button[type=submit]")
    err = pg.locator(".field-error[data-field=config_yaml]")
    err.wait_for(timeout=60_000)
    assert "stages[1] (language_id_v1): unknown key(s) 'min_scroe'" in err.inner_text()
    assert pg.locator("textarea[name=config_yaml]").get_attribute("aria-invalid") == "true"
    shot(pg, "submit-error", full_page=False)
    assert service.get("/api/jobs?run_id=qs-web")["jobs"] == []
    # The same form fixed: submitted, the job's state and the run's progress update, it finishes.
    pg.fill("#submit-form textarea[name=config_yaml]", QUICKSTART)
    pg.click("#submit-form button[type=submit]")
    # Either outcome ends the wait: a refusal fails here with its message, not after the timeout.
    pg.wait_for_selector("#submit-ok, .field-error", timeout=240_000)
    assert pg.locator(".field-error").count() == 0, pg.locator(".field-error").all_inner_texts()
    assert "submitted run qs-web" in pg.locator("#submit-ok").inner_text()
    pg.wait_for_function("() => { const p = document.getElementById('submit-progress'); "
                         "return p && / of [1-9]\\d* tasks done/.test(p.textContent); }", timeout=120_000)
    first = pg.locator("#submit-progress").inner_text()
    seen = {pg.locator("#submit-state").inner_text()}
    deadline = time.time() + 240
    while not pg.locator("#open-run").count():
        seen.add(pg.locator("#submit-state").inner_text())
        assert time.time() < deadline, f"{seen}\n{service.log()}"
        time.sleep(0.3)
    assert pg.locator("#submit-state").get_attribute("data-state") == "finished"
    assert pg.locator("#submit-progress").inner_text() != first  # the progress moved while we watched
    assert any("running" in s or "submitted" in s for s in seen), seen
    # The runs table above the form lists the run now, without a reload (issue 27 item 24).
    pg.wait_for_selector("section#runs table.runs a[href='/runs/qs-web']", timeout=30_000)
    shot(pg, "submit", full_page=False)
    pg.click("#open-run")
    pg.wait_for_url("**/runs/qs-web")
    assert "193 kept" in pg.locator("p.summary").inner_text()  # the quickstart's result
    assert pg.locator("svg#funnel rect").count() >= 2 and pg.locator("#mixture").is_visible()
    ctx.close()
    assert not errors, errors


def test_service_killed_mid_run_restarts_and_the_run_finishes_once(service: Service, tmp_path: Path) -> None:
    n = 12  # 12 pass-0 tasks of >= 1 s each on two CPUs: still running when the service is killed
    body = {"config_yaml": _config(service.inputs / tmp_path.name, "kill", n), "run_id": "killed"}
    r = service.post("/api/runs", body)
    assert r.status_code == 202, r.text
    job_id = r.json()["job"]["job_id"]
    run_dir = service.runs / "killed"
    deadline = time.time() + 180
    while not _markers(run_dir):  # mid-run: some tasks done, no manifest
        assert time.time() < deadline, service.log()
        time.sleep(0.3)
    assert not (run_dir / "manifest.json").exists()
    service.kill()
    service.start()
    done = service.wait(job_id, ("finished", "failed", "cancelled"))
    assert done["state"] == "finished", f"{done['error']}\n{done['log_tail']}"
    assert json.loads((run_dir / "manifest.json").read_text())["totals"]["docs_read"] == 4 * n
    assert [j["job_id"] for j in service.get("/api/jobs?run_id=killed")["jobs"]] == [job_id]
    listed = [x for x in service.get("/api/runs")["runs"] if x["id"] == "killed"]
    assert len(listed) == 1 and listed[0]["state"] == "finished", listed
    assert len(service.ray_jobs("killed")) == 1  # run once
