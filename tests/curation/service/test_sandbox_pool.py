"""The pool of open run sandboxes: reused while the run is unchanged, bounded and closed on eviction and
shutdown, never handing on a connection a failed or timed-out request used, and as confined as a new one."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import duckdb
import httpx
import pytest

from curation.errors import ConfigError
from curation.query_sandbox import Limits
from curation.service.app import create_app
from curation.service.sandbox_pool import SandboxPool
from tests.conftest import PROSE, pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline
from tests.curation.service.conftest import make_settings, serving

SLOW_SQL = "SELECT sum(hash(i)) FROM range(100000000000) t(i)"  # minutes of work: only a timeout ends it
LIMITS = Limits(timeout_s=30.0, memory_limit="512MB")


def _make_run(out: Path, n: int) -> Path:
    docs = [{"id": f"d{i}", "domain": "web", "text": PROSE[i % 3] + f" number {i}"} for i in range(n)]
    docs.append({"id": "short", "domain": "web", "text": "too short"})
    write_jsonl(out.parent / f"{out.name}-in" / "a.jsonl", docs)
    run_pipeline(pipeline_dict([str(out.parent / f"{out.name}-in" / "*.jsonl")], out))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pool") / "runs"
    return _make_run(root / "a", 3), _make_run(root / "b", 5)


def _count(pool: SandboxPool, run: Path, limits: Limits = LIMITS) -> int:
    with pool.open_run(run, limits) as (con, _):
        return con.execute("SELECT count(*) FROM docs").fetchone()[0]


def test_a_run_sandbox_is_reused_and_one_request_at_a_time_has_it(runs: tuple[Path, Path]) -> None:
    a, _ = runs
    pool = SandboxPool(max_idle=8, max_per_run=2, wait_s=0.2)
    with pool.open_run(a, LIMITS) as (con, manifest):
        first = id(con)
        assert manifest["totals"]["docs_out"] == 3
        # A second request while the first holds its sandbox gets another one.
        with pool.open_run(a, LIMITS) as (con2, _):
            assert id(con2) != first
    assert (pool.opened, pool.reused, pool.idle()) == (2, 0, 2)
    with pool.open_run(a, LIMITS) as (con, _):
        assert id(con) in (first, id(con2))
    assert (pool.opened, pool.reused) == (2, 1)
    # Eight threads holding a sandbox at once (past the cap after waiting wait_s): eight distinct connections; at
    # most max_per_run kept after.
    barrier, seen = threading.Barrier(8), []

    def hold() -> None:
        with pool.open_run(a, LIMITS) as (c, _):
            seen.append(id(c))
            barrier.wait(20)
            assert c.execute("SELECT count(*) FROM docs").fetchone()[0] == 3

    threads = [threading.Thread(target=hold) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(set(seen)) == 8 and pool.idle() == 2 and pool.discarded == 0
    pool.close()
    assert pool.idle() == 0


def test_requests_over_the_cap_wait_for_a_sandbox_instead_of_opening_one(runs: tuple[Path, Path]) -> None:
    a, _ = runs
    pool = SandboxPool(max_per_run=2, wait_s=30)
    counts: list[int] = []

    def use() -> None:
        with pool.open_run(a, LIMITS) as (c, _):
            time.sleep(0.2)
            counts.append(c.execute("SELECT count(*) FROM docs").fetchone()[0])

    threads = [threading.Thread(target=use) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert counts == [3] * 6 and (pool.opened, pool.reused, pool.idle()) == (2, 4, 2)
    pool.close()


def _spill_dir(con: duckdb.DuckDBPyConnection) -> Path:
    return Path(con.execute("SELECT current_setting('temp_directory')").fetchone()[0])


def test_eviction_and_shutdown_close_the_connection_and_its_spill_dir(runs: tuple[Path, Path]) -> None:
    a, b = runs
    pool = SandboxPool(max_idle=1, max_per_run=1)
    with pool.open_run(a, LIMITS) as (con_a, _):
        spill_a = _spill_dir(con_a)
    with pool.open_run(b, LIMITS) as (con_b, _):
        spill_b = _spill_dir(con_b)
    # b's sandbox went back and a's, the least recently used, was evicted: closed, its spill dir removed.
    with pytest.raises(duckdb.ConnectionException):
        con_a.execute("SELECT 1")
    assert not spill_a.exists() and spill_b.is_dir() and pool.idle() == 1
    assert _count(pool, a) == 3 and pool.opened == 3
    assert not spill_b.exists()
    pool.close()
    assert pool.idle() == 0


@pytest.mark.parametrize("sql,match", [
    ("SELECT nope FROM docs", "nope"),
    ("SELECT * FROM read_csv('/etc/passwd')", "refused"),
    ("COPY docs TO 'x.csv'", "only SELECT"),
])
def test_a_failed_request_does_not_poison_the_pool(runs: tuple[Path, Path], sql: str, match: str) -> None:
    from curation.stats import execute_select

    a, _ = runs
    pool = SandboxPool()
    assert _count(pool, a) == 3
    with pytest.raises(ConfigError, match=match):
        with pool.open_run(a, LIMITS) as (con, _):
            execute_select(con, sql)
    assert (pool.discarded, pool.idle()) == (1, 0)  # the failed request's connection was closed, not kept
    assert _count(pool, a) == 3 and pool.opened == 2
    pool.close()


def test_a_timed_out_request_is_discarded_and_each_request_has_its_own_time_budget(runs: tuple[Path, Path]) -> None:
    a, _ = runs
    limits = Limits(timeout_s=1.0, memory_limit="512MB")
    pool = SandboxPool()
    assert _count(pool, a, limits) == 3
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"time limit \(--timeout 1 s\)"):
        with pool.open_run(a, limits) as (con, _):
            con.execute(SLOW_SQL)
    assert time.monotonic() - t0 < 10 and pool.discarded == 1 and pool.idle() == 0
    # A kept sandbox outlives the time budget of one request: later requests each get a full budget.
    assert _count(pool, a, limits) == 3
    time.sleep(1.3)
    with pool.open_run(a, limits) as (con, _):
        time.sleep(0.5)
        assert con.execute("SELECT count(*) FROM docs").fetchone()[0] == 3
    assert pool.reused >= 1 and pool.discarded == 1
    pool.close()


def _exited(pid: int) -> bool:
    """Our child ``pid`` has exited, all its threads too, without reaping it (the pool's ``Popen`` does that).
    Not /proc's "Z": that is the main thread's state, shown while the other threads are still being torn down."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def test_a_worker_that_died_while_idle_is_not_handed_out(runs: tuple[Path, Path]) -> None:
    a, _ = runs
    pool = SandboxPool()
    assert _count(pool, a) == 3
    (pid,) = pool.workers()
    os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer would
    deadline = time.monotonic() + 10
    while not _exited(pid):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert _count(pool, a) == 3  # on a new worker, not an error
    assert pool.discarded == 1 and pool.opened == 2 and pid not in pool.workers()
    pool.close()
    assert pool.workers() == []


def test_a_reused_connection_is_still_confined_and_locked(runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = runs
    secret = tmp_path / "secret.csv"
    secret.write_text("secret\nhunter2\n")
    pool = SandboxPool()
    for attempt in range(3):
        with pool.open_run(a, LIMITS) as (con, _):
            assert con.execute("SELECT current_setting('lock_configuration'), "
                               "current_setting('enable_external_access'), current_setting('memory_limit')"
                               ).fetchone() == (True, False, "488.2 MiB")
        with pytest.raises(ConfigError, match="refused: Permission"):
            with pool.open_run(a, LIMITS) as (con, _):
                con.execute(f"SELECT * FROM read_csv('{secret}')")
        with pytest.raises(ConfigError, match="lock"):
            with pool.open_run(a, LIMITS) as (con, _):
                con.execute("SET enable_external_access = true")
    assert pool.reused >= 3
    pool.close()


def test_a_session_that_changed_the_catalog_is_not_reused(runs: tuple[Path, Path]) -> None:
    a, _ = runs
    pool = SandboxPool()
    with pool.open_run(a, LIMITS) as (con, _):
        con.execute("CREATE OR REPLACE VIEW docs AS SELECT 42 AS x")
        con.execute("CREATE VIEW extra AS SELECT 1")
    assert (pool.discarded, pool.idle()) == (1, 0)
    assert _count(pool, a) == 3
    pool.close()


def test_a_different_limit_or_a_replaced_run_gets_its_own_sandbox(runs: tuple[Path, Path],
                                                                   tmp_path: Path) -> None:
    a, _ = runs
    pool = SandboxPool()
    assert _count(pool, a) == 3
    with pool.open_run(a, Limits(timeout_s=30.0, memory_limit="256MB")) as (con, _):
        assert con.execute("SELECT current_setting('memory_limit')").fetchone() == ("244.1 MiB",)
    assert pool.opened == 2
    run = _make_run(tmp_path / "runs" / "r", 2)
    assert _count(pool, run) == 2
    other = _make_run(tmp_path / "other" / "r", 4)
    run.rename(tmp_path / "old")
    other.rename(run)
    assert _count(pool, run) == 4 and pool.opened == 4  # a new manifest: a new key, a new sandbox
    pool.close()


def test_the_service_reuses_sandboxes_and_closes_them_at_shutdown(runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = runs
    app = create_app(make_settings(a.parent, tmp_path))
    pool: SandboxPool = app.state.pool
    with serving(app) as url:
        for i in range(4):  # distinct queries: each a cache miss, all on one pooled sandbox
            r = httpx.post(url + "/api/runs/a/query", json={"sql": f"SELECT count(*) + {i} FROM docs"}, timeout=30)
            assert r.json()["rows"] == [[3 + i]]
        bad = httpx.post(url + "/api/runs/a/query", json={"sql": "SELECT * FROM read_text('/etc/hostname')"},
                         timeout=30)
        assert bad.status_code == 400 and "refused" in bad.json()["detail"]
        r = httpx.post(url + "/api/runs/a/query", json={"sql": "SELECT count(*) FROM docs"}, timeout=30)
        assert r.json()["rows"] == [[3]]
        assert pool.opened == 2 and pool.reused == 4 and pool.discarded == 1 and pool.idle() == 1
    assert pool.idle() == 0  # closed with the app
