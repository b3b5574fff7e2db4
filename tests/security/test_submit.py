"""``curate submit`` uploads what git tracks (plus ``--include`` paths and the config), never "everything minus a
denylist" (issue 27 item 13): credential files of every kind planted, untracked, in the checkout stay on this
machine, and what was left out is printed. The upload is checked with Ray's own packer on the folder handed to
``submit_job``, i.e. the zip that would reach the cluster."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

# Untracked files that hold credentials, one per kind the old denylist missed (and the service's state folder).
PLANTED = [".env.local", ".env.production", ".netrc", ".git-credentials", ".kube/config", ".docker/config.json",
           "deploy/client.p12", "gcp-sa-key.json", "service-account.json", ".config/gcloud/credentials.db",
           "application_default_credentials.json", ".azure/accessTokens.json", ".curate-serve/ray/token",
           ".curate-serve/jobs.sqlite", "notes/todo.txt"]
TRACKED = ["pipelines/quickstart.yaml", "curation/__init__.py", "curation/id_map.py", "README.md"]


def _git(wd: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(wd), *args], check=True, capture_output=True)


def _checkout(tmp_path: Path) -> Path:
    wd = tmp_path / "checkout"
    for rel in TRACKED + PLANTED:
        (wd / rel).parent.mkdir(parents=True, exist_ok=True)
        (wd / rel).write_text((REPO / rel).read_text() if rel.startswith("pipelines/") else "SECRET\n")
    _git(wd, "init", "-q")
    _git(wd, "add", *TRACKED)
    return wd


class _Client:
    """Records the zip Ray would upload for the job's working_dir (the staging folder is gone afterwards)."""

    def __init__(self, out: Path) -> None:
        self.out, self.uploaded = out, set()

    def submit_job(self, *, entrypoint: str, runtime_env: dict[str, Any], submission_id: str,
                   metadata: dict[str, str]) -> str:
        from ray._private.runtime_env.packaging import _zip_files

        _zip_files(runtime_env["working_dir"], runtime_env["excludes"], str(self.out), include_gitignore=True)
        self.uploaded = set(zipfile.ZipFile(self.out).namelist())
        return submission_id


def _submit(wd: Path, tmp_path: Path, **kw: Any) -> tuple[set[str], str]:
    from curation.submit import submit

    printed: list[str] = []
    client = _Client(tmp_path / "pkg.zip")
    submit("http://127.0.0.1:9", str(wd / "pipelines/quickstart.yaml"), working_dir=str(wd), wait=False,
           client=client, echo=printed.append, **kw)
    return {n for n in client.uploaded if not n.endswith("/")}, "".join(printed)


def test_submit_uploads_what_git_tracks_and_no_planted_credentials(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    wd = _checkout(tmp_path)
    uploaded, printed = _submit(wd, tmp_path)
    assert uploaded == set(TRACKED), uploaded
    left = next(ln for ln in printed.splitlines() if ln.startswith("left out:"))
    # a count and a few names, credential-looking ones first; never contents
    assert left.startswith("left out: 14 paths git does not track: ") and "(+6 more)" in left, left
    for name in (".netrc", ".env.local", ".git-credentials", "service-account.json"):
        assert name in left, left
    assert "notes/" not in left and "SECRET" not in printed


def test_submit_uploads_named_includes_but_never_credential_files(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    wd = _checkout(tmp_path)
    uploaded, _ = _submit(wd, tmp_path, includes=["notes", "."])
    # "." names everything: the credential patterns still hold (tracked, included or not)
    assert set(TRACKED) | {"notes/todo.txt"} <= uploaded
    assert not uploaded & set(PLANTED[:-1]), uploaded & set(PLANTED[:-1])


def test_submit_outside_a_git_checkout_needs_include(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from curation.submit import SubmitError

    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    wd = _checkout(tmp_path)
    subprocess.run(["rm", "-rf", str(wd / ".git")], check=True)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # tmp_path must not sit in another checkout
    with pytest.raises(SubmitError, match=r"not a git checkout.*--include"):
        _submit(wd, tmp_path)
    uploaded, _ = _submit(wd, tmp_path, includes=["curation"])
    assert uploaded == {"curation/__init__.py", "curation/id_map.py", "pipelines/quickstart.yaml"}


def test_curate_submit_cli_prints_what_it_left_out(tmp_path: Path) -> None:
    wd = _checkout(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RAY_USAGE_STATS_ENABLED": "0"}
    r = subprocess.run([sys.executable, "-m", "curation.cli", "submit", str(wd / "pipelines/quickstart.yaml"),
                        "--working-dir", str(wd), "--address", "http://127.0.0.1:9"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "connecting to the Ray job server" in r.stdout, r.stdout + r.stderr
    assert "uploading 4 files of" in r.stdout and "left out: 14 paths git does not track: " in r.stdout, r.stdout
