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

DuckDB checks for an interrupt only between chunks of work, so one long scalar call (``levenshtein`` of two
200k-character strings, a huge ``repeat`` or regexp) runs to its end whatever the timer does: 37 s against a
2 s limit here. ``SandboxProcess`` therefore runs the ``Sandbox`` in a worker process (a fresh interpreter,
never a fork of the caller, whose threads -- uvicorn's, Ray's -- a fork would copy half-way) and talks to it
over a socket pair: the worker opens, configures and locks the connection itself, before any of the run's SQL;
the caller gets ``RemoteConnection``, the subset of the DuckDB connection API its callers use, and waits for
each answer only until the session's limit plus ``GRACE_S``. A worker still busy then is SIGKILLed and the
session fails with the same one-line time-limit error as an interrupted one.
"""

from __future__ import annotations

import multiprocessing.connection
import os
import pickle
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
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


def check_limits(limits: Limits) -> None:
    """Refuse limits DuckDB would misread (checked before any worker or connection is made)."""
    if limits.timeout_s is not None and limits.timeout_s <= 0:
        raise ConfigError(f"--timeout must be positive, got {limits.timeout_s}")
    if limits.threads is not None and limits.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {limits.threads}")


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


def _timeout_error(limits: Limits) -> ConfigError:
    return ConfigError(f"query stopped: it ran past the time limit (--timeout {limits.timeout_s:g} s)")


def _error(exc: duckdb.Error, limits: Limits, timed_out: bool) -> ConfigError:
    if timed_out and limits.timeout_s is not None:
        return _timeout_error(limits)
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

    def __init__(self, root: Path, limits: Limits, spill_dir: str | None = None) -> None:
        check_limits(limits)
        self.root, self.limits, self.broken = root, limits, False
        # A worker gets its spill directory from its parent, which removes it even when it had to kill the worker.
        self.spill_dir = spill_dir or tempfile.mkdtemp(prefix="curate-sql-")
        self.con = duckdb.connect(":memory:")
        # The timer's interrupt and the end of a session take this lock, so an interrupt that fires as a
        # session ends can never land on the next session's query.
        self._guard = threading.Lock()
        self._active = False
        self.timed_out = False  # the last session's timer fired (a worker reports it with a failed statement)
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
            self.timed_out = False
        if self.limits.timeout_s is not None:
            def stop() -> None:
                with self._guard:
                    if self._active:
                        fired.set()
                        self.timed_out = True
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


# -- a sandbox in a worker process that can be killed -------------------------------------------------

#: After a session's time limit, how long the worker's own interrupt (which works between DuckDB's chunks) gets
#: to answer before the worker is SIGKILLed: a chunked query ends by itself well within it.
GRACE_S = 1.0
#: On top of the limit, how long a worker may take to start and build its views (0.15 s measured on an idle
#: 2-core machine; the limit covers the views, this the interpreter start on a busy one).
STARTUP_S = 30.0
#: How long ``close`` waits for an idle worker to close its connection and exit before killing it.
CLOSE_WAIT_S = 2.0
#: How often a worker checks that its parent is still there.
_PARENT_POLL_S = 0.5

#: Builds what a worker's sessions read (the run's views) on its sandbox's connection, inside the worker's
#: first session: a module-level function or a ``functools.partial`` of one, so that it pickles.
Setup = Callable[[duckdb.DuckDBPyConnection], None]

_FETCHES = ("fetchone", "fetchmany", "fetchall", "fetchnumpy")

# The worker is a fresh interpreter (``subprocess``, never a fork: the caller may have threads -- uvicorn's, Ray's
# -- whose locks a fork copies in whatever state they are; and not ``multiprocessing``, which re-imports the
# caller's main module in the child, re-running any script that calls ``query`` without a ``__main__`` guard).
# It imports only the modules a sandbox needs: ``curation/__init__`` imports the whole pipeline (~0.35 s more
# than the ~0.2 s start), so the package is registered bare and its submodules load from its folder. sys.path[0] is the
# folder this package was imported from (not the working directory, which may hold anything).
_BOOT = """\
import importlib.util, sys, types
sys.path[0] = sys.argv[1]
spec = importlib.util.find_spec("curation")
pkg = types.ModuleType("curation")
pkg.__spec__, pkg.__file__, pkg.__path__ = spec, spec.origin, list(spec.submodule_search_locations)
sys.modules["curation"] = pkg
from curation.query_sandbox import _worker_entry
_worker_entry(int(sys.argv[2]))
"""


def _sendable(exc: BaseException) -> BaseException:
    """``exc`` if it crosses the pipe intact, else a ConfigError with its message (the caller prints one line)."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any exception that does not round-trip through pickle
        return ConfigError(f"{type(exc).__name__}: {exc}")


def _watch_parent(spill_dir: str) -> None:
    """End this worker when its parent dies, even in the middle of a query that nothing else would stop (DuckDB
    releases the GIL while it runs, so this thread gets its turn)."""
    ppid = os.getppid()

    def watch() -> None:
        while os.getppid() == ppid:
            time.sleep(_PARENT_POLL_S)
        shutil.rmtree(spill_dir, ignore_errors=True)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _description(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]] | None:
    """The result's description, with DuckDB's type objects (which do not pickle) as their names."""
    d = con.description
    return None if d is None else [(c[0], str(c[1]), *c[2:]) for c in d]


def _worker_entry(fd: int) -> None:
    """The worker's main (see ``_BOOT``): its end of the socket pair, then what to open, then requests."""
    # Ctrl-C reaches the whole process group: the parent decides, and kills this worker if it must.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn = multiprocessing.connection.Connection(fd)
    code = 0
    try:
        root, limits, spill_dir, setup = conn.recv()
        _watch_parent(spill_dir)
        _serve(conn, root, limits, spill_dir, setup)  # closes the sandbox (connection, spill dir) on its way out
    except (EOFError, OSError):
        pass  # the parent went away
    except BaseException:  # noqa: BLE001 - a bug here: the parent reports the exit, stderr has the traceback
        traceback.print_exc()
        code = 1
    finally:
        # No interpreter teardown: it has nothing left to flush, and DuckDB's bindings report their module-level
        # objects as "leaked" on stderr at teardown (noise on the CLI's terminal).
        os._exit(code)


def _serve(conn: multiprocessing.connection.Connection, root: Path, limits: Limits, spill_dir: str,
           setup: Setup | None) -> None:
    """Open the sandbox (configured and locked before ``setup`` runs any SQL), then answer requests until told
    to close or the parent goes away. Requests: ``begin`` / ``end`` a session, ``execute``,
    ``extract_statements``, the ``fetch*`` calls, ``close``. Answers: ``("ok", value)``, ``("duckdb", exc,
    timed_out)`` for a DuckDB error (the parent maps it as ``Sandbox.session`` would), ``("error", exc)``."""
    try:
        box = Sandbox(root, limits, spill_dir)
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent as an answer
        conn.send(("error", _sendable(exc)))
        return
    session: Any = None
    con: duckdb.DuckDBPyConnection | None = None
    try:
        if setup is not None:
            try:
                with box.session() as c:
                    setup(c)
            except BaseException as exc:  # noqa: BLE001
                conn.send(("error", _sendable(exc)))
                return
        conn.send(("ok", os.getpid()))
        while True:
            try:
                op, *args = conn.recv()
            except (EOFError, OSError):
                return
            try:
                if op == "close":
                    return
                if op == "begin":
                    session = box.session()
                    con = session.__enter__()
                    value: Any = None
                elif op == "end":
                    if session is not None:
                        session.__exit__(None, None, None)
                    session, con = None, None
                    value = box.broken
                elif con is None:
                    raise RuntimeError(f"{op} outside a session")
                elif op == "execute":
                    con.execute(*args)
                    value = _description(con)
                elif op == "extract_statements":
                    value = [st.type for st in con.extract_statements(*args)]
                elif op in _FETCHES:
                    value = getattr(con, op)(*args)
                else:
                    raise RuntimeError(f"unknown request {op!r}")
                conn.send(("ok", value))
            except duckdb.Error as exc:
                conn.send(("duckdb", _sendable(exc), box.timed_out))
            except Exception as exc:  # noqa: BLE001
                conn.send(("error", _sendable(exc)))
    finally:
        box.close()


class _Statement:
    """What ``extract_statements`` gives the SQL guard: the statement's type."""

    def __init__(self, type_: duckdb.StatementType) -> None:
        self.type = type_


class RemoteConnection:
    """The part of ``duckdb.DuckDBPyConnection`` the callers of a sandbox use, answered by its worker process.

    As on DuckDB, ``execute`` returns the connection itself and the ``fetch*`` calls read its last result (in
    the worker: rows cross the pipe only as they are fetched, so row limits hold as before). Usable only inside
    a session of its ``SandboxProcess``; outside one every call raises ``duckdb.ConnectionException``.
    """

    def __init__(self, box: SandboxProcess) -> None:
        self._box = box
        self._active = False
        self.description: list[tuple[Any, ...]] | None = None

    def _call(self, op: str, *args: Any) -> Any:
        if not self._active:
            raise duckdb.ConnectionException("Connection Error: Connection already closed!")
        return self._box._call(op, *args)

    def execute(self, query: str, parameters: Any = None) -> RemoteConnection:
        self.description = self._call("execute", query, parameters)
        return self

    def extract_statements(self, query: str) -> list[_Statement]:
        return [_Statement(t) for t in self._call("extract_statements", query)]

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._call("fetchone")

    def fetchmany(self, size: int = 1) -> list[tuple[Any, ...]]:
        return self._call("fetchmany", size)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._call("fetchall")

    def fetchnumpy(self) -> dict[str, Any]:
        return self._call("fetchnumpy")


class _Overran(Exception):
    """The worker did not answer within the session's limit plus the grace: it was killed."""


class SandboxProcess:
    """A ``Sandbox`` living in a worker process, with the same interface: ``session()``, ``broken``, ``close()``.

    The worker opens the sandbox (the private spill directory is made here and handed over, so that it is
    removed even after a kill; then limits, confinement, lock), runs ``setup`` on it (the run's views) under a
    first time budget, and serves one session at a time after. Each session waits for the worker's answers
    until ``limits.timeout_s + GRACE_S`` after it began; past that the worker is SIGKILLed (``killed`` is set)
    and the session raises the same time-limit ``ConfigError`` as an interrupted query. A worker that dies on
    its own (the kernel's OOM killer) fails the session with a one-line error too. ``startup_s``: how long the
    worker took to start and be ready; ``pid``: its process id.
    """

    def __init__(self, root: Path, limits: Limits, setup: Setup | None = None) -> None:
        import curation

        check_limits(limits)
        self.root, self.limits = root, limits
        self.broken = self.killed = self.timed_out = False
        self._closed = False
        self._in_flight = False  # a request was sent and its answer not read: the worker may be busy
        self._deadline: float | None = None
        self.spill_dir = tempfile.mkdtemp(prefix="curate-sql-")
        self.con = RemoteConnection(self)
        t0 = time.monotonic()
        ours, theirs = socket.socketpair()
        self._conn = multiprocessing.connection.Connection(ours.detach())
        try:
            pkg_parent = str(Path(curation.__path__[0]).parent)
            self._proc = subprocess.Popen([sys.executable, "-c", _BOOT, pkg_parent, str(theirs.fileno())],
                                          pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL)
        except BaseException:
            self._conn.close()
            shutil.rmtree(self.spill_dir, ignore_errors=True)
            raise
        finally:
            theirs.close()
        self.pid = self._proc.pid
        try:
            if limits.timeout_s is not None:
                self._deadline = t0 + STARTUP_S + limits.timeout_s + GRACE_S
            self._in_flight = True
            self._conn.send((root, limits, self.spill_dir, setup))
            try:
                self._wait()
            except _Overran:
                raise _timeout_error(limits) from None
        except BaseException:
            self.close()
            raise
        finally:
            self._deadline = None
        self.startup_s = time.monotonic() - t0

    def _wait(self) -> Any:
        """The worker's answer to the request in flight, by the deadline, as a value or a raised exception."""
        timeout = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
        if not self._conn.poll(timeout):
            self._kill()
            self.timed_out = True
            raise _Overran()
        try:
            kind, *rest = self._conn.recv()
        except (EOFError, OSError):
            self._in_flight = False
            self.broken = True
            try:
                code = self._proc.wait(CLOSE_WAIT_S)
            except subprocess.TimeoutExpired:
                code = None
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            raise ConfigError(f"query stopped: its worker process ended unexpectedly ({how})") from None
        self._in_flight = False
        if kind == "ok":
            return rest[0]
        if kind == "duckdb":
            self.timed_out = self.timed_out or rest[1]
        raise rest[0]

    def _call(self, op: str, *args: Any) -> Any:
        if self._closed:
            raise duckdb.ConnectionException("Connection Error: Connection already closed!")
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self._kill()  # the limit passed between two requests (in the worker the timer has fired already)
            self.timed_out = True
            raise _Overran()
        self._in_flight = True
        try:
            self._conn.send((op, *args))
        except OSError:  # the worker is gone: reading its answer says how
            pass
        return self._wait()

    @contextmanager
    def session(self) -> Iterator[RemoteConnection]:
        """The worker's connection for one caller, within ``limits.timeout_s`` (then the worker's interrupt, and
        ``GRACE_S`` later a SIGKILL); DuckDB errors become one-line ``ConfigError``s. Any exception (or a spent
        time budget) marks it broken."""
        if self.broken or self._closed:
            raise RuntimeError("this sandbox had a failed session: close it")
        self.timed_out = False
        if self.limits.timeout_s is not None:
            self._deadline = time.monotonic() + self.limits.timeout_s + GRACE_S
        try:
            self._call("begin")
            self.con._active = True
            yield self.con
            self.con._active = False
            if self._call("end"):
                self.broken = True  # the worker's timer fired as the session ended
        except _Overran:
            self.broken = True
            raise _timeout_error(self.limits) from None
        except duckdb.Error as exc:
            self.broken = True
            raise _error(exc, self.limits, self.timed_out) from exc
        except BaseException:
            self.broken = True
            raise
        finally:
            self.con._active = False
            self._deadline = None

    def alive(self) -> bool:
        """The worker is still running and not closed."""
        return not self._closed and self._proc.poll() is None

    def _kill(self) -> None:
        self.killed = self.broken = True
        self._in_flight = False
        self._proc.kill()
        self._proc.wait()  # reaped: no zombie left behind
        shutil.rmtree(self.spill_dir, ignore_errors=True)

    def close(self) -> None:
        """Stop the worker (asked to close if idle, killed if busy or slow to exit) and remove the spill dir."""
        if self._closed:
            return
        self._closed = True
        self.broken = True
        self.con._active = False
        if self._proc.poll() is None and not self._in_flight:
            try:
                self._conn.send(("close",))
                self._proc.wait(CLOSE_WAIT_S)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self._proc.poll() is None:
            self._kill()
        self._proc.wait()
        self._conn.close()
        shutil.rmtree(self.spill_dir, ignore_errors=True)
