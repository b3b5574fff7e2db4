"""Open sandboxed DuckDB connections of finished runs, kept for the next request.

Opening a run's sandbox (spill directory, limits, lock, the views over its parquet files) costs about 0.2 s
on a 100k-document run, more than most queries on it. The pool keeps idle sandboxes per run identity (the
manifest's path, mtime and size, as the answer cache keys them; a re-run into the same directory is a new
key) and the limits they were locked with. A sandbox serves one request at a time: it is taken out of the
pool for the request and put back after. It is put back only when the request ended without an exception,
within its time budget, and with the catalog as it was built (the views and tables of ``curation.stats``);
otherwise it is closed. At most ``max_idle`` sandboxes wait in all and ``max_per_run`` per run, the least
recently used run's going first; evicted ones and all of them at shutdown are closed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from curation.query_sandbox import Limits
from curation.service.cache import run_key
from curation.stats import open_run_sandbox

#: What the catalog of a run's connection holds; a session that changed it is not reused.
_CATALOG_SQL = ("SELECT list(name ORDER BY name) FROM (SELECT view_name AS name FROM duckdb_views() WHERE NOT "
                "internal UNION ALL SELECT table_name FROM duckdb_tables())")


def _catalog(con: duckdb.DuckDBPyConnection) -> Any:
    return con.execute(_CATALOG_SQL).fetchone()[0]


class _Entry:
    """One open sandbox of a run, its manifest and its catalog as built."""

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
    """A thread-safe, bounded LRU of idle run sandboxes. ``opened``, ``reused`` and ``discarded`` count
    sandboxes (for tests and the benchmark)."""

    def __init__(self, max_idle: int = 8, max_per_run: int = 4) -> None:
        self.max_idle, self.max_per_run = max_idle, max_per_run
        self._idle: OrderedDict[Hashable, list[_Entry]] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False
        self.opened = self.reused = self.discarded = 0

    def idle(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._idle.values())

    @contextmanager
    def open_run(self, run: Path, limits: Limits) -> Iterator[tuple[duckdb.DuckDBPyConnection, dict[str, Any]]]:
        """Like ``curation.stats.open_run``: the run's views on a sandboxed connection and its manifest, from the
        pool when one is idle."""
        key = (run_key(run), limits)
        entry = self._take(key)
        if entry is None:
            entry = _Entry(run, limits)
            with self._lock:
                self.opened += 1
        ok = False
        try:
            with entry.box.session() as con:
                yield con, entry.manifest
            ok = True
        finally:
            self._give_back(key, entry, ok)

    def _take(self, key: Hashable) -> _Entry | None:
        with self._lock:
            entries = self._idle.get(key)
            if not entries:
                return None
            self._idle.move_to_end(key)
            entry = entries.pop()
            if not entries:
                del self._idle[key]
            self.reused += 1
            return entry

    def _give_back(self, key: Hashable, entry: _Entry, ok: bool) -> None:
        evicted: list[_Entry] = []
        if ok and entry.reusable():
            with self._lock:
                if self._closed:
                    evicted.append(entry)
                else:
                    entries = self._idle.setdefault(key, [])
                    self._idle.move_to_end(key)
                    entries.append(entry)
                    if len(entries) > self.max_per_run:
                        evicted.append(entries.pop(0))
                    while sum(len(v) for v in self._idle.values()) > self.max_idle:
                        old_key, old = next(iter(self._idle.items()))
                        evicted.append(old.pop(0))
                        if not old:
                            del self._idle[old_key]
        else:
            evicted.append(entry)
            with self._lock:
                self.discarded += 1
        for e in evicted:  # closing can take a moment: outside the lock
            e.box.close()

    def close(self) -> None:
        """Close every idle sandbox; ones in use are closed when their request ends."""
        with self._lock:
            self._closed = True
            entries = [e for v in self._idle.values() for e in v]
            self._idle.clear()
        for e in entries:
            e.box.close()

