"""The quickstart on a real two-node Ray cluster (``ray start`` head + worker): both nodes run
tasks, and the shards are byte for byte those of a local run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.curation.cluster import HEAD_RESOURCE, WORKER_RESOURCE, RayTestCluster
from tests.curation.executors.runs import content, shard_bytes

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def curate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curation.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=400)


def test_quickstart_spreads_over_two_nodes_and_equals_local(ray_multinode: RayTestCluster, tmp_path: Path) -> None:
    nodes = ray_multinode.alive_nodes()
    assert sorted(nodes.values()) == [HEAD_RESOURCE, WORKER_RESOURCE]
    out = tmp_path / "cluster"
    # One CPU per node, every shard task asks for one: two tasks at a time must use both nodes.
    r = curate("run", "pipelines/quickstart.yaml", "--ray-address", ray_multinode.gcs_address,
               "-o", f"output.dir={out}", "-o", "executor.concurrency=2", env=ray_multinode.env())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:] + ray_multinode.logs()
    manifest = json.loads((out / "manifest.json").read_text())
    ran = manifest["nodes"]
    assert set(ran) == set(nodes), (ran, nodes)  # both node ids ran tasks, and nothing ran outside Ray
    assert all(n > 0 for n in ran.values())
    assert sum(ran.values()) % manifest["totals"]["input_files"] == 0  # every task of every pass, once

    local = tmp_path / "local"
    r = curate("run", "pipelines/quickstart.yaml", "--executor", "local", "-o", f"output.dir={local}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    local_manifest = json.loads((local / "manifest.json").read_text())
    assert local_manifest["nodes"] == {"local": sum(ran.values())}
    assert content(out) == content(local)  # same documents, same texts
    assert shard_bytes(out) == shard_bytes(local)  # byte-identical shards
    assert manifest["stages"] == local_manifest["stages"]
    assert [s["sha256"] for s in manifest["shards"]] == [s["sha256"] for s in local_manifest["shards"]]
