"""The job routes end to end: a real uvicorn service process on loopback that starts its own Ray head
(job server, token auth) once for this module, real pipelines run as Ray jobs over tiny JSONL inputs.

Every job is slowed by the executor's fault-injection sleep (1 s per pass-0 task), so that a run with
many input files is still running when a test cancels it. The service is SIGKILLed and restarted
in the recovery tests; its Ray head (own process group) survives and is reused, as after a crash.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI

from tests.conftest import PROSE, REPO, pipeline_dict, write_jsonl
from tests.curation.cluster import free_ports

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SERVICE_ONLY_SECRET = "service-only-secret-0123456789"
RUNS_ENV, STATE_ENV, INPUTS_ENV = "CURATE_TEST_RUNS_ROOT", "CURATE_TEST_STATE_DIR", "CURATE_TEST_INPUT_ROOT"


def app_from_env() -> FastAPI:
    """The service as the test runs it (`uvicorn --factory`): the real app over settings from env, with a small
    Ray head (two CPUs for tasks, a small object store: the machine is shared)."""
    from curation.service.app import create_app
    from curation.service.jobs import JobManager
    from curation.service.settings import ServiceSettings

    settings = ServiceSettings(runs_root=os.environ[RUNS_ENV], state_dir=Path(os.environ[STATE_ENV]),
                               input_roots=(os.environ[INPUTS_ENV],))  # where _config writes the jobs' inputs
    app = create_app(settings)
    app.state.jobs = JobManager(settings, ray_args=["--num-cpus=2", "--num-gpus=0",
                                                    f"--object-store-memory={200 * 2**20}"], poll_s=0.5)
    app.state.jobs.start()
    return app


class Service:
    """The service process (restartable on the same state dir) and an HTTP client for it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runs, self.state, self.inputs = root / "runs", root / "state", root / "inputs"
        self.inputs.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, **extra_env: str) -> None:
        port = free_ports(1)[0]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
        env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0",
                   **{RUNS_ENV: str(self.runs), STATE_ENV: str(self.state), INPUTS_ENV: str(self.inputs)},
                   CURATION_ENABLE_FAULT_INJECTION="1", CURATION_FAULT="sleep:0:*",
                   # In the service's environment (app_from_env does not read it): never in its Ray head's or jobs'.
                   CURATE_SERVE_SUBMIT_TOKENS=SERVICE_ONLY_SECRET, **extra_env)
        log = open(self.root / "service.log", "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "tests.curation.service.test_jobs_ray:app_from_env", "--factory",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(self.url + "/api/jobs", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None and time.time() < deadline, self.log()
            time.sleep(0.3)

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # lifespan shutdown: stops the Ray head it started
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return (self.root / "service.log").read_text(errors="replace")[-4000:]

    def post(self, path: str, body: Any = None, **headers: str) -> httpx.Response:
        # Long timeout: the first submission waits for the service's Ray head to come up.
        return httpx.post(self.url + path, json=body, headers=headers, timeout=240)

    def get(self, path: str) -> Any:
        r = httpx.get(self.url + path, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, job_id: str, states: tuple[str, ...], timeout: float = 180) -> dict[str, Any]:
        deadline = time.time() + timeout
        while True:
            job = self.get(f"/api/jobs/{job_id}")
            if job["state"] in states:
                return job
            assert time.time() < deadline, f"{job_id} stuck in {job['state']}:\n{job['log_tail']}\n{self.log()}"
            time.sleep(0.5)

    def ray_token(self) -> str:
        return (self.state / "ray" / "token").read_text().strip()

    def ray_jobs(self, run_id: str) -> list[Any]:
        """The Ray jobs the cluster holds for a run (asked of Ray itself, not the service)."""
        from ray.job_submission import JobSubmissionClient

        info = json.loads((self.state / "ray" / "head.json").read_text())
        client = JobSubmissionClient(info["dashboard_url"], headers={"Authorization": f"Bearer {self.ray_token()}"})
        return [j for j in client.list_jobs() if (j.metadata or {}).get("curation_run_id") == run_id]


def running_service(root: Path) -> Iterator[Service]:
    """A started service for a module's tests; afterwards it is stopped and its local Ray head too."""
    svc = Service(root)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()
        from curation.service.local_ray import LocalRay

        LocalRay(svc.state / "ray").stop()  # in case the last service was killed: never leave a head behind


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    yield from running_service(tmp_path_factory.mktemp("svc"))


def _config(tmp: Path, name: str, n_files: int) -> str:
    """A two-pass pipeline (filter, then exact dedup) over ``n_files`` small JSONL files."""
    d = tmp / name
    for i in range(n_files):
        write_jsonl(d / f"f{i:02d}.jsonl", [{"id": f"{i}-{j}", "text": PROSE[(i + j) % 3], "domain": "web"}
                                            for j in range(3)] + [{"id": f"{i}-s", "text": "short", "domain": "web"}])
    return yaml.safe_dump(pipeline_dict([str(d / "*.jsonl")], tmp / "ignored"))


def test_submit_runs_to_the_end_idempotently_and_refuses_a_second_active_run(
        service: Service, tmp_path: Path) -> None:
    body = {"config_yaml": _config(service.inputs / tmp_path.name, "tiny", 2), "overrides": ["stages.0.min_chars=10"],
            "run_id": "tiny"}
    r = service.post("/api/runs", body, **{"Idempotency-Key": "k-tiny"})
    assert r.status_code == 202, r.text + service.log()
    job = r.json()["job"]
    assert r.json()["run_id"] == "tiny" and job["run_dir"] == str(service.runs / "tiny")
    assert any("was replaced by" in w for w in r.json()["warnings"])  # the config's own output.dir
    # A retried POST (same key) is the same job; the same key for another request is refused.
    again = service.post("/api/runs", body, **{"Idempotency-Key": "k-tiny"})
    assert again.status_code == 200 and again.json()["job"]["job_id"] == job["job_id"]
    other = service.post("/api/runs", {**body, "overrides": []}, **{"Idempotency-Key": "k-tiny"})
    assert other.status_code == 422 and other.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    # The run is active: a second submission of it (no key) is refused.
    busy = service.post("/api/runs", body)
    assert busy.status_code == 409 and "already" in busy.json()["detail"], busy.text
    done = service.wait(job["job_id"], ("finished", "failed", "cancelled"))
    assert done["state"] == "finished", f"{done['error']}\n{done['log_tail']}"
    assert "done in" in done["log_tail"] and service.ray_token() not in done["log_tail"]
    # The cluster token is in no response, nor in the job table, nor in the service's log.
    assert service.ray_token().encode() not in b"".join(p.read_bytes() for p in service.state.glob("jobs.sqlite*"))
    assert service.ray_token() not in json.dumps(service.get("/api/jobs")) + service.log()
    manifest = json.loads((service.runs / "tiny" / "manifest.json").read_text())
    assert manifest["totals"]["docs_read"] == 8
    # The read side of the same app lists the run once, finished, with the manifest's funnel.
    listed = [r for r in service.get("/api/runs")["runs"] if r["id"] == "tiny"]
    assert len(listed) == 1 and listed[0]["state"] == "finished", listed
    # Finished, same config: nothing to do (no new job). Another config under that run id: refused.
    noop = service.post("/api/runs", body)
    assert noop.status_code == 200 and noop.json()["job"]["job_id"] == job["job_id"]
    assert noop.json()["warnings"][0].startswith("nothing to do: run tiny is complete")
    changed = service.post("/api/runs", {**body, "overrides": ["stages.0.min_chars=11"]})
    assert changed.status_code == 409 and "different config" in changed.json()["detail"]
    assert [j["job_id"] for j in service.get("/api/jobs?run_id=tiny")["jobs"]] == [job["job_id"]]
    assert len(service.ray_jobs("tiny")) == 1


def test_the_ray_head_and_its_processes_never_hold_the_service_tokens(service: Service, tmp_path: Path) -> None:
    """Every process of the local Ray head's session (``ray start``, GCS, raylet, workers, job drivers) has an
    allowlisted environment (``curation.service.local_ray.job_env``): the service's ``CURATE_SERVE_*`` are not in it."""
    r = service.post("/api/runs", {"config_yaml": _config(service.inputs / tmp_path.name, "env", 1), "run_id": "env"})
    assert r.status_code == 202, r.text + service.log()
    assert service.wait(r.json()["job"]["job_id"], ("finished", "failed", "cancelled"))["state"] == "finished"
    session = json.loads((service.state / "ray" / "head.json").read_text())["pgid"]
    seen = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) != session:  # the session id (ray start runs in a new session)
                continue
            env = (stat.parent / "environ").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        seen += 1
        assert b"CURATE_SERVE_" not in env and SERVICE_ONLY_SECRET.encode() not in env, stat.parent
    assert seen >= 2  # ray start and at least the GCS / raylet


def _markers(run_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in run_dir.glob("_markers/seg0/*.json")}


def test_cancel_a_running_job_then_resubmit_resumes_it(service: Service, tmp_path: Path) -> None:
    n = 16  # 16 pass-0 tasks of >= 1 s each on two CPUs: still running when cancelled
    body = {"config_yaml": _config(service.inputs / tmp_path.name, "many", n), "run_id": "slow"}
    r = service.post("/api/runs", body)
    assert r.status_code == 202, r.text
    job_id = r.json()["job"]["job_id"]
    run_dir = service.runs / "slow"
    deadline = time.time() + 180
    while not _markers(run_dir):  # some tasks finished, the run is not complete
        assert time.time() < deadline and service.get(f"/api/jobs/{job_id}")["state"] in ("submitted", "running")
        time.sleep(0.3)
    c = service.post("/api/runs/slow/cancel")
    assert c.status_code == 202 and c.json()["job"]["state"] == "cancelled", c.text
    assert service.post("/api/runs/slow/cancel").status_code == 409  # nothing active any more
    time.sleep(1.0)  # a task that was mid-write when the driver stopped has now gone too
    kept = _markers(run_dir)
    assert 0 < len(kept) < n and not (run_dir / "manifest.json").exists()
    # Resubmitted: a new job, the same run dir; finished tasks are not redone.
    r = service.post("/api/runs", body)
    assert r.status_code == 202 and any("resumes" in w for w in r.json()["warnings"]), r.text
    done = service.wait(r.json()["job"]["job_id"], ("finished", "failed", "cancelled"))
    assert done["state"] == "finished", f"{done['error']}\n{done['log_tail']}"
    after = _markers(run_dir)
    assert len(after) == n and {k: after[k] for k in kept} == kept
    assert json.loads((run_dir / "manifest.json").read_text())["totals"]["docs_read"] == 4 * n
    states = [j["state"] for j in service.get("/api/jobs?run_id=slow")["jobs"]]
    assert states == ["finished", "cancelled"]


@pytest.mark.fault
@pytest.mark.parametrize("point", ["before_ray", "after_ray"])
def test_service_killed_mid_submission_recovers_the_run_once(service: Service, tmp_path: Path, point: str) -> None:
    run_id = f"crash-{point.replace('_', '-')}"
    body = {"config_yaml": _config(service.inputs / tmp_path.name, "crash", 2), "run_id": run_id}
    service.kill()
    service.start(CURATION_SERVICE_FAULT=f"{point}:600")  # the submission stalls at that point
    t = threading.Thread(target=lambda: _swallow(lambda: service.post("/api/runs", body)), daemon=True)
    t.start()
    deadline = time.time() + 120
    while not [j for j in service.get(f"/api/jobs?run_id={run_id}")["jobs"] if j["state"] == "submitting"]:
        assert time.time() < deadline, service.log()
        time.sleep(0.2)
    while point == "after_ray" and not service.ray_jobs(run_id):  # the Ray call returned: the stall is next
        assert time.time() < deadline, service.log()
        time.sleep(0.2)
    service.kill()
    assert len(service.ray_jobs(run_id)) == (0 if point == "before_ray" else 1)
    service.start()
    (job,) = service.get(f"/api/jobs?run_id={run_id}")["jobs"]  # listed once
    done = service.wait(job["job_id"], ("finished", "failed", "cancelled"))
    assert done["state"] == "finished", f"{done['error']}\n{done['log_tail']}"
    (ray_job,) = service.ray_jobs(run_id)  # run once
    assert ray_job.submission_id == f"curate-{job['job_id']}" and str(ray_job.status) == "SUCCEEDED"
    assert (service.runs / run_id / "manifest.json").exists()


def _swallow(fn: Any) -> None:
    try:
        fn()
    except httpx.HTTPError:  # the service was killed under this request
        pass


def test_a_local_head_that_hits_a_port_conflict_is_started_again_on_other_ports(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first ``ray start`` is given the dashboard's port for its agent too (what a port taken between
    choosing and binding looks like); the head is started again and answers."""
    from curation.service import local_ray

    real, calls = local_ray.free_ports, []

    def clashing(n: int) -> list[int]:
        ports = real(n)
        calls.append(ports)
        if len(calls) == 1:
            ports[5] = ports[1]  # dashboard-agent-listen-port = dashboard-port
        return ports

    monkeypatch.setattr(local_ray, "free_ports", clashing)
    head = local_ray.LocalRay(tmp_path / "ray")
    try:
        head.start()
        assert len(calls) == 2 and head._alive()
        assert head.dashboard_url.endswith(f":{calls[1][1]}")
        assert "is trying to use a port number" not in (tmp_path / "ray" / "head.log").read_text()
    finally:
        head.stop()


def _listening(pids: set[int]) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every TCP socket the processes ``pids`` listen on (from /proc)."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes[link[8:-1]] = pid
        except OSError:
            continue
    out = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in open(table).read().splitlines()[1:]:
            f = line.split()
            if f[3] != "0A" or f[9] not in inodes:  # 0A: LISTEN
                continue
            hexaddr, port = f[1].split(":")
            raw = bytes.fromhex(hexaddr)
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is host order
            import ipaddress

            ip = ipaddress.ip_address(words)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            out.append((str(ip), int(port, 16), inodes[f[9]]))
    return out


def test_every_port_of_the_local_ray_head_listens_on_loopback_only(tmp_path: Path) -> None:
    """The GCS, raylet, dashboard agent, metrics, runtime-env and client servers of the head the service starts:
    none reachable from another machine (without Ray's single-machine switch they listen on all interfaces)."""
    from curation.service.local_ray import LocalRay

    head = LocalRay(tmp_path / "ray")
    try:
        head.start()
        pgid = json.loads(head.info_file.read_text())["pgid"]
        time.sleep(3)  # the agents open their ports after the dashboard answers
        pids = {int(p) for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) == pgid}
        socks = _listening(pids)
        assert len(socks) >= 6, socks  # the parser sees the head's servers
        assert [s for s in socks if s[0] not in ("127.0.0.1", "::1")] == [], socks
    finally:
        head.stop()


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None
