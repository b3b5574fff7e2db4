"""Fixtures of the service tests: real quickstart runs (built once per session) and real uvicorn servers.

Runs under one root: ``qs`` (the quickstart), ``qs-lang50`` (language_id_v1 min_score 0.5: a second
finished run to compare) and ``crashed`` (pass 1 task 0 raised: run.json and pass-0 markers, no manifest).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from curation.service.app import create_app
from curation.service.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[3]
READ_TOKEN = "read-token-0123456789abcdef"
SUBMIT_TOKEN = "submit-token-0123456789abcdef"


def _curate_run(out: Path, *overrides: str, env: dict[str, str] | None = None, check: bool = True) -> None:
    cmd = [sys.executable, "-m", "curation.cli", "run", "pipelines/quickstart.yaml", "-o", "executor.kind=local",
           "-o", f"output.dir={out}"]
    for o in overrides:
        cmd += ["-o", o]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **(env or {})}
    res = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=600)
    if check and res.returncode != 0:
        raise AssertionError(f"curate run failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    _curate_run(root / "qs")
    _curate_run(root / "qs-lang50", "stages.1.min_score=0.5")
    _curate_run(root / "crashed", env={"CURATION_FAULT": "raise:1:0", "CURATION_ENABLE_FAULT_INJECTION": "1"},
                check=False)
    assert (root / "qs" / "manifest.json").exists() and not (root / "crashed" / "manifest.json").exists()
    # Not runs: a hidden folder and a plain folder are never listed.
    (root / ".trash").mkdir()
    (root / "notes").mkdir()
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` under a real uvicorn server on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise AssertionError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def make_settings(root: Path, tmp: Path, tokens: bool = False, **kw: object) -> ServiceSettings:
    extra = {"read_tokens": frozenset({READ_TOKEN}), "submit_tokens": frozenset({SUBMIT_TOKEN})} if tokens else {}
    return ServiceSettings(runs_root=str(root), state_dir=tmp / "state", **extra, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def open_server(runs_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server without tokens (loopback: everyone may read and submit)."""
    with serving(create_app(make_settings(runs_root, tmp_path_factory.mktemp("svc")))) as url:
        yield url


@pytest.fixture(scope="module")
def token_app_factory(runs_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[], FastAPI]:
    def make() -> FastAPI:
        return create_app(make_settings(runs_root, tmp_path_factory.mktemp("svc"), tokens=True,
                                        max_body_bytes=64 * 1024))
    return make


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
