"""Checkpoints that load without running code from the file.

A checkpoint is a ``torch.save`` zip holding only tensors and plain containers, read back with
``torch.load(weights_only=True)``: the restricted unpickler refuses any global (a class, a
function such as ``os.system``), so a crafted ``.pt`` cannot execute anything on load.

Layout (``format`` 2)::

    {"format": 2,
     "model": state_dict,              # tensors
     "optimizer": state_dict,          # tensors, numbers, lists
     "rng": [{"cpu": uint8 tensor, "cuda": uint8 tensor | None}, ...],  # one per rank
     "meta": uint8 tensor}             # UTF-8 JSON: step, every rank's loader state, Skill-It, config

The loader/sampler state and the config go through JSON (not pickle) so that what a checkpoint
can contain is exactly what JSON can express; ``read_checkpoint`` decodes ``meta`` back into
the returned dict's top level (``step``, ``loaders``, ``skillit``, ``config``). A checkpoint of
another ``format`` (or none: those written before format 2) is refused with ``check_schema``'s one
message; each loader state in it carries its own version (``training.data.loader.STATE``).

    python -c "from training.checkpoint import read_checkpoint as r; print(r('runs/train/checkpoint.pt')['step'])"
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from curation.io.manifest import RecordKind, SchemaVersionError, check_schema

FORMAT = 2
#: The checkpoint file: ``format`` is its version.
CHECKPOINT = RecordKind("checkpoint", FORMAT, "restart training from a checkpoint written by this version, or from "
                                              "scratch", key="format", required=("optimizer", "rng", "meta"))
META_KEYS = ("step", "loaders", "skillit", "config")


class CheckpointError(ValueError):
    """A checkpoint file that cannot (or must not) be loaded; the message names the file."""


def json_tensor(obj: Any) -> torch.Tensor:
    """``obj`` as UTF-8 JSON in a uint8 tensor. NaN/inf stay allowed (Python's ``json`` reads its own
    ``NaN`` back): a diverged eval loss must not make the checkpoint fail."""
    data = json.dumps(obj, sort_keys=True).encode()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def tensor_json(t: torch.Tensor, where: str) -> Any:
    if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.dim() != 1:
        raise CheckpointError(f"{where}: 'meta' must be a 1-d uint8 tensor of JSON, got {type(t).__name__}")
    try:
        return json.loads(t.cpu().numpy().tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{where}: 'meta' is not UTF-8 JSON: {e}") from e


def rng_state() -> dict[str, torch.Tensor | None]:
    """This process's torch RNG state (CPU, and the current CUDA device's when there is one)."""
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


def write_checkpoint(path: Path, model: dict[str, Any], optimizer: dict[str, Any], rng: list[dict[str, Any]],
                     meta: dict[str, Any]) -> None:
    """Write atomically (temp file + rename): a crash mid-save leaves the previous checkpoint intact."""
    unknown = set(meta) - set(META_KEYS)
    if unknown:
        raise ValueError(f"write_checkpoint: unexpected meta keys {sorted(unknown)}; allowed {list(META_KEYS)}")
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, "model": model, "optimizer": optimizer, "rng": rng, "meta": json_tensor(meta)}, tmp)
    with open(tmp, "rb+") as fh:  # durable before the rename makes it visible
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load ``path`` with ``weights_only=True``; the JSON ``meta`` is merged into the result.

    Raises ``CheckpointError`` naming the file when it holds anything but tensors and plain
    containers (a pickle that would import or call code), or is not a checkpoint at all."""
    where = str(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [line.strip() for line in str(e).splitlines() if "GLOBAL" in line]
        if lines:  # the restricted unpickler met an import: a class or function the file wants to call
            raise CheckpointError(f"{where}: refused to load: it references {lines[0]!r}; a checkpoint may hold only "
                                  "tensors and plain containers, and loading this one unrestricted could run code "
                                  "from the file") from e
        raise CheckpointError(f"{where}: not a readable torch checkpoint: {str(e).strip()[:200]}") from e
    except (RuntimeError, EOFError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise CheckpointError(f"{where}: not a readable torch checkpoint: {e}") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{where}: not a training checkpoint (expected a dict with 'model')")
    try:
        check_schema(ckpt, CHECKPOINT, where)
    except SchemaVersionError as e:
        raise CheckpointError(str(e)) from None
    meta = tensor_json(ckpt.pop("meta"), where)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where}: 'meta' must be a JSON object")
    ckpt.update({k: meta.get(k) for k in META_KEYS})
    return ckpt
