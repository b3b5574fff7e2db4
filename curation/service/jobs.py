"""The service's job table and its bridge to the Ray Jobs API.

One row per submission in ``STATE_DIR/jobs.sqlite`` (WAL mode, so the read API and the poller read
while a submission writes). A row moves along

    validated -> submitting -> submitted -> running -> finished | failed | cancelled

and only by compare-and-set (``UPDATE ... WHERE state IN (...)`` inside a transaction), so two
threads or two service processes that race on a row cannot both move it. A row is written (and
committed) before Ray hears of the job, and the Ray submission id is derived from the row's job id
(``curate-JOBID``): a service killed between the two finds, on restart, the row and asks Ray for
that submission id (``recover``): known -> adopted, unknown -> submitted now. Nothing is lost and
nothing runs twice. At most one job per run id is active at a time (a partial unique index says so
to every writer); a finished run re-submitted with the same config is a no-op, a failed or cancelled
one resumes in the same run directory (the executors' markers redo only the unfinished tasks).

Run as ``python -m curation.service.jobs`` this module is the job's driver on the cluster: it writes
the validated pipeline (passed in ``$CURATE_JOB_PIPELINE_YAML``) to a file and runs ``curate run`` on it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from curation.errors import ConfigError, CurationError

log = logging.getLogger(__name__)

STATES = ("validated", "submitting", "submitted", "running", "finished", "failed", "cancelled")
ACTIVE = ("validated", "submitting", "submitted", "running")
TERMINAL = ("finished", "failed", "cancelled")
#: Ray's job status -> ours.
RAY_STATES = {"PENDING": "submitted", "RUNNING": "running", "SUCCEEDED": "finished", "FAILED": "failed",
              "STOPPED": "cancelled"}
PIPELINE_ENV = "CURATE_JOB_PIPELINE_YAML"
RUN_ID_ENV = "CURATE_JOB_RUN_ID"
#: JSON of variables the driver exports before `curate run` (object-store settings, test faults). Not
#: runtime_env env_vars of their own: the Ray executor's ray.init sets some of the same keys, and Ray
#: refuses a driver whose runtime_env repeats a key of its job's.
DRIVER_ENV = "CURATE_JOB_DRIVER_ENV"
#: JSON list of the input roots (``curation.io.input_roots``) the job's inputs must stay under.
INPUT_ROOTS_ENV = "CURATE_JOB_INPUT_ROOTS"
#: Test-only: "before_ray:SECONDS" or "after_ray:SECONDS" sleeps in a submission at that point, so a
#: test can SIGKILL the service there. Inert unless CURATION_ENABLE_FAULT_INJECTION=1 too.
SERVICE_FAULT_ENV = "CURATION_SERVICE_FAULT"
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
LOG_TAIL_CHARS = 8000

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


class JobError(CurationError):
    """A submission or cancellation refused; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str, loc: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.loc = loc


# -- the table -------------------------------------------------------------------------------------


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


# -- validation (exactly what `curate run` does) ---------------------------------------------------


@dataclass
class Validated:
    pipeline_yaml: str  # the effective pipeline (overrides applied, output.dir forced), what the job runs
    fingerprint: str
    name: str
    warnings: list[str]
    config: Any = None  # the PipelineConfig


def validate(config_yaml: str, overrides: list[str], run_dir: str) -> Validated:
    """Parse, apply overrides and validate as ``curate run`` does (ConfigError with the dotted path),
    with ``output.dir`` forced to ``run_dir``."""
    from curation.config import apply_overrides, fingerprint, parse_mapping
    from curation.pipeline import PipelineConfig

    where = "config_yaml"
    data = apply_overrides(parse_mapping(config_yaml, where), overrides)
    warnings = []
    output = data.get("output")
    if isinstance(output, dict):
        given = output.get("dir")
        if given is not None and str(given) != run_dir:
            warnings.append(f"output.dir {given!r} was replaced by {run_dir!r}: the service writes every run "
                            "under its runs root, one directory per run id")
        output["dir"] = run_dir
    cfg = PipelineConfig.from_mapping(data, where=where)
    return Validated(yaml.safe_dump(data, sort_keys=False), fingerprint(cfg.fingerprint_data()), cfg.name, warnings,
                     cfg)


#: Keys of a stage config naming a folder the job writes into.
WRITE_PATH_KEYS = ("cache_dir",)


def to_plain(obj: Any) -> Any:
    """A stage config (dataclasses, lists, dicts) as plain data, defaults included."""
    from curation.config import to_dict

    return to_dict(obj)


def _mappings(obj: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every mapping inside ``obj`` with its dotted path."""
    if isinstance(obj, dict):
        yield where, obj
        for k, v in obj.items():
            yield from _mappings(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _mappings(v, f"{where}[{i}]")


def backend_host(url: str) -> tuple[str, int] | None:
    """(host, port) of a plain ``http(s)://HOST[:PORT]/...`` URL; None for anything else (another scheme, user
    info, backslashes or spaces that parsers read differently)."""
    from urllib.parse import urlsplit

    if any(ch in url for ch in "@\\ \t\r\n") or not url.isprintable():
        return None
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError:
        return None
    if u.scheme not in ("http", "https") or not u.hostname:
        return None
    return u.hostname.lower(), port or (443 if u.scheme == "https" else 80)


def join_run_dir(runs_root: str, run_id: str) -> str:
    if "://" in runs_root:
        return runs_root.rstrip("/") + "/" + run_id
    return str(Path(runs_root).expanduser().resolve() / run_id)


def manifest_exists(run_dir: str) -> bool:
    from curation.io.manifest import has_manifest

    try:
        return has_manifest(run_dir)
    except Exception:  # noqa: BLE001 - an unreachable bucket says nothing about the run
        return False


# -- secrets in logs -------------------------------------------------------------------------------

_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_KEY|ACCESS_KEY", re.I)


def redact(text: str, extra: tuple[str, ...] = ()) -> str:
    """Blank every token-looking value of this process's environment, the given secrets, and any
    ``Bearer X`` / ``token=X`` in a job's log before it leaves the service."""
    values = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 8}
    for v in values | {s for s in extra if s and len(s) >= 8}:
        text = text.replace(v, "[redacted]")
    text = re.sub(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}", r"\1[redacted]", text)
    return re.sub(r"(?i)((?:auth_)?token[\"']?\s*[=:]\s*[\"']?)[A-Za-z0-9._~+/=-]{16,}", r"\1[redacted]", text)


# -- a local Ray head for `ray_address=None` --------------------------------------------------------

#: Variables that would point a Ray client at another cluster or another token.
RAY_CLIENT_VARS = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_API_SERVER_ADDRESS")


#: What a job may see of the service's environment (``job_env``): the system's basics, Python and model-cache
#: settings, object-store settings and credentials (the jobs write the runs root), test switches.
JOB_ENV_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP", "PYTHONPATH",
    "PYTHONHASHSEED", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_DATASETS_CACHE", "TRANSFORMERS_OFFLINE",
    "TRANSFORMERS_CACHE", "XDG_CACHE_HOME", "TORCH_HOME", "TIKTOKEN_CACHE_DIR", "NLTK_DATA",
    "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TOKENIZERS_PARALLELISM",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
    "GOOGLE_APPLICATION_CREDENTIALS", "RAY_USAGE_STATS_ENABLED", "CURATION_ENABLE_FAULT_INJECTION",
})
JOB_ENV_PREFIXES = ("LC_",)


def job_env(environ: Any, secret_env: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment of the Ray head the service starts, which its jobs inherit: an allowlist of the service's
    own (``JOB_ENV_NAMES``, ``LC_*``) plus the secret variables the operator allowed (``--allow-secret-env``),
    never the service's tokens (``CURATE_SERVE_*``), a Ray client's address or token, or test faults."""
    keep = JOB_ENV_NAMES | set(secret_env)
    return {k: v for k, v in environ.items()
            if (k in keep or k.startswith(JOB_ENV_PREFIXES)) and not k.startswith("CURATE_SERVE_")
            and k not in RAY_CLIENT_VARS}


def state_excludes(code_root: Path, state_dir: Path) -> list[str]:
    """The upload excludes (gitignore syntax, anchored at ``code_root``) that keep the service's state dir (Ray
    token, job table, logs) out of every job's working_dir upload when it lies inside the code folder (the default
    ``.curate-serve`` does when the service runs from the checkout); [] when it lies elsewhere."""
    root, state = os.path.realpath(code_root), os.path.realpath(state_dir)
    if state == root:
        raise CurationError(f"the state dir {state} is the service's code folder, which every job uploads: "
                            "choose another --state-dir")
    if not state.startswith(root.rstrip(os.sep) + os.sep):
        return []
    rel = os.path.relpath(state, root).replace(os.sep, "/")
    escaped = re.sub(r"([\\*?\[\]!#])", r"\\\1", rel)  # glob and comment characters are literal
    return [f"/{escaped}/", f"/{escaped}"]


_handed_out: set[int] = set()  # ports this process already chose: not chosen again


def free_ports(n: int) -> list[int]:
    """n loopback ports that were free a moment ago and that no earlier call in this process returned.

    The sockets are closed before the caller binds, so without the memory two calls (e.g. a head's
    own ports, then its agents') could be given the same port by the kernel, and ``ray start`` refuses
    a port named twice.
    """
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)  # held open until all are chosen: the kernel cannot hand it out twice
            port = s.getsockname()[1]
            if port not in _handed_out:
                ports.append(port)
            if len(socks) > n + 1000:
                raise CurationError("no free loopback ports left")
    finally:
        for s in socks:
            s.close()
    _handed_out.update(ports)
    return ports


# What `ray start` prints when a port it was given is taken (by itself or by another program).
_PORT_CONFLICT = ("is trying to use a port number", "Address already in use", "address already in use",
                  "Failed to bind")


@dataclass
class LocalRay:
    """A Ray head the service starts: loopback only, token auth, its own temp dir and process group.

    Its address and token live in ``STATE_DIR/ray/`` (token file 0600), so a service that was killed
    finds and reuses its head on restart (the jobs kept running); ``stop`` ends it.
    """

    home: Path
    extra_args: list[str] = field(default_factory=list)
    timeout_s: float = 120
    secret_env: tuple[str, ...] = ()  # operator-allowed secret variables the jobs may read (job_env)
    dashboard_url: str = ""
    token: str = ""

    @property
    def info_file(self) -> Path:
        return self.home / "head.json"

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if self.info_file.exists():
            info = json.loads(self.info_file.read_text())
            self.dashboard_url, self.token = info["dashboard_url"], (self.home / "token").read_text().strip()
            if self._alive():
                log.info("reusing the local Ray head at %s", self.dashboard_url)
                return
            self.stop()
        self.token = secrets.token_hex(32)
        tok = self.home / "token"
        tok.touch(mode=0o600)
        tok.write_text(self.token)
        env = job_env(os.environ, self.secret_env)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, RAY_USAGE_STATS_ENABLED="0",
                   # Ray's single-machine mode (its default on macOS and Windows): "127.0.0.1" stays loopback
                   # instead of being replaced by the routable address, so the GCS, raylet, agent, metrics and
                   # client servers listen on loopback only, like the dashboard.
                   RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
        # The job driver runs `python -m ...`: this interpreter first on PATH.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        # The ports are free when chosen, but another program may bind one before Ray does: a head
        # that exits on a port conflict is started again on new ports.
        for attempt in range(3):
            error = self._start_once(env)
            if error is None:
                return
            if not any(m in error for m in _PORT_CONFLICT) or attempt == 2:
                raise CurationError(error)
            log.warning("the local Ray head hit a port conflict; starting it again on other ports")

    def _start_once(self, env: dict[str, str]) -> str | None:
        """Start ``ray start --head``; None once it answers, else why it did not."""
        # Short path: Ray's unix sockets live under it (108-byte limit).
        temp_dir = Path(tempfile.mkdtemp(prefix="curate-ray-", dir="/tmp"))
        gcs, dash, client, *p = free_ports(9)
        args = [str(Path(sys.executable).with_name("ray")), "start", "--block", "--head", f"--port={gcs}",
                "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                f"--ray-client-server-port={client}", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                f"--temp-dir={temp_dir}", f"--node-manager-port={p[0]}", f"--object-manager-port={p[1]}",
                f"--dashboard-agent-listen-port={p[2]}", f"--dashboard-agent-grpc-port={p[3]}",
                f"--metrics-export-port={p[4]}", f"--runtime-env-agent-port={p[5]}", "--min-worker-port=0",
                "--max-worker-port=0", *self.extra_args]
        logf = self.home / "head.log"
        with open(logf, "wb") as fh:
            proc = subprocess.Popen(args, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                    cwd=self.home)
        self.dashboard_url = f"http://127.0.0.1:{dash}"
        self.info_file.write_text(json.dumps({"dashboard_url": self.dashboard_url, "pgid": proc.pid,
                                              "temp_dir": str(temp_dir)}))
        deadline = time.time() + self.timeout_s
        while not self._alive():
            rc = proc.poll()
            if rc is not None or time.time() > deadline:
                tail = logf.read_text(errors="replace")[-3000:]
                self.stop()
                if rc is None:  # still up but not answering: stop() ended its group
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        pass
                return f"the local Ray head did not start (see {logf}):\n{tail}"
            time.sleep(0.5)
        return None

    def _alive(self) -> bool:
        import urllib.request

        req = urllib.request.Request(self.dashboard_url + "/api/jobs/", headers=self.headers())
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def stop(self) -> None:
        """End the head's process group (every process of this node, nothing else) and its files."""
        if not self.info_file.exists():
            return
        info = json.loads(self.info_file.read_text())
        signals = ((signal.SIGTERM, 3.0), (signal.SIGKILL, 0.0)) if _is_ray_start(info["pgid"]) else ()
        for sig, wait in signals:
            try:
                os.killpg(info["pgid"], sig)
            except (ProcessLookupError, PermissionError):
                break
            t0 = time.time()
            while time.time() - t0 < wait:
                try:
                    os.killpg(info["pgid"], 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
        import shutil

        shutil.rmtree(info.get("temp_dir", "/nonexistent"), ignore_errors=True)
        self.info_file.unlink(missing_ok=True)


def _is_ray_start(pid: int) -> bool:
    """Whether ``pid`` is still the ``ray start`` this file recorded (after a reboot the id may be another
    program's, whose group must not be signalled)."""
    try:
        return b"ray" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return not Path("/proc/self").exists()  # no procfs: trust the recorded id


# -- the manager -----------------------------------------------------------------------------------


def public(row: dict[str, Any], *, detail: bool = False) -> dict[str, Any]:
    """A row as the API shows it (the effective pipeline and request hash stay inside)."""
    out = {k: row[k] for k in ("job_id", "run_id", "run_dir", "state", "submitted_at", "updated_at", "error",
                               "fingerprint", "ray_job_id", "submitter_role")}
    out["overrides"] = json.loads(row["overrides_json"])
    out["warnings"] = json.loads(row["warnings_json"])
    if detail:
        out["config_yaml"] = row["config_yaml"]
    return out


def _service_fault(point: str) -> None:
    from curation.executors.shard import FAULT_ENABLE_ENV

    spec = os.environ.get(SERVICE_FAULT_ENV, "")
    if os.environ.get(FAULT_ENABLE_ENV) == "1" and spec.startswith(point + ":"):
        time.sleep(float(spec.split(":", 1)[1]))


def _not_found(exc: Exception) -> bool:
    return "status code 404" in str(exc) or "does not exist" in str(exc)


class JobManager:
    """Submits, tracks, cancels and recovers the service's Ray jobs.

    ``start()`` returns at once: a background thread brings up Ray (the local head, or a client of
    ``settings.ray_address``), reconciles the table with it (``recover``) and then polls active jobs.
    Calls that need Ray wait for that (``ready_timeout_s``) and then raise JobError(503).
    """

    def __init__(self, settings: Any, *, ray_args: list[str] | None = None, poll_s: float = 1.0,
                 ready_timeout_s: float = 180.0) -> None:
        self.settings = settings
        self.store = JobStore(Path(settings.state_dir) / "jobs.sqlite")
        self.poll_s = poll_s
        self.ready_timeout_s = ready_timeout_s
        # The operator's allowed secret variables reach the local head's jobs; nothing else of theirs (job_env).
        secret_env = tuple(getattr(settings, "allow_secret_env", ()))
        self.local = None if settings.ray_address else LocalRay(Path(settings.state_dir) / "ray", list(ray_args or []),
                                                                secret_env=secret_env)
        self.client: Any = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._start_error: str | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="curate-jobs", daemon=True)
            self._thread.start()

    def _main(self) -> None:
        try:
            self.client = self._connect()
            self.recover()
        except Exception as exc:  # noqa: BLE001 - said by every call that needs Ray
            self._start_error = redact(f"{type(exc).__name__}: {exc}", self._secrets())
            log.error("job manager could not start: %s", self._start_error)
            return
        finally:
            self._ready.set()
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception as exc:  # noqa: BLE001 - a hiccup of the job server: try again next tick
                log.warning("polling Ray jobs failed: %s", redact(str(exc), self._secrets()))

    def _connect(self) -> Any:
        from curation.submit import _quiet_ray_client_logs, auth_headers, check_transport, connect

        _quiet_ray_client_logs()
        if self.local is None:
            check_transport(self.settings.ray_address, bool(auth_headers()))
            return connect(self.settings.ray_address)
        from ray.job_submission import JobSubmissionClient

        self.local.start()
        return JobSubmissionClient(self.local.dashboard_url, headers=self.local.headers())

    def close(self, stop_local_ray: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.local is not None and stop_local_ray:
            self.local.stop()

    def wait_ready(self, timeout: float | None = None) -> None:
        if not self._ready.wait(self.ready_timeout_s if timeout is None else timeout):
            raise JobError(503, "the Ray cluster is still starting; retry in a moment")
        if self._start_error:
            raise JobError(503, f"the Ray cluster is unavailable: {self._start_error}")

    def _secrets(self) -> tuple[str, ...]:
        s = self.settings
        return (self.local.token if self.local else "", *s.read_tokens, *s.submit_tokens)

    # submission

    def submit(self, config_yaml: str, overrides: list[str], run_id: str | None, *, role: str,
               idempotency_key: str | None = None) -> tuple[dict[str, Any], list[str], bool]:
        """Validate and submit; returns (row, warnings, created). ``created`` is False for a retried
        idempotent request and for a finished run re-submitted with its config (nothing to do)."""
        import hashlib

        request_hash = hashlib.sha256(json.dumps([config_yaml, overrides, run_id]).encode()).hexdigest()
        if idempotency_key is not None:
            old = self._by_key(idempotency_key)
            if old is not None:
                return self._replay(old, request_hash)
        if run_id is not None and not RUN_ID_RE.fullmatch(run_id):
            raise JobError(422, f"run_id {run_id!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a "
                           "letter or digit", ("body", "run_id"))
        given_run_id = run_id
        run_id = run_id or f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        run_dir = join_run_dir(self.settings.runs_root, run_id)
        try:
            v = validate(config_yaml, overrides, run_dir)
        except ConfigError as exc:
            raise JobError(422, str(exc), ("body", "config_yaml")) from None
        self.check_allowed(v.config, run_dir)
        self.wait_ready()
        job_id = uuid.uuid4().hex[:16]
        now = time.time()
        try:
            with self.store.transaction() as db:
                if idempotency_key is not None:  # a concurrent retry may have won the race
                    old = db.execute("SELECT * FROM jobs WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
                    if old is not None:
                        return self._replay(dict(old), request_hash)
                prev = db.execute("SELECT * FROM jobs WHERE run_id = ? ORDER BY submitted_at DESC, rowid DESC",
                                  (run_id,)).fetchall()
                active = [r for r in prev if r["state"] in ACTIVE]
                if active:
                    raise JobError(409, f"run {run_id} is already {active[0]['state']} as job {active[0]['job_id']}; "
                                   f"cancel it first (POST /api/runs/{run_id}/cancel)", ("body", "run_id"))
                if prev and prev[0]["fingerprint"] != v.fingerprint:
                    raise JobError(409, f"run {run_id} was submitted with a different config (fingerprint "
                                   f"{prev[0]['fingerprint'][:12]} != {v.fingerprint[:12]}); use a new run id",
                                   ("body", "run_id"))
                if prev and prev[0]["state"] == "finished" and manifest_exists(run_dir):
                    return dict(prev[0]), [f"nothing to do: run {run_id} is complete (job {prev[0]['job_id']})"], False
                warnings = list(v.warnings)
                if prev:
                    warnings.append(f"run {run_id} resumes in {run_dir}: finished tasks are kept")
                if given_run_id is None:
                    warnings.append(f"no run_id given: this run is {run_id}")
                db.execute(
                    "INSERT INTO jobs (job_id, run_id, run_dir, submitted_at, updated_at, config_yaml, overrides_json,"
                    " pipeline_yaml, fingerprint, ray_job_id, state, submitter_role, idempotency_key, request_hash,"
                    " warnings_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'validated', ?, ?, ?, ?)",
                    (job_id, run_id, run_dir, now, now, config_yaml, json.dumps(overrides), v.pipeline_yaml,
                     v.fingerprint, f"curate-{job_id}", role, idempotency_key, request_hash, json.dumps(warnings)))
        except sqlite3.IntegrityError:  # another process inserted for this run id or key meanwhile
            if idempotency_key is not None and (old := self._by_key(idempotency_key)) is not None:
                return self._replay(old, request_hash)
            raise JobError(409, f"run {run_id} is already active; cancel it first", ("body", "run_id")) from None
        self._submit_row(job_id)
        return self.store.get(job_id), warnings, True  # type: ignore[return-value]

    def input_roots(self) -> Any:
        """The roots submitted jobs may read, with relative ones resolved against the service's code folder."""
        from curation.io.input_roots import InputRoots, code_root

        return InputRoots(roots=self.settings.job_input_roots(), base=str(code_root()))

    def check_allowed(self, cfg: Any, run_dir: str | None = None) -> None:
        """What the operator allows a submitted job (``curate run`` has none of these limits): 422 naming the
        field otherwise."""
        for i, pattern in enumerate(cfg.input.paths):
            try:
                self.input_roots().check_patterns([pattern])
            except ConfigError as exc:
                raise JobError(422, f"config_yaml.input.paths[{i}]: {exc}", ("body", "config_yaml")) from None
        for i, spec in enumerate(cfg.stages):
            where = f"config_yaml.stages[{i}] ({spec.stage})"
            try:  # models, eval sets, centroids, templates: read like inputs, so under the same roots
                spec.check_files(self.input_roots(), where)
            except ConfigError as exc:
                raise JobError(422, str(exc), ("body", "config_yaml")) from None
            for path, node in _mappings(to_plain(spec.config), where):
                self._check_backend(path, node)
                # Engine keyword arguments pass into the backend's constructor unchecked (vLLM's
                # trust_remote_code runs a hub repository's code; download_dir writes anywhere): a submitted
                # job may not set them, nor ask any loader to trust remote code.
                if "kind" in node and node.get("extra"):
                    raise JobError(422, f"{path}.extra: engine arguments are not accepted in submitted configs "
                                        "(they reach the engine unchecked); run such a pipeline with `curate run`",
                                   ("body", "config_yaml"))
                if node.get("trust_remote_code"):
                    raise JobError(422, f"{path}.trust_remote_code: not accepted in submitted configs",
                                   ("body", "config_yaml"))
                for key in WRITE_PATH_KEYS:
                    if node.get(key) is not None:
                        self._check_write_path(f"{path}.{key}", str(node[key]), run_dir)

    def _check_write_path(self, where: str, path: str, run_dir: str | None) -> None:
        """A folder the job writes into (a generation cache): under this run's directory or a ``--cache-root``,
        once ``..`` and symlinks are resolved; never a URL, a relative path or ``~``."""
        roots = list(self.settings.cache_roots)
        if run_dir is not None and "://" not in run_dir:
            roots.insert(0, os.path.realpath(run_dir))
        shown = ", ".join(roots) or "none"
        why = None
        if "\0" in path or "://" in path or not os.path.isabs(path):
            why = "is not an absolute local path"
        elif ".." in Path(path).parts:
            why = "contains '..'"
        else:
            real = os.path.realpath(path)
            if not any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
                why = f"resolves to {real}, outside the run directory and the cache roots"
        if why:
            raise JobError(422, f"{where}: {path[:200]!r} {why}; a submitted job may write only under its run "
                           f"directory or a cache root (allowed: {shown}); its operator declares cache roots with "
                           "`curate serve --cache-root PATH`", ("body", "config_yaml"))

    def _check_backend(self, where: str, node: dict[str, Any]) -> None:
        """A mapping with a ``base_url`` (a backend the job sends requests to, with the key ``api_key_env`` names):
        the host must be one the operator allowed, and so must the variable."""
        s = self.settings
        url = node.get("base_url")
        if url is None:
            return
        hint = "; its operator allows more with `curate serve --allow-backend-host HOST[:PORT]`"
        host = backend_host(str(url))
        if host is None:
            raise JobError(422, f"{where}.base_url: {str(url)[:200]!r} is not a plain http(s)://HOST[:PORT]/... URL",
                           ("body", "config_yaml"))
        name, port = host
        if not any(a in (name, f"{name}:{port}") for a in s.allow_backend_hosts):
            allowed = ", ".join(s.allow_backend_hosts) or "none"
            raise JobError(422, f"{where}.base_url: host {name}:{port} is not a backend this service lets submitted "
                           f"jobs reach (allowed: {allowed}){hint}", ("body", "config_yaml"))
        env = node.get("api_key_env")
        if env and env not in s.allow_secret_env:
            allowed = ", ".join(s.allow_secret_env) or "none"
            raise JobError(422, f"{where}.api_key_env: {str(env)[:100]!r} is not a variable this service lets "
                           f"submitted jobs send (allowed: {allowed}); its operator allows one with `curate serve "
                           "--allow-secret-env NAME`", ("body", "config_yaml"))

    def _by_key(self, key: str) -> dict[str, Any] | None:
        with self.store.connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE idempotency_key = ?", (key,)).fetchone()
        return dict(row) if row else None

    @staticmethod
    def _replay(row: dict[str, Any], request_hash: str) -> tuple[dict[str, Any], list[str], bool]:
        if row["request_hash"] != request_hash:
            raise JobError(422, "this Idempotency-Key was already used for a different request",
                           ("header", "Idempotency-Key"))
        return row, json.loads(row["warnings_json"]), False

    def _submit_row(self, job_id: str) -> None:
        """validated/submitting -> Ray -> submitted. Safe to repeat: Ray refuses a second job with the same
        submission id, and that refusal means the first one is there."""
        self.store.transition(job_id, ("validated",), "submitting")
        row = self.store.get(job_id)
        if row is None or row["state"] != "submitting":
            return
        _service_fault("before_ray")
        try:
            self.client.submit_job(entrypoint=self._entrypoint(), submission_id=row["ray_job_id"],
                                   runtime_env=self._runtime_env(row),
                                   metadata={"curation_run_id": row["run_id"], "curation_job_id": job_id})
        except Exception as exc:  # noqa: BLE001 - Ray raises RuntimeError for everything
            if "already exists" not in str(exc):
                self.store.transition(job_id, ("submitting",), "failed",
                                      error=redact(f"submitting to Ray failed: {exc}", self._secrets()))
                return
        _service_fault("after_ray")
        self.store.transition(job_id, ("submitting",), "submitted")

    @staticmethod
    def _entrypoint() -> str:
        return shlex.join(["python", "-m", "curation.service.jobs"])

    def _runtime_env(self, row: dict[str, Any]) -> dict[str, Any]:
        from curation.executors.shard import fault_injection_env
        from curation.io.storage import forward_env
        from curation.submit import DEFAULT_EXCLUDES

        # The code this service runs travels with the job (as `curate submit` uploads the repository),
        # so the cluster runs exactly the validated code; relative input paths resolve against it.
        code_root = Path(__file__).resolve().parents[2]
        env = {PIPELINE_ENV: row["pipeline_yaml"], RUN_ID_ENV: row["run_id"],
               INPUT_ROOTS_ENV: json.dumps(list(self.settings.job_input_roots())),
               DRIVER_ENV: json.dumps({**forward_env(), **fault_injection_env()})}
        return {"working_dir": str(code_root), "excludes": list(DEFAULT_EXCLUDES) + state_excludes(
            code_root, self.settings.state_dir), "env_vars": env}

    # tracking

    def _ray_info(self, row: dict[str, Any]) -> Any | None:
        try:
            return self.client.get_job_info(row["ray_job_id"])
        except RuntimeError as exc:
            if _not_found(exc):
                return None
            raise

    def sync(self, row: dict[str, Any]) -> dict[str, Any]:
        """Bring one active row up to Ray's view of its job."""
        if row["state"] not in ("submitted", "running"):
            return row
        info = self._ray_info(row)
        if info is None:
            if manifest_exists(row["run_dir"]):
                self.store.transition(row["job_id"], ("submitted", "running"), "finished")
            else:
                self.store.transition(row["job_id"], ("submitted", "running"), "failed",
                                      error=f"the Ray cluster no longer knows job {row['ray_job_id']} (restarted?); "
                                            f"submit run {row['run_id']} again to resume it")
        else:
            to = RAY_STATES.get(str(info.status), row["state"])
            if to != row["state"]:
                error = None
                if to == "failed":
                    error = redact(re.sub(r",? last available logs.*", "", (info.message or "").strip(), flags=re.S),
                                   self._secrets())[:2000]
                from_states = ("submitted",) if to == "submitted" else ("submitted", "running")
                self.store.transition(row["job_id"], from_states, to, **({"error": error} if error else {}))
        return self.store.get(row["job_id"]) or row

    def poll(self) -> None:
        for row in self.store.list(states=("submitted", "running")):
            self.sync(row)

    def recover(self) -> None:
        """Reconcile every active row with Ray after a (re)start: a row whose Ray job exists is
        adopted, one that never reached Ray is submitted now, one Ray lost is settled by its run dir."""
        for row in self.store.list(states=ACTIVE):
            if row["state"] in ("validated", "submitting"):
                info = self._ray_info(row)
                if info is None:
                    log.info("recovering job %s: submitting it (it never reached Ray)", row["job_id"])
                    self._submit_row(row["job_id"])
                else:
                    log.info("recovering job %s: Ray has it", row["job_id"])
                    self.store.transition(row["job_id"], ("validated", "submitting"), "submitted")
            row = self.store.get(row["job_id"]) or row
            self.sync(row)

    # reads and cancel

    def job(self, job_id: str, *, logs: bool = True) -> dict[str, Any]:
        row = self.store.get(job_id)
        if row is None:
            raise JobError(404, f"no job {job_id}")
        out = public(row, detail=True)
        out["log_tail"] = self.log_tail(row) if logs else ""
        return out

    def log_tail(self, row: dict[str, Any]) -> str:
        if row["state"] in ("validated", "submitting") or not self._ready.is_set() or self.client is None:
            return ""
        try:
            text = self.client.get_job_logs(row["ray_job_id"])
        except Exception as exc:  # noqa: BLE001
            return f"[logs unavailable: {redact(str(exc), self._secrets())[:300]}]"
        return redact(text[-LOG_TAIL_CHARS:], self._secrets())

    def cancel(self, run_id: str, wait_s: float = 15.0) -> dict[str, Any]:
        rows = self.store.list(run_id=run_id)
        if not rows:
            raise JobError(404, f"no run {run_id}")
        active = [r for r in rows if r["state"] in ACTIVE]
        if not active:
            raise JobError(409, f"run {run_id} is not running (its last job is {rows[0]['state']})")
        row = active[0]
        self.wait_ready()
        if row["state"] in ("validated", "submitting"):
            raise JobError(409, f"job {row['job_id']} is being submitted; cancel again in a moment")
        try:
            self.client.stop_job(row["ray_job_id"])
        except RuntimeError as exc:
            if not _not_found(exc):
                raise JobError(502, redact(f"Ray refused to stop {row['ray_job_id']}: {exc}", self._secrets())) \
                    from None
        deadline = time.time() + wait_s
        while True:  # Ray stops the driver asynchronously: report the end when it comes soon
            row = self.sync(self.store.get(row["job_id"]) or row)
            if row["state"] in TERMINAL or time.time() > deadline:
                return row
            time.sleep(0.3)


# -- the job's driver on the cluster ---------------------------------------------------------------


def job_main(argv: list[str] | None = None, run: Callable[[list[str]], Any] | None = None) -> None:
    """Write ``$CURATE_JOB_PIPELINE_YAML`` to RUN_ID.yaml and run ``curate run`` on it."""
    run_id = os.environ.get(RUN_ID_ENV, "job")
    text = os.environ.get(PIPELINE_ENV)
    if text is None:
        sys.exit(f"error: ${PIPELINE_ENV} is not set (this module is the driver of a `curate serve` job)")
    os.environ.update(json.loads(os.environ.pop(DRIVER_ENV, "{}")))
    from curation.io.input_roots import InputRoots, confine

    # The driver runs in the job's working dir (the uploaded code folder): relative roots resolve against it.
    confine(InputRoots(roots=tuple(json.loads(os.environ.get(INPUT_ROOTS_ENV, "[]"))), base=os.getcwd()))
    path = Path(tempfile.mkdtemp(prefix="curate-job-")) / f"{run_id}.yaml"
    path.write_text(text)
    args = ["run", str(path), "--ray-address", "auto", "--executor", "ray", *(argv or [])]
    try:
        if run is None:
            from curation.cli import app

            app(args, prog_name="curate")
        else:
            run(args)
    finally:
        confine(None)


if __name__ == "__main__":
    job_main(sys.argv[1:])
