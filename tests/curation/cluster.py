"""A real two-node Ray cluster on this machine, with token authentication and the job server.

Two ``ray start --block`` processes (a head and a worker node, one CPU each, each with its own
custom resource), every port chosen free, a private ``--temp-dir`` per node and a token of its own
(``RAY_AUTH_MODE=token``). Each ``ray start --block`` leads a new session, whose process group holds
every process of that node (raylet, GCS, dashboard, workers): signalling those two groups stops this
cluster and nothing else. Never ``ray stop``: it ends every Ray process on the machine, other
tests' clusters included.

The session-scoped fixture ``ray_multinode`` is made visible by ``tests/curation/conftest.py``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from curation.ray_jobs import RAY_CLIENT_VARS
from curation.service.local_ray import free_ports
from tests.conftest import REPO

RAY = str(Path(sys.executable).with_name("ray"))
HEAD_RESOURCE, WORKER_RESOURCE = "curation_test_head", "curation_test_worker"
@dataclass
class RayTestCluster:
    """A running local multi-node cluster; ``env()`` is the environment of a client with the token."""

    temp_dir: Path
    gcs_address: str
    dashboard_url: str
    token: str
    procs: list[subprocess.Popen] = field(default_factory=list)
    stopped: bool = False

    def env(self, token: bool = True, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in RAY_CLIENT_VARS}
        env.update(HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0", **extra)
        # Without RAY_AUTH_MODE a client that finds ~/.ray/auth_token turns token mode on by itself.
        env["RAY_AUTH_MODE"] = "token" if token else "disabled"
        if token:
            env["RAY_AUTH_TOKEN"] = self.token
        return env

    def api(self, path: str) -> dict:
        req = urllib.request.Request(self.dashboard_url + path, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def alive_nodes(self) -> dict[str, str]:
        """``{node id: HEAD_RESOURCE or WORKER_RESOURCE}`` for the alive nodes."""
        nodes = self.api("/api/v0/nodes?detail=1&limit=100")["data"]["result"]["result"]
        out = {}
        for n in nodes:
            if n["state"] == "ALIVE":
                res = n.get("resources_total") or {}
                out[n["node_id"]] = HEAD_RESOURCE if HEAD_RESOURCE in res else WORKER_RESOURCE
        return out

    def logs(self) -> str:
        """The tail of every Ray log of this cluster (for failure messages)."""
        parts = []
        for f in sorted(self.temp_dir.glob("*/session_latest/logs/*")):
            if f.suffix in (".out", ".err", ".log") and f.is_file() and f.stat().st_size:
                parts.append(f"--- {f.name}\n{f.read_text(errors='replace')[-1500:]}")
        return "\n".join(parts[-12:])

    def stop(self) -> None:
        """End this cluster's processes (idempotent); other Ray clusters on the machine are left alone."""
        if self.stopped:
            return
        self.stopped = True
        for p in reversed(self.procs):  # worker node first, then the head: SIGTERM to each node's group
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.time() + 3  # raylets drain for ~10 s on SIGTERM: a test cluster need not
        for p in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs:  # whatever is left of each node's own process group
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if p.poll() is None:
                p.wait(timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _start_node(args: list[str], env: dict[str, str], log: Path, timeout: float = 90) -> subprocess.Popen:
    with open(log, "wb") as fh:
        proc = subprocess.Popen([RAY, "start", "--block", *args], env=env, cwd=REPO, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = log.read_text(errors="replace")
        if "Ray runtime started" in text:
            return proc
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}:\n{text[-3000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"ray start did not come up in {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


def _node_ports() -> list[str]:
    p = free_ports(7)
    return [f"--node-manager-port={p[0]}", f"--object-manager-port={p[1]}", f"--dashboard-agent-listen-port={p[2]}",
            f"--dashboard-agent-grpc-port={p[3]}", f"--metrics-export-port={p[4]}", f"--runtime-env-agent-port={p[5]}",
            "--min-worker-port=0", "--max-worker-port=0"]  # 0: every worker binds a port the OS picks


def start_cluster() -> RayTestCluster:
    # Short paths: Ray's unix sockets live under them (108-byte limit). A temp dir per node, as
    # on separate machines: nodes sharing one would unpack a job's working_dir into the same
    # directory, and the second node's agent deletes and re-extracts it under the running driver.
    temp_dir = Path(tempfile.mkdtemp(prefix="raymn-", dir="/tmp"))
    token = secrets.token_hex(32)
    gcs_port, dash_port, client_port = free_ports(3)
    cluster = RayTestCluster(temp_dir, f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{dash_port}", token)
    env = cluster.env()
    # The job driver runs `python -m curation.cli`: this venv's python first on PATH, as on a cluster image.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    common = ["--num-cpus=1", "--num-gpus=0", f"--object-store-memory={300 * 2**20}", "--disable-usage-stats",
              "--node-ip-address=127.0.0.1"]
    try:
        cluster.procs.append(_start_node(
            ["--head", f"--port={gcs_port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dash_port}", f"--ray-client-server-port={client_port}",
             f"--resources={json.dumps({HEAD_RESOURCE: 1})}", f"--temp-dir={temp_dir / 'h'}", *common,
             *_node_ports()],
            env, temp_dir / "head.log"))
        cluster.procs.append(_start_node(
            [f"--address={cluster.gcs_address}", f"--resources={json.dumps({WORKER_RESOURCE: 1})}",
             f"--temp-dir={temp_dir / 'w'}", *common, *_node_ports()],
            env, temp_dir / "worker.log"))
        deadline = time.time() + 60
        while True:  # the job server and both raylets registered
            try:
                if sorted(cluster.alive_nodes().values()) == [HEAD_RESOURCE, WORKER_RESOURCE]:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("the two nodes did not register in 60 s:\n" + cluster.logs())
            time.sleep(0.5)
    except BaseException:
        cluster.stop()
        raise
    return cluster


_shared: list[RayTestCluster] = []  # the fixture's cluster while it is set up


@pytest.fixture(scope="session")
def ray_multinode() -> Iterator[RayTestCluster]:
    """One two-node cluster shared by the multi-node and ``curate submit`` tests. It is stopped
    right after the last test that uses it (``stop_after_last_user``), not at the end of the session:
    idle, it holds about 2.4 GB and a tenth of a core."""
    cluster = start_cluster()
    _shared.append(cluster)
    try:
        yield cluster
    finally:
        cluster.stop()
        _shared.remove(cluster)


def stop_after_last_user(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """For ``pytest_runtest_teardown``: stop the cluster once no later test uses it."""
    if "ray_multinode" not in getattr(item, "fixturenames", ()):
        return
    items = item.session.items
    later = items[items.index(item) + 1:] if item in items else []
    if any("ray_multinode" in getattr(i, "fixturenames", ()) for i in later):
        return
    for cluster in _shared:
        cluster.stop()
