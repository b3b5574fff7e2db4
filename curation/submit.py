"""``curate submit``: run a pipeline on a remote Ray cluster through the Ray Jobs API.

The pipeline is validated here first (a typo fails in a second, not after an upload), then the
working directory (the repository: code, ``pipelines/``, the sample corpus) is uploaded as the
job's ``runtime_env.working_dir`` and the job runs

    python -m curation.cli run CONFIG --ray-address auto --executor ray -o KEY=VAL ...

on the head node, inside that directory. ``python -m`` rather than the ``curate`` script: it
needs only a Python on the cluster's PATH that has Ray (the cluster image), and the uploaded
``curation/`` shadows any installed copy, so the cluster runs the code you submitted. The job's
logs are streamed here until it ends.

Token authentication (Ray 2.60: ``RAY_AUTH_MODE=token`` on the cluster): every request to
the dashboard / job server must carry ``Authorization: Bearer TOKEN``. The token is read from
``$RAY_AUTH_TOKEN`` (or the variable named by ``token_env``), else from the file named by
``$RAY_AUTH_TOKEN_PATH``, and sent as that header; with neither, Ray's own client adds
``~/.ray/auth_token`` when ``RAY_AUTH_MODE=token`` is set here. The token never goes into the
job's runtime_env (the dashboard would show it): the cluster's own processes already have it.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curation.errors import CurationError

# Never uploaded: virtualenvs, git history, local run outputs, caches (gitignore syntax,
# relative to the working dir; Ray also honours the repository's .gitignore files).
DEFAULT_EXCLUDES = [".git", ".venv", "venv", "/runs/", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache",
                    ".mypy_cache", ".hypothesis", "*.egg-info", "/build/", "/dist/", ".cache"]
TOKEN_ENV = "RAY_AUTH_TOKEN"


class SubmitError(CurationError):
    """The job could not be submitted (unreachable, refused, bad config)."""


@dataclass
class SubmitResult:
    """A submitted job: its id, final status (None with ``wait=False``) and the run directory."""

    job_id: str
    status: str | None
    run_dir: str
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status in (None, "SUCCEEDED")


def auth_headers(token_env: str = TOKEN_ENV) -> dict[str, str]:
    """``{"Authorization": "Bearer TOKEN"}`` from ``$token_env`` or ``$RAY_AUTH_TOKEN_PATH``, else {}."""
    token = os.environ.get(token_env, "").strip()
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not token and path:
        try:
            token = Path(path).expanduser().read_text().strip()
        except OSError as exc:
            raise SubmitError(f"RAY_AUTH_TOKEN_PATH={path} cannot be read: {exc}") from None
    return {"Authorization": f"Bearer {token}"} if token else {}


def entrypoint(config: str, overrides: list[str], python: str = "python", overwrite: bool = False) -> str:
    """The job's shell command: ``curate run`` against the cluster the job runs in."""
    args = [python, "-m", "curation.cli", "run", config, "--ray-address", "auto", "--executor", "ray"]
    for o in overrides:
        args += ["-o", o]
    if overwrite:
        args.append("--overwrite")
    return shlex.join(args)


def prepare(config: str, overrides: list[str], working_dir: str | None = None) -> tuple[str, str, Path]:
    """Validate the pipeline; return (config path relative to the working dir, run dir, working dir)."""
    from curation.pipeline import load_pipeline

    wd = Path(working_dir or os.getcwd()).resolve()
    cfg_path = Path(config)
    cfg_abs = (cfg_path if cfg_path.is_absolute() else Path.cwd() / cfg_path).resolve()
    try:
        rel = cfg_abs.relative_to(wd)
    except ValueError:
        raise SubmitError(f"{config} is not inside the working dir {wd} that is uploaded to the cluster; "
                          "move it there or pass --working-dir") from None
    cfg = load_pipeline(cfg_abs, overrides)  # CurationError on unknown keys, stages, bad values
    return rel.as_posix(), cfg.output.dir, wd


def submit(
    address: str,
    config: str,
    overrides: list[str] | None = None,
    *,
    working_dir: str | None = None,
    excludes: list[str] | None = None,
    token_env: str = TOKEN_ENV,
    python: str = "python",
    overwrite: bool = False,
    wait: bool = True,
    echo: Callable[[str], None] | None = None,
    client: Any = None,
) -> SubmitResult:
    """Submit ``curate run CONFIG`` as a Ray job at ``address`` (http://HEAD:8265) and follow it.

    Logs stream to ``echo`` (stdout by default) until the job is terminal; the result's ``status``
    says how it ended. Raises SubmitError if the job cannot be submitted.
    """
    overrides = list(overrides or [])
    out = echo or (lambda s: (sys.stdout.write(s), sys.stdout.flush()))
    rel_config, run_dir, wd = prepare(config, overrides, working_dir)
    if client is None:
        client = connect(address, token_env)
    job_id = f"curate-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    runtime_env = {"working_dir": str(wd), "excludes": DEFAULT_EXCLUDES + list(excludes or [])}
    cmd = entrypoint(rel_config, overrides, python=python, overwrite=overwrite)
    out(f"uploading {wd} to {address} (excluding .git, .venv, runs/, caches, .gitignore'd files)\n")
    _quiet_ray_client_logs()
    try:
        client.submit_job(entrypoint=cmd, runtime_env=runtime_env, submission_id=job_id,
                          metadata={"curation_config": rel_config, "curation_run_dir": str(run_dir)})
    except Exception as exc:  # noqa: BLE001 - Ray raises RuntimeError, AuthenticationError, ConnectionError
        raise SubmitError(f"submitting to {address} failed: {_explain(exc, token_env)}") from None
    out(f"submitted job {job_id} to {address}: {cmd}\n")
    if not wait:
        return SubmitResult(job_id, None, str(run_dir))
    streamed = _stream_logs(client, job_id, out)
    info = _wait_terminal(client, job_id)
    if not streamed:  # the log stream broke: print the whole log once
        out(client.get_job_logs(job_id))
    # Ray appends the log tail to a failure message: it was streamed already, keep the first line.
    message = re.sub(r",? last available logs.*", "", (info.message or "").strip().split("\n")[0])
    return SubmitResult(job_id, str(info.status), str(run_dir), message)


def connect(address: str, token_env: str = TOKEN_ENV) -> Any:
    """A ``JobSubmissionClient`` for ``address`` carrying the auth token header, if any."""
    from ray.job_submission import JobSubmissionClient

    headers = auth_headers(token_env)
    try:
        return JobSubmissionClient(address, headers=headers or None)
    except Exception as exc:  # noqa: BLE001
        raise SubmitError(f"connecting to the Ray job server at {address} failed: "
                          f"{_explain(exc, token_env)}") from None


def _quiet_ray_client_logs() -> None:
    """Ray logs every file it leaves out of the upload and every default exclude at INFO/WARNING."""
    import logging

    for name in ("ray._private.runtime_env", "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _explain(exc: Exception, token_env: str) -> str:
    msg = f"{type(exc).__name__}: {exc}"
    if "Authentication" in msg or "401" in msg or "403" in msg:
        msg += (f"\nThe cluster uses token authentication: set ${token_env} (or RAY_AUTH_TOKEN_PATH) to its token "
                "(`ray get-auth-token` on the head node).")
    return msg


def _stream_logs(client: Any, job_id: str, out: Callable[[str], None]) -> bool:
    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out(chunk)

    try:
        asyncio.run(tail())
        return True
    except Exception as exc:  # noqa: BLE001 - a broken stream still lets us report the job's end
        out(f"[log stream interrupted: {exc}; waiting for the job to finish]\n")
        return False


def _wait_terminal(client: Any, job_id: str, poll_s: float = 1.0) -> Any:
    while True:  # the stream may close a moment before the status turns terminal
        info = client.get_job_info(job_id)
        if info.status.is_terminal():
            return info
        time.sleep(poll_s)
