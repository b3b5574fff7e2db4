"""Cluster files parse and keep the rules that matter: scripts are valid bash, every Ray container runs
with token authentication, the dashboard binds to loopback, the job runs a bundled pipeline."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

DEPLOY = REPO / "deploy"


@pytest.mark.parametrize("script", sorted((DEPLOY / "slurm").glob("*.sbatch")), ids=lambda p: p.name)
def test_slurm_scripts_are_valid_bash_with_usage(script: Path) -> None:
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    assert any(line.startswith("#   sbatch") for line in text.splitlines()[:4])  # the command that runs it, on top


def _containers(spec: dict) -> list[dict]:
    out = list(spec["headGroupSpec"]["template"]["spec"]["containers"])
    for group in spec["workerGroupSpecs"]:
        out += group["template"]["spec"]["containers"]
    return out


def test_rayjob_manifest() -> None:
    job = yaml.safe_load((DEPLOY / "kuberay" / "rayjob-quickstart.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    entry = job["spec"]["entrypoint"].split()
    assert entry[:2] == ["curate", "run"] and (REPO / entry[2]).is_file()
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    for c in _containers(cluster):
        assert {"name": "RAY_AUTH_MODE", "value": "token"} in c["env"] and c["image"]
        assert c["resources"]["limits"] == c["resources"]["requests"]


def test_images_install_the_verified_pins() -> None:
    for name in ("Dockerfile", "Dockerfile.gpu"):
        text = (DEPLOY / "docker" / name).read_text()
        assert "requirements-ci.txt" in text and "pip install --no-cache-dir --no-deps -e ." in text
