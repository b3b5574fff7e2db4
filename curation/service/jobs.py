"""The service's job manager: validates a submission, writes its row in the job table
(``curation/service/job_store.py``) and hands it to the Ray Jobs API, then follows, cancels and recovers it.

A row is written (and committed) before Ray hears of the job, and the Ray submission id is derived from the
row's job id (``curate-JOBID``): a service killed between the two finds, on restart, the row and asks Ray for
that submission id (``recover``): known -> adopted, unknown -> submitted now. Nothing is lost and nothing runs
twice. A finished run re-submitted with the same config is a no-op, a failed or cancelled one resumes in the same
run directory (the executors' markers redo only the unfinished tasks).

Ray is the local head the service starts (``curation/service/local_ray.py``) or the cluster at
``--ray-address``, reached as ``curate submit`` reaches it (``curation/ray_jobs.py``). On the cluster, each job
runs ``python -m curation.job_driver`` (``DRIVER_MODULE``), which reads the ``*_ENV`` variables below.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from curation.errors import ConfigError, CurationError
from curation.faults import fault_injection_env, service_point
from curation.ray_jobs import (auth_headers, check_transport, connect, job_log, not_found, quiet_client_logs,
                               runtime_env, without_log_tail)
from curation.service.job_store import ACTIVE, TABLE_FILE, TERMINAL, JobStore, public
from curation.service.local_ray import LocalRay

log = logging.getLogger(__name__)

#: Ray's job status -> ours.
RAY_STATES = {"PENDING": "submitted", "RUNNING": "running", "SUCCEEDED": "finished", "FAILED": "failed",
              "STOPPED": "cancelled"}
#: The job's driver on the cluster (``curation/job_driver.py``), run with ``python -m``; nothing imports it.
DRIVER_MODULE = "curation.job_driver"
# What the manager passes to the driver, as runtime_env variables:
PIPELINE_ENV = "CURATE_JOB_PIPELINE_YAML"
RUN_ID_ENV = "CURATE_JOB_RUN_ID"
#: JSON of variables the driver exports before `curate run` (object-store settings, test faults). Not
#: runtime_env env_vars of their own: the Ray executor's ray.init sets some of the same keys, and Ray
#: refuses a driver whose runtime_env repeats a key of its job's.
DRIVER_ENV = "CURATE_JOB_DRIVER_ENV"
#: JSON list of the input roots (``curation.io.input_roots``) the job's inputs must stay under.
INPUT_ROOTS_ENV = "CURATE_JOB_INPUT_ROOTS"
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class JobError(CurationError):
    """A submission or cancellation refused; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str, loc: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.loc = loc


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


# -- the manager -----------------------------------------------------------------------------------


class JobManager:
    """Submits, tracks, cancels and recovers the service's Ray jobs.

    ``start()`` returns at once: a background thread brings up Ray (the local head, or a client of
    ``settings.ray_address``), reconciles the table with it (``recover``) and then polls active jobs.
    Calls that need Ray wait for that (``ready_timeout_s``) and then raise JobError(503).
    """

    def __init__(self, settings: Any, *, ray_args: list[str] | None = None, poll_s: float = 1.0,
                 ready_timeout_s: float = 180.0) -> None:
        self.settings = settings
        self.store = JobStore(Path(settings.state_dir) / TABLE_FILE)
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
        quiet_client_logs()
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
        service_point("before_ray")
        try:
            self.client.submit_job(entrypoint=self._entrypoint(), submission_id=row["ray_job_id"],
                                   runtime_env=self._runtime_env(row),
                                   metadata={"curation_run_id": row["run_id"], "curation_job_id": job_id})
        except Exception as exc:  # noqa: BLE001 - Ray raises RuntimeError for everything
            if "already exists" not in str(exc):
                self.store.transition(job_id, ("submitting",), "failed",
                                      error=redact(f"submitting to Ray failed: {exc}", self._secrets()))
                return
        service_point("after_ray")
        self.store.transition(job_id, ("submitting",), "submitted")

    @staticmethod
    def _entrypoint() -> str:
        return shlex.join(["python", "-m", DRIVER_MODULE])

    def _runtime_env(self, row: dict[str, Any]) -> dict[str, Any]:
        from curation.io.storage import forward_env

        # The code this service runs travels with the job (as `curate submit` uploads the repository),
        # so the cluster runs exactly the validated code; relative input paths resolve against it.
        code_root = Path(__file__).resolve().parents[2]
        env = {PIPELINE_ENV: row["pipeline_yaml"], RUN_ID_ENV: row["run_id"],
               INPUT_ROOTS_ENV: json.dumps(list(self.settings.job_input_roots())),
               DRIVER_ENV: json.dumps({**forward_env(), **fault_injection_env()})}
        return runtime_env(code_root, state_excludes(code_root, self.settings.state_dir), env)

    # tracking

    def _ray_info(self, row: dict[str, Any]) -> Any | None:
        try:
            return self.client.get_job_info(row["ray_job_id"])
        except RuntimeError as exc:
            if not_found(exc):
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
                    error = redact(without_log_tail((info.message or "").strip()),
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
            text = job_log(self.client, row["ray_job_id"])
        except Exception as exc:  # noqa: BLE001
            return f"[logs unavailable: {redact(str(exc), self._secrets())[:300]}]"
        return redact(text, self._secrets())

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
            if not not_found(exc):
                raise JobError(502, redact(f"Ray refused to stop {row['ray_job_id']}: {exc}", self._secrets())) \
                    from None
        deadline = time.time() + wait_s
        while True:  # Ray stops the driver asynchronously: report the end when it comes soon
            row = self.sync(self.store.get(row["job_id"]) or row)
            if row["state"] in TERMINAL or time.time() > deadline:
                return row
            time.sleep(0.3)
