"""The `gpu` marker's promise (tests/conftest.py): skipped where there is no CUDA device, run where there is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, cuda_available


def test_gpu_marked_tests_are_skipped_without_cuda_and_run_with_it(tmp_path: Path) -> None:
    # A tiny suite that uses the real hook: its gpu test FAILS wherever it runs without CUDA, so only a skip
    # keeps it green on a CPU machine, and on a GPU machine it runs and passes.
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --strict-markers\nmarkers =\n    gpu: needs CUDA\n")
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.gpu\n"
        "def test_needs_cuda():\n"
        "    import torch\n"
        "    assert torch.cuda.is_available()\n\n"
        "def test_plain():\n"
        "    pass\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    if cuda_available():
        assert run.returncode == 0 and "2 passed" in run.stdout, run.stdout + run.stderr
    else:
        assert run.returncode == 0 and "1 passed, 1 skipped" in run.stdout, run.stdout + run.stderr
        assert "SKIPPED [1] test_x.py:3: gpu: needs a CUDA device, and torch sees none" in run.stdout, run.stdout
