"""Checkpoints load with ``weights_only=True``: a pickle that would run code is refused (resume and
``init_from``) before it runs; exact resume keeps working, dropout included (RNG state is saved)."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest
import torch

from tests.training.test_train import write_cfg
from training.checkpoint import CHECKPOINT, CheckpointError, read_checkpoint, write_checkpoint
from training.train import load_config, train


class _RunsCode:
    """Pickles to ``os.system("touch MARKER")``: what a crafted ``.pt`` would do on an unsafe load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": _RunsCode(marker), "step": 1}, path)
    return path


def test_the_crafted_payload_is_live(tmp_path: Path) -> None:
    """Guards the two tests below: an unrestricted load of this file really does run the command."""
    marker = tmp_path / "marker"
    torch.load(crafted_checkpoint(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


def test_resume_refuses_a_checkpoint_that_runs_code(sample_run: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    cfg = load_config(str(write_cfg(tmp_path, sample_run, steps=2)), [])
    evil = crafted_checkpoint(Path(cfg.out_dir) / "checkpoint.pt", marker)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(evil))}: refused to load.*system"):
        train(cfg)
    assert not marker.exists()


def test_init_from_refuses_a_checkpoint_that_runs_code(sample_run: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    evil = crafted_checkpoint(tmp_path / "evil.pt", marker)
    cfg = load_config(str(write_cfg(tmp_path, sample_run, steps=2, init_from=str(evil))), [])
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(evil))}: refused to load"):
        train(cfg)
    assert not marker.exists()
    assert not (Path(cfg.out_dir) / "checkpoint.pt").exists()


def test_read_checkpoint_names_a_file_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(junk))}: not a readable torch checkpoint"):
        read_checkpoint(junk)


def test_checkpoint_state_is_json_and_tensors(sample_run: Path, tmp_path: Path) -> None:
    """The raw file (as the restricted unpickler sees it) carries loader/Skill-It/config state as a
    uint8 tensor of JSON, and init_from continues from its weights."""
    torch.set_num_threads(1)
    first = train(load_config(str(write_cfg(tmp_path / "a", sample_run, steps=4, eval_every=4)), []))
    path = tmp_path / "a" / "out" / "checkpoint.pt"
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"format", "model", "optimizer", "rng", "meta"} and raw["meta"].dtype == torch.uint8
    meta = json.loads(raw["meta"].numpy().tobytes())
    assert meta["step"] == 4 and meta["loaders"][0]["sequence"] == 4 * 4
    assert raw["rng"][0]["cpu"].dtype == torch.uint8
    # init_from: the new run's step-0 evaluation is the old run's last one (same weights, same eval batches).
    train(load_config(str(write_cfg(tmp_path / "b", sample_run, steps=1, init_from=str(path))), []))
    log_a = [json.loads(x) for x in (tmp_path / "a" / "out" / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (tmp_path / "b" / "out" / "log.jsonl").read_text().splitlines()]
    assert first["step"] == 4 and log_b[1]["step"] == 0 and log_b[1]["eval"] == log_a[-1]["eval"]


def test_resume_with_dropout_reproduces_an_uninterrupted_run(sample_run: Path, tmp_path: Path) -> None:
    """Dropout draws from torch's RNG: resume is exact only because the RNG state is checkpointed."""
    torch.set_num_threads(1)

    def run(d: str, steps: int) -> dict[str, object]:
        cfg = load_config(str(write_cfg(tmp_path / d, sample_run, steps=steps, checkpoint_every=3, eval_every=3)), [])
        cfg.model.dropout = 0.2
        return train(cfg)

    ref = run("a", 6)
    run("b", 3)
    resumed = run("b", 6)
    assert resumed["step"] == 6 and resumed["train_loss"] == ref["train_loss"]
    a, b = (read_checkpoint(tmp_path / d / "out" / "checkpoint.pt") for d in ("a", "b"))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_checkpoints_of_another_version_are_refused_with_the_one_message(sample_run: Path, tmp_path: Path) -> None:
    """A format-1 checkpoint (state at the top level, no RNG) and a format-2 one whose loader state carries no
    ``schema_version`` (as written before states had one) are both refused before training resumes."""
    torch.set_num_threads(1)
    path = write_cfg(tmp_path, sample_run, steps=2, eval_every=2, checkpoint_every=2)
    train(load_config(str(path), []))
    ckpt_path = tmp_path / "out" / "checkpoint.pt"
    new = read_checkpoint(ckpt_path)
    torch.save({k: new[k] for k in ("model", "optimizer", "step", "loaders", "config", "skillit")}, ckpt_path)
    with pytest.raises(CheckpointError) as e:
        train(load_config(str(path), ["steps=3"]))
    assert str(e.value) == (f"{ckpt_path}: checkpoint written by another version of this project (no format); this "
                            f"version reads only format 2: {CHECKPOINT.remedy}")
    for state in new["loaders"]:
        state.pop("schema_version")
    write_checkpoint(ckpt_path, new["model"], new["optimizer"], new["rng"],
                     {k: new[k] for k in ("step", "loaders", "config", "skillit")})
    with pytest.raises(ValueError, match=rf"^{re.escape(str(ckpt_path))}: loaders\[0\]: loader state written by "
                                         r"another version of this project \(no schema_version\)"):
        train(load_config(str(path), ["steps=3"]))
