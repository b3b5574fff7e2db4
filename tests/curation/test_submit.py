"""``curate submit``: the quickstart as a Ray job on a two-node cluster with token authentication."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from curation.errors import ConfigError
from curation.submit import DEFAULT_EXCLUDES, SubmitError, auth_headers, entrypoint, prepare
from tests.conftest import REPO
from tests.curation.cluster import RayTestCluster


def curate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curation.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=400)


def test_entrypoint_runs_the_pipeline_against_the_jobs_cluster() -> None:
    cmd = entrypoint("pipelines/quickstart.yaml", ["output.dir=/data/run 1", "stages.0.min_chars=10"])
    assert cmd == ("python -m curation.cli run pipelines/quickstart.yaml --ray-address auto --executor ray "
                   "-o 'output.dir=/data/run 1' -o stages.0.min_chars=10")
    assert {".git", ".venv", "/runs/"} <= set(DEFAULT_EXCLUDES)


def test_prepare_validates_locally_and_resolves_the_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    rel, run_dir, wd = prepare("pipelines/quickstart.yaml", ["output.dir=s3://bucket/qs"])
    assert (rel, run_dir, wd) == ("pipelines/quickstart.yaml", "s3://bucket/qs", REPO)
    with pytest.raises(ConfigError, match="outptu"):
        prepare("pipelines/quickstart.yaml", ["outptu.dir=x"])
    outside = tmp_path / "p.yaml"
    outside.write_text((REPO / "pipelines/quickstart.yaml").read_text())
    with pytest.raises(SubmitError, match="not inside the working dir"):
        prepare(str(outside), [])


def test_token_comes_from_the_env_var_or_the_token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "MY_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    assert auth_headers() == {}
    (tmp_path / "tok").write_text("abc\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    assert auth_headers() == {"Authorization": "Bearer abc"}
    monkeypatch.setenv("MY_TOKEN", "xyz")
    assert auth_headers("MY_TOKEN") == {"Authorization": "Bearer xyz"}


def test_bad_override_fails_before_anything_is_uploaded() -> None:
    r = curate("submit", "pipelines/quickstart.yaml", "--address", "http://127.0.0.1:9", "-o", "stages.0.min_charz=10")
    assert r.returncode == 2 and "error:" in r.stdout and "min_charz" in r.stdout, r.stdout + r.stderr


@pytest.mark.ray
@pytest.mark.slow
def test_submit_needs_the_token(ray_multinode: RayTestCluster, tmp_path: Path) -> None:
    args = ("submit", "pipelines/quickstart.yaml", "--address", ray_multinode.dashboard_url,
            "-o", f"output.dir={tmp_path / 'never'}")
    r = curate(*args, env=ray_multinode.env(token=False))
    text = " ".join(r.stdout.split())  # rich wraps the message
    assert r.returncode == 2 and "Authentication required" in text and "set $RAY_AUTH_TOKEN" in text, r.stdout
    r = curate(*args, env=ray_multinode.env(token=False, RAY_AUTH_TOKEN="0" * 64))
    assert r.returncode == 2 and "Invalid authentication token" in " ".join(r.stdout.split()), r.stdout
    assert not (tmp_path / "never").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_submit_quickstart_streams_logs_and_prints_the_run_dir(ray_multinode: RayTestCluster, tmp_path: Path) -> None:
    out = tmp_path / "qs"
    # Ray's own token mode is off in this client: the token travels only as our Authorization header.
    env = ray_multinode.env(token=False, CLUSTER_TOKEN=ray_multinode.token)
    r = curate("submit", "pipelines/quickstart.yaml", "--address", ray_multinode.dashboard_url,
               "--token-env", "CLUSTER_TOKEN", "-o", f"output.dir={out}", env=env)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:] + ray_multinode.logs()
    # The driver's output, streamed from the cluster while the job ran:
    assert "Running entrypoint for job curate-" in r.stdout
    assert "near_dedup: 16 bands x 8 rows" in r.stdout and "Funnel" in r.stdout and "done in" in r.stdout
    assert r.stdout.rstrip().splitlines()[-1].endswith(f"succeeded; run directory: {out}")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shards"] and all((out / s["path"]).is_file() for s in manifest["shards"])
    assert set(manifest["nodes"]) <= set(ray_multinode.alive_nodes())  # tasks ran on the cluster's nodes


@pytest.mark.ray
@pytest.mark.slow
def test_failing_job_exits_nonzero_with_the_error(ray_multinode: RayTestCluster, tmp_path: Path) -> None:
    # Valid here, wrong on the cluster: inputs that do not exist there.
    r = curate("submit", "pipelines/quickstart.yaml", "--address", ray_multinode.dashboard_url,
               "-o", "input.paths=[/nonexistent/corpus/*.jsonl.gz]", "-o", f"output.dir={tmp_path / 'qs'}",
               env=ray_multinode.env())
    assert r.returncode == 1, r.stdout[-4000:] + r.stderr[-4000:]
    assert "matches no file" in r.stdout and "FAILED" in r.stdout, r.stdout[-4000:]
