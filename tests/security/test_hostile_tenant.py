"""A hostile tenant, end to end: one real ``curate serve`` (its own process, tokens for both roles, an input root),
a runs root holding planted hostile run directories, and a submit-token holder and a read-token holder who try
each attack of the threat model (``docs/security.md``) through the JSON API and the pages in Chromium, while a
prober reads a normal run the whole time.

Nothing leaks (no token, no planted secret, no file outside the roots in any answer), nothing hangs (every answer
within a bound), the service stays responsive (p95 of the prober's reads under 1 s throughout) and is still
serving afterwards. Jobs are refused at validation, so no Ray cluster is needed: ``--ray-address`` points at a port
where nothing listens, and a config that passes every check would get 503.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import yaml

from curation.service.local_ray import free_ports
from tests.conftest import PROSE, REPO, pipeline_dict, write_jsonl
from tests.security.conftest import make_tiny_run
from tests.security.test_html_injection import HOSTILE, RAW, make_hostile_runs

pytestmark = pytest.mark.slow

SUBMIT_TOKEN = "submit-" + "s" * 24
READ_TOKEN = "read-" + "r" * 26
PLANTED = "planted-secret-7f3a9c"  # in a file outside every root and in the service's environment
SUBMIT = {"Authorization": f"Bearer {SUBMIT_TOKEN}"}
READ = {"Authorization": f"Bearer {READ_TOKEN}"}
NEVER = (SUBMIT_TOKEN, READ_TOKEN, PLANTED, "root:x:0:0")  # in no answer, whatever was asked


class Tenant:
    """The service process, its folders, and an HTTP client that records every answer it got."""

    def __init__(self, root: Path) -> None:
        self.root, self.runs, self.inputs, self.state = root, root / "runs", root / "inputs", root / "state"
        self.port = free_ports(1)[0]
        self.base = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.base, timeout=30)
        self.answers: list[tuple[str, int, str]] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "CURATE_SERVE_"))}
        env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0",
                   CURATE_SERVE_SUBMIT_TOKENS=SUBMIT_TOKEN, CURATE_SERVE_READ_TOKENS=READ_TOKEN,
                   TEAM_PLANTED_SECRET=PLANTED)
        self.log = open(self.root / "serve.log", "wb")  # noqa: SIM115 - open for the process's life
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "curation.cli", "serve", "--runs-root", str(self.runs), "--state-dir",
             str(self.state), "--port", str(self.port), "--ray-address", f"http://127.0.0.1:{free_ports(1)[0]}",
             "--input-root", str(self.inputs), "--no-sample-inputs", "--allow-backend-host", "llm.internal",
             "--query-timeout-s", "3", "--query-max-mb", "4"],
            cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.base + "/api/runs", headers=READ, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, self.server_log()
            time.sleep(0.3)
        raise AssertionError("curate serve did not answer in 60 s:\n" + self.server_log())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
        self.http.close()

    def server_log(self) -> str:
        return (self.root / "serve.log").read_text(errors="replace")[-4000:]

    def call(self, method: str, path: str, bound_s: float = 10, **kw: Any) -> httpx.Response:
        """One request; it must be answered within ``bound_s``; its answer is kept for the leak check."""
        t0 = time.time()
        r = self.http.request(method, path, **kw)
        took = time.time() - t0
        assert took < bound_s, f"{method} {path} took {took:.1f} s"
        self.answers.append((f"{method} {path}", r.status_code, r.text))
        return r


class Prober(threading.Thread):
    """Reads a normal run's summary every 0.2 s and records how long each read took."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base, self.times, self.failures, self.halt = base, [], [], threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, headers=READ, timeout=10) as c:
            while not self.halt.is_set():
                t0 = time.time()
                try:
                    r = c.get("/api/runs/tiny")
                    if r.status_code != 200:
                        self.failures.append(f"{r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.times.append(time.time() - t0)
                self.halt.wait(0.2)

    def p95(self) -> float:
        xs = sorted(self.times)
        return xs[min(len(xs) - 1, int(0.95 * len(xs)))]


def _plant(root: Path) -> None:
    """The runs root: a normal run, the hostile runs of the HTML-injection test, a run whose shard is a FIFO and one
    whose shard is a symlink to a secret outside the root; an input root with one good file."""
    runs = root / "runs"
    make_tiny_run(runs / "tiny")
    make_hostile_runs(runs)
    secret = root / "outside" / "secret.txt"
    secret.parent.mkdir(parents=True)
    secret.write_text(f"{PLANTED}\n")
    for name in ("fifo", "symlink"):
        shutil.copytree(runs / "tiny", runs / name)
        shard = next((runs / name).glob("shards/**/*.parquet"))
        shard.unlink()
        if name == "fifo":
            os.mkfifo(shard)
        else:
            shard.symlink_to(secret)
    write_jsonl(root / "inputs" / "a.jsonl", [{"id": "a", "text": PROSE[0], "domain": "web"}])


@pytest.fixture(scope="module")
def tenant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenant]:
    root = tmp_path_factory.mktemp("tenant")
    _plant(root)
    t = Tenant(root)
    t.start()
    try:
        yield t
    finally:
        t.stop()


def _config(tenant: Tenant, stages: list[dict[str, Any]] | None = None, paths: list[str] | None = None) -> str:
    cfg = pipeline_dict(paths or [str(tenant.inputs / "*.jsonl")], tenant.root / "ignored", stages)
    cfg["input"]["max_malformed_fraction"] = 1.0  # unreadable lines to quarantine.raw: what the attacker reads
    return yaml.safe_dump(cfg)


def _submitted_attacks(tenant: Tenant) -> list[tuple[str, dict[str, Any]]]:
    """(what, request body) of configs a submit-token holder sends to read, send or write what they may not."""
    outside = str(tenant.root / "outside" / "secret.txt")
    backend = {"kind": "openai", "model": "m", "base_url": "http://llm.internal/v1", "api_key_env": None}
    rephrase = {"stage": "rephrase_v1", "templates": ["wrap_medium"], "backend": backend}
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    out = [(f"input {p}", {"config_yaml": _config(tenant, paths=[p])})
           for p in ("/etc/passwd", "/proc/self/environ", str(tenant.state / "jobs.sqlite"), outside,
                     f"http://127.0.0.1:{tenant.port}/api/runs", "file:///etc/passwd", f"{tenant.inputs}/../outside/*")]
    out += [
        ("eval set outside the roots", {"config_yaml": _config(tenant, [{"stage": "decontaminate_v1",
                                                                         "eval_files": [{"path": outside}]}])}),
        ("templates from the job table", {"config_yaml": _config(tenant, [{**rephrase, "templates_file":
                                                                           str(tenant.state / "jobs.sqlite")}])}),
        ("the submit tokens as the API key", {"config_yaml": _config(tenant, [{**rephrase, "backend": {
            **backend, "api_key_env": "CURATE_SERVE_SUBMIT_TOKENS"}}])}),
        ("a planted secret as the API key", {"config_yaml": _config(tenant, [{**rephrase, "backend": {
            **backend, "api_key_env": "TEAM_PLANTED_SECRET"}}])}),
        ("a backend host not allowed", {"config_yaml": _config(tenant, [{**rephrase, "backend": {
            **backend, "base_url": "http://evil.example/v1"}}])}),
        ("engine arguments", {"config_yaml": _config(tenant, [{**rephrase, "backend": {
            **backend, "kind": "vllm", "base_url": None, "extra": {"trust_remote_code": True}}}])}),
        ("a cache outside the run", {"config_yaml": _config(tenant, [{**rephrase, "cache_dir": "/tmp/elsewhere"}])}),
        ("a YAML alias bomb", {"config_yaml": bomb}),
        ("YAML nested deeper than the parser's stack", {"config_yaml": "[" * 5000 + "]" * 5000}),
        ("a malformed override", {"config_yaml": _config(tenant), "overrides": ["stages.x.min_score=1"]}),
        ("a run id with a path", {"config_yaml": _config(tenant), "run_id": "../../state"}),
    ]
    return out


def _read_attacks() -> list[tuple[str, str, str, dict[str, Any] | None, tuple[int, ...]]]:
    """(what, method, path, JSON body, statuses that count as refused) for a read-token holder."""
    q = "/api/runs/tiny/query"
    sql = [("COPY", "COPY docs TO '/tmp/x.csv'"), ("a file reader", "SELECT * FROM read_text('/etc/passwd')"),
           ("ATTACH", "ATTACH '/tmp/x.db'"), ("two statements", "SELECT 1; SELECT 2"),
           ("an extension", "INSTALL httpfs"), ("a glob outside", "SELECT * FROM read_parquet('/**/*.parquet')")]
    out: list[tuple[str, str, str, dict[str, Any] | None, tuple[int, ...]]] = [
        (f"query: {what}", "POST", q, {"sql": s}, (400, 403, 422)) for what, s in sql]
    out += [
        ("traversal in a run id", "GET", "/api/runs/..%2F..%2Fstate", None, (400, 404, 422)),
        ("traversal in a document id", "GET", "/api/runs/tiny/docs/..%2F..%2F..%2Fetc%2Fpasswd", None, (404,)),
        ("a FIFO shard", "GET", "/api/runs/fifo/drops", None, (400, 404, 409, 422)),
        ("a FIFO shard's query", "POST", "/api/runs/fifo/query", {"sql": "SELECT count(*) FROM docs"},
         (400, 404, 409, 422)),
        ("a symlinked shard's query", "POST", "/api/runs/symlink/query", {"sql": "SELECT * FROM docs"},
         (400, 404, 409, 422)),
        ("submit with a read token", "POST", "/api/runs", {"config_yaml": "name: x"}, (403,)),
        ("cancel with a read token", "POST", "/api/runs/tiny/cancel", None, (403,)),
    ]
    return out


def test_a_hostile_tenant_gets_nothing_and_the_service_stays_responsive(tenant: Tenant, browser) -> None:  # noqa: ANN001
    prober = Prober(tenant.base)
    prober.start()
    try:
        # Without a token, with a token of the wrong role, from another site, under another host name.
        assert tenant.call("GET", "/api/runs").status_code == 401
        assert tenant.call("GET", "/api/openapi.json").status_code == 401
        assert tenant.call("GET", "/api/runs", headers={**READ, "Host": "evil.example"}).status_code == 400
        r = tenant.call("POST", "/api/runs", headers={**SUBMIT, "Origin": "http://evil.example"},
                        json={"config_yaml": _config(tenant)})
        assert r.status_code == 403, r.text
        r = tenant.call("POST", "/api/runs", headers={"Cookie": f"curate_token={SUBMIT_TOKEN}",
                                                      "Origin": "http://evil.example"},
                        json={"config_yaml": _config(tenant)})
        assert r.status_code == 403, r.text
        # The submit-token holder: every hostile config is refused before anything is recorded or run.
        for what, body in _submitted_attacks(tenant):
            r = tenant.call("POST", "/api/runs", headers=SUBMIT, json=body)
            assert r.status_code == 422, (what, r.status_code, r.text[:500])
        assert tenant.call("GET", "/api/jobs", headers=READ).json() == {"jobs": []}
        # A config that passes every check reaches the (absent) cluster: the checks are not refusing everything.
        r = tenant.call("POST", "/api/runs", headers=SUBMIT, json={"config_yaml": _config(tenant), "run_id": "ok"})
        assert r.status_code == 503 and "Ray cluster" in r.text, r.text
        # The read-token holder.
        for what, method, path, body, refused in _read_attacks():
            r = tenant.call(method, path, headers=READ, json=body)
            assert r.status_code in refused, (what, r.status_code, r.text[:500])
        for run in ("evil", "live", "fifo", "symlink"):
            tenant.call("GET", f"/api/runs/{run}", headers=READ)
            tenant.call("GET", f"/api/runs/{run}/progress", headers=READ)
        # A query that would run for a minute ends at its limit; one whose answer would be 100 MB is refused.
        r = tenant.call("POST", "/api/runs/tiny/query", headers=READ, bound_s=10,
                        json={"sql": "SELECT levenshtein(repeat('a', 200000), repeat('b', 200000))"})
        assert r.status_code == 400 and "time limit" in r.text.lower(), r.text
        r = tenant.call("POST", "/api/runs/tiny/query", headers=READ,
                        json={"sql": "SELECT repeat('x', 1000000) || range AS t FROM range(100)"})
        assert r.status_code == 400 and "the answer passed 4 MB" in r.text, r.text
        r = tenant.call("POST", "/api/runs/tiny/query", headers=READ, json={"sql": "SELECT id FROM docs ORDER BY id"})
        assert r.status_code == 200 and len(r.json()["rows"]) > 0, r.text
        r = tenant.call("POST", "/api/runs/tiny/query", headers=READ,
                        json={"sql": "SELECT '=HYPERLINK(\"http://evil.example\")' AS x", "format": "csv"})
        assert r.status_code == 200 and r.text.splitlines()[1].startswith('"\'=HYPERLINK'), r.text
        # The pages, logged in with the read token, in Chromium: the hostile runs plant nothing.
        _pages_in_chromium(tenant, browser)
    finally:
        prober.halt.set()
        prober.join(timeout=15)
    leaks = [(what, needle) for what, _, text in tenant.answers for needle in NEVER if needle in text]
    assert not leaks, leaks
    assert tenant.proc is not None and tenant.proc.poll() is None, tenant.server_log()
    assert not prober.failures, prober.failures[:5]
    assert len(prober.times) >= 20 and prober.p95() < 1.0, (len(prober.times), prober.p95())
    assert tenant.call("GET", "/api/runs/tiny", headers=READ).status_code == 200


def _pages_in_chromium(tenant: Tenant, browser) -> None:  # noqa: ANN001
    ctx = browser.new_context(viewport={"width": 1200, "height": 900})
    pg = ctx.new_page()
    events: list[str] = []
    pg.on("dialog", lambda d: (events.append(f"dialog: {d.message}"), d.dismiss()))
    pg.on("pageerror", lambda exc: events.append(f"pageerror: {exc}"))
    pg.on("framenavigated", lambda f: events.append(f"navigated: {f.url}")
          if f == pg.main_frame and not f.url.startswith(tenant.base) else None)
    pg.route(re.compile(r"^https://evil\.example/.*"), lambda route: (events.append("evil request"), route.abort()))
    pg.goto(tenant.base + "/")
    pg.fill("input[name=token]", READ_TOKEN)
    pg.click("#login-form button[type=submit], #login-form input[type=submit]")
    pg.wait_for_load_state("load")
    assert pg.locator("table.runs").count() == 1, pg.content()[:2000]
    doc = quote(f"{HOSTILE}0", safe="")
    for url in ("/", "/runs/evil", "/runs/live", "/runs/evil/drops", f"/runs/evil/docs/{doc}",
                "/compare?a=evil&b=evil2", "/runs/fifo", "/runs/symlink"):
        t0 = time.time()
        pg.goto(tenant.base + url)
        pg.wait_for_load_state("load")
        assert time.time() - t0 < 10, url
        time.sleep(0.5)
        html = pg.content()
        tenant.answers.append((f"page {url}", 200, html))
        assert not any(raw in html for raw in RAW), url
        assert pg.evaluate("() => window.__pwned === undefined"), url
        assert pg.locator("#evil-button").count() == 0, url
    ctx.close()
    assert not events, events
