"""The prepared GPU check: its CPU dry run reaches every step's first CUDA call; without a GPU it fails loudly.

    .venv/bin/python -m pytest tests/scripts/test_gpu_check.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def _check(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "summary.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "scripts/gpu_check.py", "--workdir", str(tmp_path / "work"), "--out", str(out),
                        *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    return r, json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_dry_run_reaches_the_first_cuda_call_of_every_step(tmp_path: Path) -> None:
    r, summary = _check(tmp_path, "--dry-run")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    steps = summary["steps"]
    assert list(steps) == ["env", "lm_loss", "rephrase_hf", "rephrase_vllm", "train_nccl", "bench", "semdedup_embed"]
    for name, step in steps.items():
        expected = {"skipped", "dry-run-ok"} if name == "rephrase_vllm" else {"dry-run-ok"}
        assert step["status"] in expected, (name, step)
    # The CPU half of each step really ran: the model was built and trained, the run was curated.
    assert (tmp_path / "work" / "lm" / "config.json").is_file()
    manifest = json.loads((tmp_path / "work" / "run" / "manifest.json").read_text())
    assert manifest["shards"]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-GPU failure")
def test_without_a_gpu_the_check_fails_loudly(tmp_path: Path) -> None:
    r, summary = _check(tmp_path, "--steps", "env")
    assert r.returncode == 1
    assert summary["steps"]["env"]["status"] == "fail"
    assert "CUDA is not available" in summary["steps"]["env"]["error"]
