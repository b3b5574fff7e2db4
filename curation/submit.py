"""``curate submit``: run a pipeline on a remote Ray cluster through the Ray Jobs API.

The pipeline is validated here first (a typo fails in a second, not after an upload), then the
working directory (the repository: code, ``pipelines/``, the sample corpus) is uploaded as the
job's ``runtime_env.working_dir`` and the job runs

    python -m curation.cli run CONFIG --ray-address auto --executor ray -o KEY=VAL ...

on the head node, inside that directory. ``python -m`` rather than the ``curate`` script: it
needs only a Python on the cluster's PATH that has Ray (the cluster image), and the uploaded
``curation/`` shadows any installed copy, so the cluster runs the code you submitted. The job's
logs are streamed here until it ends.

Connecting, the token and when it may travel, and what is never uploaded (``SECRET_EXCLUDES``,
``DEFAULT_EXCLUDES``) are shared with ``curate serve``'s job manager: ``curation/ray_jobs.py``.

What is uploaded (``upload_set``): the files git tracks under the working dir (``git ls-files``), plus the
pipeline config and any ``--include`` paths, copied into a private staging folder that Ray packs; never
"everything minus a denylist", so an untracked ``.netrc``, ``.env.production``, kubeconfig, key file or the
service's state folder stays here. What git does not track is listed (a count and a few names, credential-looking
names first). Outside a git checkout nothing is uploaded unless ``--include`` names it (a clear error otherwise;
``--include .`` is the old "whole folder" behaviour, chosen explicitly). On top of that, files that commonly hold
credentials (``SECRET_EXCLUDES``) are left out even when tracked or included.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Re-exported: callers and tests of `curate submit` find its excludes, errors and transport rules here.
from curation.ray_jobs import (DEFAULT_EXCLUDES, SECRET_EXCLUDES, TOKEN_ENV, SubmitError, auth_headers,
                               check_transport, connect, explain, job_log, quiet_client_logs, runtime_env,
                               sends_token, without_log_tail)

__all__ = ["DEFAULT_EXCLUDES", "SECRET_EXCLUDES", "TOKEN_ENV", "SubmitError", "SubmitResult", "UploadSet",
           "auth_headers", "check_transport", "connect", "describe_excluded", "describe_left_out", "entrypoint",
           "excluded_paths", "prepare", "sends_token", "stage", "submit", "upload_set"]


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


def excluded_paths(wd: Path, excludes: list[str]) -> list[str]:
    """The top-most paths under ``wd`` (relative; directories end in /) that the upload leaves out.

    Walks with Ray's own traversal and matcher (excludes, .gitignore, .rayignore), so the list is what Ray
    actually skips: a path is excluded when its parent was visited and it was not.
    """
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    visited: set[Path] = set()
    include_gitignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"
    _dir_travel(wd, [_get_excludes(wd, excludes)], visited.add, include_gitignore=include_gitignore)
    out = []
    for d in sorted(p for p in visited if p.is_dir()):
        for child in sorted(d.iterdir()):
            if child not in visited:
                out.append(child.relative_to(wd).as_posix() + ("/" if child.is_dir() else ""))
    return sorted(out)


def describe_excluded(wd: Path, excluded: list[str]) -> str:
    """One line naming what is not uploaded: credential files in full, the rest by name with a count."""
    from ray._private.runtime_env.packaging import _get_excludes

    secret = _get_excludes(wd, SECRET_EXCLUDES)
    secrets = [p for p in excluded if secret(wd / p)]
    names = Counter(p.rstrip("/").rsplit("/", 1)[-1] + ("/" if p.endswith("/") else "")
                    for p in excluded if p not in secrets)
    rest = ", ".join(n if c == 1 else f"{n} x{c}" for n, c in sorted(names.items()))
    parts = ([f"credentials/keys: {', '.join(secrets)}"] if secrets else []) + ([rest] if rest else [])
    return "; ".join(parts) or "nothing"


@dataclass
class UploadSet:
    """What ``curate submit`` uploads (``files``, relative to the working dir) and what it left out."""

    files: list[str]
    left_out: list[str]  # untracked/ignored paths git reports (directories end in /), not uploaded
    source: str  # "git" or "--include"


def _git(wd: Path, *args: str) -> str | None:
    """``git -C wd ARGS`` output, or None when git is missing or ``wd`` is not inside a work tree."""
    import subprocess

    try:
        r = subprocess.run(["git", "-C", str(wd), *args], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout.decode("utf-8", "surrogateescape") if r.returncode == 0 else None


def _inside(wd: Path, path: Path) -> bool:
    try:
        path.relative_to(wd)
        return True
    except ValueError:
        return False


def upload_set(wd: Path, includes: list[str] | None = None, always: list[str] | None = None) -> UploadSet:
    """The files to upload from ``wd``: what git tracks there plus ``includes`` (files or folders) and ``always``
    (the pipeline config). Outside a git checkout only ``includes`` (and ``always``): with none, SubmitError.
    Symlinks that resolve outside ``wd`` are never followed (left out)."""
    wd = wd.resolve()
    includes = list(includes or [])
    tracked = _git(wd, "ls-files", "-z", "--cached") if _git(wd, "rev-parse", "--is-inside-work-tree") else None
    if tracked is None and not includes:
        raise SubmitError(f"{wd} is not a git checkout: curate submit uploads the files git tracks, so it does not "
                          "know what to upload here; name it with --include PATH (repeatable; --include . uploads "
                          "the whole folder minus credential files)")
    rels: set[str] = {p for p in (tracked or "").split("\0") if p}
    named: list[Path] = []
    for inc in includes + list(always or []):
        p = Path(inc) if Path(inc).is_absolute() else wd / inc
        if not _inside(wd, Path(os.path.abspath(p))):
            raise SubmitError(f"--include {inc}: not inside the working dir {wd} that is uploaded")
        if not p.exists():
            raise SubmitError(f"--include {inc}: no such file or folder")
        named.append(Path(os.path.abspath(p)))
    for p in named:
        if p.is_dir() and not p.is_symlink():
            for root, dirs, names in os.walk(p):
                dirs[:] = [d for d in dirs if d != ".git"]
                rels.update((Path(root) / n).relative_to(wd).as_posix() for n in names)
        else:
            rels.add(p.relative_to(wd).as_posix())
    files = []
    for rel in sorted(rels):
        full = wd / rel
        if full.is_symlink() and not _inside(wd, full.resolve()):
            continue  # a link out of the checkout (say, to ~/.aws/credentials) is never followed
        if full.is_file():
            files.append(rel)
    left_out: list[str] = []
    if tracked is not None:
        others = _git(wd, "ls-files", "-z", "--others", "--directory") or ""
        chosen = set(files)
        left_out = [p for p in others.split("\0") if p and p.rstrip("/") not in chosen
                    and not any(_inside(n, Path(os.path.abspath(wd / p))) for n in named)]
    return UploadSet(files, sorted(left_out), "git" if tracked is not None else "--include")


def stage(wd: Path, files: list[str], dest: Path) -> None:
    """Copy ``files`` (relative to ``wd``) into ``dest``, the folder Ray packs and uploads."""
    import shutil

    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(wd / rel, target)  # follows a link inside the checkout: the content travels, not the link


def describe_left_out(wd: Path, left_out: list[str], shown: int = 8) -> str:
    """``N paths git does not track: a, b, ... (+K more)``, credential-looking names first."""
    from ray._private.runtime_env.packaging import _get_excludes

    if not left_out:
        return "0 paths"
    secret = _get_excludes(wd, SECRET_EXCLUDES)
    order = sorted(left_out, key=lambda p: (not secret(wd / p.rstrip("/")), p))
    more = f" (+{len(order) - shown} more)" if len(order) > shown else ""
    return f"{len(order)} paths git does not track: {', '.join(order[:shown])}{more}"


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
    includes: list[str] | None = None,
    token_env: str = TOKEN_ENV,
    python: str = "python",
    overwrite: bool = False,
    wait: bool = True,
    insecure: bool = False,
    echo: Callable[[str], None] | None = None,
    client: Any = None,
) -> SubmitResult:
    """Submit ``curate run CONFIG`` as a Ray job at ``address`` (https://HEAD:8265) and follow it.

    Logs stream to ``echo`` (stdout by default) until the job is terminal; the result's ``status``
    says how it ended. Uploads what git tracks under the working dir plus ``includes`` and the config
    (``upload_set``). Raises SubmitError if the job cannot be submitted, if the working dir is not a git
    checkout and no ``includes`` are given, or if a token would go over plain http to another host and
    ``insecure`` is not set.
    """
    import tempfile

    overrides = list(overrides or [])
    out = echo or (lambda s: (sys.stdout.write(s), sys.stdout.flush()))
    rel_config, run_dir, wd = prepare(config, overrides, working_dir)
    check_transport(address, sends_token(token_env), insecure)
    chosen = upload_set(wd, includes, always=[rel_config])
    quiet_client_logs()
    job_id = f"curate-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    cmd = entrypoint(rel_config, overrides, python=python, overwrite=overwrite)
    with tempfile.TemporaryDirectory(prefix="curate-submit-") as tmp:
        staged = Path(tmp) / wd.name
        stage(wd, chosen.files, staged)
        env = runtime_env(staged, list(excludes or []))
        # Said before connecting, so that a key lying in the working dir is seen even when the cluster is not reached.
        what = "what git tracks" if chosen.source == "git" else "the --include paths"
        out(f"uploading {len(chosen.files)} files of {wd} ({what}"
            f"{' and --include paths' if chosen.source == 'git' and includes else ''}) to {address}\n")
        if chosen.source == "git":
            out(f"left out: {describe_left_out(wd, chosen.left_out)}\n")
        out(f"not uploaded: {describe_excluded(staged, excluded_paths(staged, env['excludes']))}\n")
        if client is None:
            client = connect(address, token_env)
        try:
            client.submit_job(entrypoint=cmd, runtime_env=env, submission_id=job_id,
                              metadata={"curation_config": rel_config, "curation_run_dir": str(run_dir)})
        except Exception as exc:  # noqa: BLE001 - Ray raises RuntimeError, AuthenticationError, ConnectionError
            raise SubmitError(f"submitting to {address} failed: {explain(exc, token_env)}") from None
    out(f"submitted job {job_id} to {address}: {cmd}\n")
    if not wait:
        return SubmitResult(job_id, None, str(run_dir))
    streamed = _stream_logs(client, job_id, out)
    info = _wait_terminal(client, job_id)
    if not streamed:  # the log stream broke: print the whole log once
        out(job_log(client, job_id, None))
    # Ray appends the log tail to a failure message: it was streamed already, keep the first line.
    message = without_log_tail((info.message or "").strip().split("\n")[0])
    return SubmitResult(job_id, str(info.status), str(run_dir), message)


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
