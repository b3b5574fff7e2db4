"""Device selection per LOCAL_RANK: each torchrun process gets its own GPU, gloo on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from curation.service.local_ray import free_ports
from tests.conftest import REPO
from tests.training.test_train import write_cfg
from training.devices import select_device


@pytest.mark.parametrize("local_rank", range(8))
def test_cpu_only_node_uses_gloo_on_cpu(local_rank: int) -> None:
    assert select_device(local_rank, cuda_available=False, device_count=0) == ("cpu", "gloo")
    # CUDA built in but no GPU visible (e.g. CUDA_VISIBLE_DEVICES=""): still CPU.
    assert select_device(local_rank, cuda_available=True, device_count=0) == ("cpu", "gloo")


@pytest.mark.parametrize("local_rank", range(8))
def test_eight_gpu_node_gives_each_rank_its_own_gpu(local_rank: int) -> None:
    assert select_device(local_rank, cuda_available=True, device_count=8) == (f"cuda:{local_rank}", "nccl")


def test_eight_ranks_map_to_eight_distinct_gpus() -> None:
    assert len({select_device(r, True, 8)[0] for r in range(8)}) == 8


def test_one_visible_gpu_per_process_is_cuda_0() -> None:
    # A launcher that isolates each process's GPU with CUDA_VISIBLE_DEVICES shows it one device.
    assert select_device(3, cuda_available=True, device_count=1) == ("cuda:0", "nccl")


def test_more_local_ranks_than_gpus_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="LOCAL_RANK 4 has no GPU of its own: this node shows 4 GPUs"):
        select_device(4, cuda_available=True, device_count=4)
    with pytest.raises(ValueError, match="LOCAL_RANK must be >= 0"):
        select_device(-1, cuda_available=False, device_count=0)


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torchrun_on_gpus_uses_nccl_and_resumes(quickstart_run: Path, tmp_path: Path) -> None:
    """Up to 2 GPUs under torchrun: rank 0 on cuda:0 with NCCL; the checkpoint (written after an
    all_gather_object across ranks) resumes."""
    nproc = min(2, torch.cuda.device_count())
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def run(steps: int) -> dict[str, object]:
        path = write_cfg(tmp_path, quickstart_run, steps=steps, eval_every=2, checkpoint_every=2)
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                            "--master_port", str(free_ports(1)[0]), "-m", "training.cli", "run", str(path)],
                           capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return json.loads(r.stdout.strip().splitlines()[-1])

    first = run(2)
    assert first["backend"] == "nccl" and first["device"] == "cuda:0" and first["world_size"] == nproc
    assert run(4)["step"] == 4
