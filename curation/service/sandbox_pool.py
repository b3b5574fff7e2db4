"""Open sandboxed DuckDB connections of finished runs, kept for the next request.

Each sandbox lives in a worker process of its own (``curation.query_sandbox.SandboxProcess``): a request that
runs past the time limit has its worker SIGKILLed (DuckDB cannot interrupt one long scalar call), which never
blocks the service's other requests, and the pool starts a replacement worker in the background. Opening a
run's sandbox (a worker, spill directory, limits, lock, the views over its parquet files) costs about 0.25 s on
a small run, more than most queries on it. The pool keeps idle sandboxes per run identity (the
manifest's path, mtime and size, as the answer cache keys them; a re-run into the same directory is a new
key) and the limits they were locked with. A sandbox serves one request at a time: it is taken out of the
pool for the request and put back after. It is put back only when the request ended without an exception,
within its time budget, and with the catalog as it was built (the views and tables of ``curation.stats``);
otherwise it is closed. At most ``max_per_run`` are open per run (a request that finds them all busy waits a
moment for one, which on two cores is quicker than opening another) and ``max_idle`` idle in all, the least
recently used run's closed first; evicted ones and all of them at shutdown are closed (their workers stop).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from curation.query_sandbox import Limits, RemoteConnection
from curation.service.cache import run_key
from curation.stats import check_run_files, open_run_sandbox

log = logging.getLogger(__name__)

#: What the catalog of a run's connection holds; a session that changed it is not reused.
_CATALOG_SQL = ("SELECT list(name ORDER BY name) FROM (SELECT view_name AS name FROM duckdb_views() WHERE NOT "
                "internal UNION ALL SELECT table_name FROM duckdb_tables())")


def _catalog(con: duckdb.DuckDBPyConnection | RemoteConnection) -> Any:
    return con.execute(_CATALOG_SQL).fetchone()[0]


class _Entry:
    """One open sandbox of a run (a worker process), its manifest and its catalog as built."""

    def __init__(self, run: Path, limits: Limits) -> None:
        self.box, self.manifest = open_run_sandbox(run, limits)
        try:
            with self.box.session() as con:
                self.catalog = _catalog(con)
        except BaseException:
            self.box.close()
            raise

    def reusable(self) -> bool:
        if self.box.broken:
            return False
        try:
            with self.box.session() as con:
                return _catalog(con) == self.catalog
        except Exception:  # noqa: BLE001 - a sandbox that cannot answer this is not reused
            return False


class SandboxPool:
    """A thread-safe, bounded pool of run sandboxes. At most ``max_per_run`` are open per run and limits (in use
    or idle): a request that finds them all busy waits up to ``wait_s`` for one to come back, then opens its own
    (closed after, not kept), so a few slow queries cannot stall the rest. ``max_idle`` bounds the idle ones in
    all, the least recently used run's closed first. A sandbox whose worker was killed at the time limit is
    replaced by one started in the background. ``opened``, ``reused``, ``discarded`` and ``replaced`` count
    sandboxes (for tests and the benchmark)."""

    def __init__(self, max_idle: int = 8, max_per_run: int = 4, wait_s: float = 1.0) -> None:
        self.max_idle, self.max_per_run, self.wait_s = max_idle, max_per_run, wait_s
        self._idle: OrderedDict[Hashable, list[_Entry]] = OrderedDict()
        self._open: dict[Hashable, int] = {}  # per key: sandboxes open, in use or idle
        self._cond = threading.Condition(threading.RLock())  # re-entrant: _forget runs under it too
        self._closed = False
        self._in_use: set[_Entry] = set()
        self.opened = self.reused = self.discarded = self.replaced = 0

    def idle(self) -> int:
        with self._cond:
            return sum(len(v) for v in self._idle.values())

    def workers(self) -> list[int]:
        """Process ids of the open sandboxes' workers, idle and in use."""
        with self._cond:
            return [e.box.pid for v in self._idle.values() for e in v] + [e.box.pid for e in self._in_use]

    @contextmanager
    def open_run(self, run: Path, limits: Limits) -> Iterator[tuple[RemoteConnection, dict[str, Any]]]:
        """Like ``curation.stats.open_run``: the run's views on a sandboxed connection and its manifest, from the
        pool when one is idle."""
        key = (run_key(run), limits)
        entry = self._take(key)
        if entry is not None:
            try:
                # A file swapped for a FIFO since the views were listed would block DuckDB's open forever.
                check_run_files(run)
            except BaseException:
                self._give_back(key, entry, False)
                raise
        if entry is None:
            try:
                entry = _Entry(run, limits)
            except BaseException:
                self._forget(key)
                raise
            with self._cond:
                self.opened += 1
        with self._cond:
            self._in_use.add(entry)
        ok = False
        try:
            with entry.box.session() as con:
                yield con, entry.manifest
            ok = True
        finally:
            with self._cond:
                self._in_use.discard(entry)
            self._give_back(key, entry, ok)
            if entry.box.killed:
                self._replace(key, run, limits)

    def _take(self, key: Hashable) -> _Entry | None:
        """An idle sandbox of ``key``, or None after counting one the caller opens now."""
        deadline = time.monotonic() + self.wait_s
        with self._cond:
            while True:
                entries = self._idle.get(key)
                if entries:
                    self._idle.move_to_end(key)
                    entry = entries.pop()
                    if not entries:
                        del self._idle[key]
                    if not entry.box.alive():  # its worker died while idle (the kernel's OOM killer, say)
                        self.discarded += 1
                        self._forget(key)
                        entry.box.close()  # only reaps the process and removes the spill dir: no wait
                        continue
                    self.reused += 1
                    return entry
                left = deadline - time.monotonic()
                if self._open.get(key, 0) < self.max_per_run or left <= 0:
                    self._open[key] = self._open.get(key, 0) + 1
                    return None
                self._cond.wait(left)

    def _forget(self, key: Hashable, n: int = 1) -> None:
        """``n`` sandboxes of ``key`` closed (the caller holds the lock or takes it here)."""
        with self._cond:
            self._open[key] -= n
            if self._open[key] <= 0:
                del self._open[key]
            self._cond.notify_all()

    def _give_back(self, key: Hashable, entry: _Entry, ok: bool) -> None:
        evicted: list[tuple[Hashable, _Entry]] = []
        keep = ok and entry.reusable()
        with self._cond:
            if not keep:
                self.discarded += 1
            if not keep or self._closed or self._open.get(key, 0) > self.max_per_run:
                evicted.append((key, entry))  # failed, shutting down, or opened over the cap after a wait
            else:
                self._idle.setdefault(key, []).append(entry)
                self._idle.move_to_end(key)
                while sum(len(v) for v in self._idle.values()) > self.max_idle:
                    old_key, old = next(iter(self._idle.items()))
                    evicted.append((old_key, old.pop(0)))
                    if not old:
                        del self._idle[old_key]
            for k, _ in evicted:
                self._forget(k)
            self._cond.notify_all()
        for _, e in evicted:  # closing can take a moment: outside the lock
            e.box.close()

    def _replace(self, key: Hashable, run: Path, limits: Limits) -> None:
        """Start a sandbox for ``key`` in the background, in place of one whose worker was killed, so that the next
        request on the run does not wait for a worker to start."""
        with self._cond:
            if self._closed or self._open.get(key, 0) >= self.max_per_run:
                return
            self._open[key] = self._open.get(key, 0) + 1

        def start() -> None:
            try:
                if run_key(run) != key[0]:  # [0]: the run's identity; a re-run since: the next request opens its own
                    raise FileNotFoundError(f"{run} changed")
                entry = _Entry(run, limits)
            except Exception as exc:  # noqa: BLE001 - a replacement is an optimisation: log, count it closed
                log.warning("no replacement sandbox for %s: %s", run, exc)
                self._forget(key)
                return
            with self._cond:
                self.opened += 1
                self.replaced += 1
            self._give_back(key, entry, True)

        threading.Thread(target=start, name="sandbox-replace", daemon=True).start()

    def close(self) -> None:
        """Close every idle sandbox; ones in use are closed when their request ends."""
        with self._cond:
            self._closed = True
            entries = [(k, e) for k, v in self._idle.items() for e in v]
            self._idle.clear()
            for k, _ in entries:
                self._forget(k)
        for _, e in entries:
            e.box.close()
