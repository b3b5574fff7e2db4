"""A Ray head that ``curate serve`` starts itself when it is given no ``--ray-address`` (as NeMo Curator's
``core/client.py::RayClient`` starts one): loopback only, token auth, its own temp dir and process group, and an
allowlisted environment (``job_env``) that every job it runs inherits.

Nothing here imports Ray: the head is the ``ray`` command of this interpreter's environment, started with
``ray start --block`` in a new session, so that stopping it ends exactly its process group.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.errors import CurationError
from curation.ray_jobs import RAY_CLIENT_VARS

log = logging.getLogger(__name__)

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

