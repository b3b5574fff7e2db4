"""``curate submit``: the quickstart as a Ray job on a two-node cluster with token authentication."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from curation.errors import ConfigError
from curation.submit import (DEFAULT_EXCLUDES, SubmitError, auth_headers, check_transport, entrypoint,
                             excluded_paths, prepare)
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


def _client_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any cluster token (HOME too: Ray reads ~/.ray/auth_token)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    return {**env, "HOME": str(tmp_path), **extra}


@pytest.mark.parametrize("address", ["http://cluster-head.invalid:8265", "cluster-head.invalid:8265",
                                     "HTTP://10.0.0.5:8265/", "http://user@[2001:db8::1]:8265"])
def test_token_is_never_sent_over_plain_http_to_another_host(address: str) -> None:
    with pytest.raises(SubmitError, match="refusing to send the cluster token over plain http"):
        check_transport(address, token=True)
    check_transport(address, token=True, insecure=True)  # the user's explicit choice
    check_transport(address, token=False)  # nothing secret goes out


@pytest.mark.parametrize("address", ["https://cluster-head.example:8265", "http://127.0.0.1:8265",
                                     "http://127.8.9.10:8265", "http://localhost:8265", "http://[::1]:8265",
                                     "localhost:8265"])
def test_token_may_go_to_loopback_or_over_https(address: str) -> None:
    check_transport(address, token=True)


def test_submit_refuses_plain_http_with_a_token_in_one_line(tmp_path: Path) -> None:
    # .invalid never resolves: no request leaves this machine, with or without the refusal.
    args = ("submit", "pipelines/quickstart.yaml", "--address", "http://cluster-head.invalid:8265")
    r = curate(*args, env=_client_env(tmp_path, RAY_AUTH_TOKEN="s3cret"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout.startswith("error: refusing to send the cluster token over plain http to cluster-head.invalid")
    assert len(r.stdout.strip().splitlines()) == 1 and "s3cret" not in r.stdout + r.stderr
    r = curate(*args, "--insecure", env=_client_env(tmp_path, RAY_AUTH_TOKEN="s3cret"))
    assert r.returncode == 2 and "refusing" not in r.stdout and "connecting to the Ray job server" in r.stdout, \
        r.stdout + r.stderr


def _workdir_with_secrets(tmp_path: Path) -> Path:
    wd = tmp_path / "wd"
    for rel in (".env", "deploy/tls.pem", "deploy/tls.key", ".ssh/id_ed25519", "keys/id_rsa", "keys/id_rsa.pub",
                ".aws/config", "credentials.json", "conf/credentials", "curation/id_map.py", "curation/keys.py",
                "notes.env.md", "curation/__pycache__/x.pyc"):
        (wd / rel).parent.mkdir(parents=True, exist_ok=True)
        (wd / rel).write_text("SECRET" if "id_map" not in rel and "keys.py" not in rel else "x = 1\n")
    (wd / "pipelines").mkdir()
    (wd / "pipelines/quickstart.yaml").write_text((REPO / "pipelines/quickstart.yaml").read_text())
    return wd


def test_credential_files_are_never_uploaded(tmp_path: Path) -> None:
    from ray._private.runtime_env.packaging import _zip_files

    wd = _workdir_with_secrets(tmp_path)
    # Ray's own packer, as the job upload calls it: the zip is what would reach the cluster.
    _zip_files(str(wd), DEFAULT_EXCLUDES, str(tmp_path / "pkg.zip"), include_gitignore=True)
    uploaded = set(zipfile.ZipFile(tmp_path / "pkg.zip").namelist())
    assert uploaded == {"curation/id_map.py", "curation/keys.py", "notes.env.md", "pipelines/quickstart.yaml"}
    assert excluded_paths(wd, DEFAULT_EXCLUDES) == [
        ".aws/config", ".env", ".ssh/id_ed25519", "conf/credentials", "credentials.json", "curation/__pycache__/",
        "deploy/tls.key", "deploy/tls.pem", "keys/id_rsa", "keys/id_rsa.pub"]


def test_submit_names_what_it_leaves_out(tmp_path: Path) -> None:
    wd = _workdir_with_secrets(tmp_path)
    # Port 9 on loopback refuses at once: the listing is printed before connecting.
    # Not a git checkout: "--include ." names the whole folder; the credential patterns still apply.
    r = curate("submit", str(wd / "pipelines/quickstart.yaml"), "--working-dir", str(wd), "--include", ".",
               "--address", "http://127.0.0.1:9", env=_client_env(tmp_path))
    assert r.returncode == 2 and "connecting to the Ray job server" in r.stdout, r.stdout + r.stderr
    line = next(ln for ln in r.stdout.splitlines() if "not uploaded:" in ln)
    assert line.endswith("not uploaded: credentials/keys: .aws/config, .env, .ssh/id_ed25519, conf/credentials, "
                         "credentials.json, deploy/tls.key, deploy/tls.pem, keys/id_rsa, keys/id_rsa.pub; "
                         "__pycache__/"), line
    assert "SECRET" not in r.stdout + r.stderr  # names, never contents


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
