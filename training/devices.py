"""Which device and process-group backend each training process uses.

``select_device`` is pure (no CUDA calls) so its rules are testable anywhere; ``setup_distributed``
applies them: on CUDA it binds the process to ``cuda:LOCAL_RANK`` *before* the NCCL process group
exists (``torch.cuda.set_device`` plus ``init_process_group(device_id=...)``), otherwise NCCL
collectives and ``all_gather_object`` would run every rank on GPU 0.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def select_device(local_rank: int, cuda_available: bool, device_count: int) -> tuple[str, str]:
    """``(device, backend)`` for the process with this ``LOCAL_RANK``.

    Without CUDA: ``("cpu", "gloo")``. With CUDA: ``("cuda:<local_rank>", "nccl")``; a single visible
    GPU is ``cuda:0`` for every local rank (a launcher that gives each process its own GPU through
    ``CUDA_VISIBLE_DEVICES``). More local ranks than visible GPUs is an error: two ranks on one GPU
    deadlock or fail inside NCCL with a far less clear message."""
    if local_rank < 0:
        raise ValueError(f"LOCAL_RANK must be >= 0, got {local_rank}")
    if not cuda_available or device_count <= 0:
        return "cpu", "gloo"
    if device_count == 1:
        return "cuda:0", "nccl"
    if local_rank >= device_count:
        raise ValueError(f"LOCAL_RANK {local_rank} has no GPU of its own: this node shows {device_count} GPUs "
                         f"(cuda:0..cuda:{device_count - 1}); start at most {device_count} processes per node")
    return f"cuda:{local_rank}", "nccl"


def setup_distributed() -> tuple[int, int, str, str]:
    """``(rank, world_size, backend, device)``; initialises the process group under torchrun.

    A launcher that already set up the group (Ray Train) also set the current CUDA device, so the
    device follows it; without ``RANK``/``WORLD_SIZE`` this is a single process (backend ``none``)."""
    cuda = torch.cuda.is_available()
    if dist.is_initialized():
        backend = str(dist.get_backend())
        device = f"cuda:{torch.cuda.current_device()}" if cuda and backend == "nccl" else "cpu"
        return dist.get_rank(), dist.get_world_size(), backend, device
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device, backend = select_device(local_rank, cuda, torch.cuda.device_count() if cuda else 0)
    if device.startswith("cuda"):
        torch.cuda.set_device(device)  # before any CUDA work of this process, NCCL's included
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, "none", device
    if device.startswith("cuda"):
        dist.init_process_group(backend, device_id=torch.device(device))
    else:
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), backend, device
