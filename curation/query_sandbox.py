"""A DuckDB connection that can read one run directory and nothing else, within time, memory and disk limits.

``open_sandbox`` configures everything *before* any SQL derived from the run's files runs:

- a private spill directory made with ``tempfile.mkdtemp`` (DuckDB's default, ``.tmp`` in the caller's
  working directory, is shared and readable through the sandbox), removed on close;
- ``memory_limit``, ``threads`` and a spill cap (``max_temp_directory_size``);
- no extension auto-install/auto-load;
- ``allowed_directories`` = the run directory, then ``enable_external_access = false`` and
  ``lock_configuration = true`` so no later statement can widen any of it.

A timer thread interrupts the connection when the time budget is spent. Every DuckDB error raised
inside the ``with`` block becomes a one-line ``ConfigError`` (the CLI prints it and exits 2).
``Sandbox`` is the same connection kept open for many sessions in a row (the service pools them): each
session gets its own time budget, and one that failed or ran out of time marks it for closing.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from curation.errors import ConfigError
from curation.io.storage import is_remote


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed session; ``None`` leaves DuckDB's default (no timeout)."""

    timeout_s: float | None = 60.0
    memory_limit: str | None = "2GB"
    threads: int | None = min(4, os.cpu_count() or 1)
    spill_limit: str | None = "10GB"


def one_line(exc: BaseException) -> str:
    """DuckDB's message on one line: without the ``LINE 1: ...`` / caret excerpt and the SET advice."""
    keep = []
    for line in str(exc).splitlines():
        s = line.strip()
        if not s or s.startswith("LINE ") or set(s) <= {"^"}:
            continue
        if s.startswith("Possible solutions") or s.startswith("* ") or s.startswith("See also"):
            continue  # advice to SET options, which the locked connection refuses anyway
        keep.append(s)
    return " ".join(keep) or type(exc).__name__


OUTSIDE = "outside the run directory"


def _error(exc: duckdb.Error, limits: Limits, timed_out: bool) -> ConfigError:
    if timed_out and limits.timeout_s is not None:
        return ConfigError(f"query stopped: it ran past the time limit (--timeout {limits.timeout_s:g} s)")
    if isinstance(exc, duckdb.InterruptException):
        return ConfigError("query interrupted")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return ConfigError(f"query stopped: over the memory limit (--memory-limit {limits.memory_limit}) or the "
                           f"spill limit (--spill-limit {limits.spill_limit}): {one_line(exc)}")
    if OUTSIDE in str(exc):  # our filesystem's PermissionError, wrapped by DuckDB with its Python traceback
        line = next(s for s in str(exc).splitlines() if OUTSIDE in s)
        return ConfigError(f"refused: Permission Error: {line.split('PermissionError:')[-1].strip()}")
    if isinstance(exc, duckdb.PermissionException):
        return ConfigError(f"refused: {one_line(exc)}")
    return ConfigError(one_line(exc))


def confined_filesystem(root: Path) -> Any:
    """The run's fsspec filesystem, refusing every path that is not ``root`` or under it.

    DuckDB's ``allowed_directories`` compares URL strings: ``s3://bucket/run/../other/x`` passes its
    prefix check, and whether a store or proxy folds the ``..`` is not ours to bet on. Every fsspec
    call (open, info, ls, glob, find) strips the protocol through ``_strip_protocol``, so checking there
    confines them all; a path with a ``..`` segment is refused outright.
    """
    fs = root.fs  # type: ignore[attr-defined]
    base = fs._strip_protocol(str(root)).rstrip("/")
    parent = type(fs)

    class Confined(parent):  # type: ignore[misc, valid-type]
        cachable = False  # never hand this instance to other users of the same storage options

        @classmethod
        def _strip_protocol(cls, path: Any) -> Any:
            if isinstance(path, list):
                return [cls._strip_protocol(p) for p in path]
            stripped = super()._strip_protocol(path)
            if ".." in stripped.split("/") or not (stripped == base or stripped.startswith(base + "/")):
                raise PermissionError(f"{path} is {OUTSIDE} {root}")
            return stripped

    Confined.__name__ = f"Confined{parent.__name__}"
    return Confined(**fs.storage_options)


def _configure(con: duckdb.DuckDBPyConnection, root: Path, spill_dir: str, limits: Limits) -> None:
    """Limits, then confinement, then the lock; values travel as parameters, never as SQL text."""
    settings: list[tuple[str, object, str]] = [("temp_directory", spill_dir, "")]
    # max_temp_directory_size must come after temp_directory (setting the directory resets the cap).
    if limits.spill_limit is not None:
        settings.append(("max_temp_directory_size", limits.spill_limit, "--spill-limit"))
    if limits.memory_limit is not None:
        settings.append(("memory_limit", limits.memory_limit, "--memory-limit"))
    if limits.threads is not None:
        settings.append(("threads", limits.threads, "--threads"))
    settings += [("autoinstall_known_extensions", False, ""), ("autoload_known_extensions", False, ""),
                 ("allow_community_extensions", False, ""),
                 ("allowed_directories", [str(root).rstrip("/") + "/"], "")]
    for name, value, flag in settings:
        try:
            con.execute(f"SET {name} = ?", [value])
        except duckdb.Error as exc:
            raise ConfigError(f"invalid {flag or name} {value!r}: {one_line(exc)}") from exc
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


class Sandbox:
    """An open sandboxed connection that serves one session at a time, any number of times in a row.

    Opening makes the private spill directory and configures and locks the connection (see the module
    docstring); each ``session()`` gets its own time budget and error mapping. A session that raised or
    ran out of time marks the sandbox ``broken``: whoever holds it should close it rather than reuse it.
    """

    def __init__(self, root: Path, limits: Limits) -> None:
        if limits.timeout_s is not None and limits.timeout_s <= 0:
            raise ConfigError(f"--timeout must be positive, got {limits.timeout_s}")
        if limits.threads is not None and limits.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {limits.threads}")
        self.root, self.limits, self.broken = root, limits, False
        self.spill_dir = tempfile.mkdtemp(prefix="curate-sql-")
        self.con = duckdb.connect(":memory:")
        # The timer's interrupt and the end of a session take this lock, so an interrupt that fires as a
        # session ends can never land on the next session's query.
        self._guard = threading.Lock()
        self._active = False
        try:
            if is_remote(root):  # DuckDB reads the object store through the same fsspec filesystem
                self.con.register_filesystem(confined_filesystem(root))
            _configure(self.con, root, self.spill_dir, limits)
        except BaseException:
            self.close()
            raise

    @contextmanager
    def session(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection for one caller, interrupted after ``limits.timeout_s``; DuckDB errors become
        one-line ``ConfigError``s. Any exception (or a spent time budget) marks the sandbox broken."""
        if self.broken:
            raise RuntimeError("this sandbox had a failed session: close it")
        fired = threading.Event()
        timer: threading.Timer | None = None
        with self._guard:
            self._active = True
        if self.limits.timeout_s is not None:
            def stop() -> None:
                with self._guard:
                    if self._active:
                        fired.set()
                        self.con.interrupt()

            timer = threading.Timer(self.limits.timeout_s, stop)
            timer.daemon = True
            timer.start()
        try:
            self._reset_state()
            yield self.con
        except duckdb.Error as exc:
            self.broken = True
            raise _error(exc, self.limits, fired.is_set()) from exc
        except BaseException:
            self.broken = True
            raise
        finally:
            with self._guard:
                self._active = False
            if timer is not None:
                timer.cancel()
            if fired.is_set():
                self.broken = True  # interrupted, even if the query had just finished

    def _reset_state(self) -> None:
        """Give this session the per-connection state a new connection would have.

        The random generator is the one piece of connection state a SELECT can change (``setseed``): kept, one
        request's ``setseed(0.5)`` would make the next request's ``random()``, ``ORDER BY random()`` or
        ``USING SAMPLE`` on this pooled connection a continuation of its sequence, which that request can predict
        and the first one can steer. A fresh seed from the OS per session cuts that link, as a new connection's
        random seed would. (Catalog changes are caught by the pool, which never reuses a changed catalog.)
        """
        self.con.execute("SELECT setseed(?)", [secrets.randbelow(1 << 30) / (1 << 30)]).fetchall()

    def close(self) -> None:
        self.con.close()
        shutil.rmtree(self.spill_dir, ignore_errors=True)


@contextmanager
def open_sandbox(root: Path, limits: Limits) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB that reads only under ``root`` (a local absolute path or an object-store URL),
    for one session; closed (and its spill directory removed) on exit."""
    box = Sandbox(root, limits)
    try:
        with box.session() as con:
            yield con
    finally:
        box.close()
