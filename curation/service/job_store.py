"""The service's job table: one row per submission in ``STATE_DIR/jobs.sqlite``.

WAL mode, so the read API and the poller read while a submission writes. A row moves along

    validated -> submitting -> submitted -> running -> finished | failed | cancelled

and only by compare-and-set (``UPDATE ... WHERE state IN (...)`` inside a transaction), so two threads or two
service processes that race on a row cannot both move it. At most one job per run id is active at a time (a
partial unique index says so to every writer). The manager that writes rows and keeps them in step with Ray is
``curation/service/jobs.py``; the read API only reads them (``JobLookup``).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STATES = ("validated", "submitting", "submitted", "running", "finished", "failed", "cancelled")
ACTIVE = ("validated", "submitting", "submitted", "running")
TERMINAL = ("finished", "failed", "cancelled")
#: The file of the table under the service's state dir.
TABLE_FILE = "jobs.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    run_dir TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    config_yaml TEXT NOT NULL,
    overrides_json TEXT NOT NULL,
    pipeline_yaml TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    ray_job_id TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    submitter_role TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    request_hash TEXT NOT NULL,
    warnings_json TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS jobs_run ON jobs(run_id, submitted_at);
CREATE UNIQUE INDEX IF NOT EXISTS one_active_job_per_run ON jobs(run_id)
    WHERE state IN ('validated', 'submitting', 'submitted', 'running');
"""


class JobStore:
    """The job table. Every call opens its own connection: safe from any thread or process."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout=30000")
        try:
            yield db
        finally:
            db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: the write lock is taken up front, so check-then-insert is atomic."""
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self.connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return dict(row) if row else None

    def list(self, run_id: str | None = None, states: tuple[str, ...] = (), limit: int = 1000) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM jobs WHERE 1=1", []
        if run_id is not None:
            sql += " AND run_id = ?"
            args.append(run_id)
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += list(states)
        sql += " ORDER BY submitted_at DESC, rowid DESC LIMIT ?"
        with self.connect() as db:
            return [dict(r) for r in db.execute(sql, (*args, limit))]

    def transition(self, job_id: str, from_states: tuple[str, ...], to: str, **fields: Any) -> bool:
        """Compare-and-set: move the row to ``to`` only if it is in one of ``from_states``."""
        # Column names are interpolated: only these internal ones, never anything from a request.
        assert to in STATES and all(s in STATES for s in from_states) and set(fields) <= {"error"}
        sets = ", ".join(f"{k} = ?" for k in ("state", "updated_at", *fields))
        marks = ",".join("?" * len(from_states))
        with self.transaction() as db:
            cur = db.execute(f"UPDATE jobs SET {sets} WHERE job_id = ? AND state IN ({marks})",
                             (to, time.time(), *fields.values(), job_id, *from_states))
            return cur.rowcount == 1


def public(row: dict[str, Any], *, detail: bool = False) -> dict[str, Any]:
    """A row as the API shows it (the effective pipeline and request hash stay inside)."""
    out = {k: row[k] for k in ("job_id", "run_id", "run_dir", "state", "submitted_at", "updated_at", "error",
                               "fingerprint", "ray_job_id", "submitter_role")}
    out["overrides"] = json.loads(row["overrides_json"])
    out["warnings"] = json.loads(row["warnings_json"])
    if detail:
        out["config_yaml"] = row["config_yaml"]
    return out


class JobLookup:
    """What the read API asks the job table: a run's latest job, and whether it failed (run directories do not
    record failures). The table is opened once it exists (opening runs its schema script, which would create it):
    a service that never took a job reads no table."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / TABLE_FILE
        self._store: JobStore | None = None

    def latest(self, run_id: str) -> dict[str, Any] | None:
        """The run's latest job row, or None (no table, no job)."""
        if self._store is None:
            if not self.path.exists():
                return None
            self._store = JobStore(self.path)
        rows = self._store.list(run_id=run_id, limit=1)
        return rows[0] if rows else None

    def failed(self, run_id: str) -> bool:
        """Whether the run's latest job failed."""
        row = self.latest(run_id)
        return row is not None and row["state"] == "failed"

    def has_active(self) -> bool:
        """Whether any job is active (a crash may have left some): they are recovered at startup."""
        return self.path.exists() and bool(JobStore(self.path).list(states=ACTIVE, limit=1))
