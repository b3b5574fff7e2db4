"""MeCo in the training loop: the step's loss skips prefix targets, the switch lands on its step,
and a run resumed before or after the switch ends where an uninterrupted one does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from tests.training.test_train import write_cfg
from training.checkpoint import read_checkpoint
from training.data.loader import MixtureLoader
from training.data.meco import IGNORE_INDEX
from training.model import GPT
from training.train import load_config, train

TEMPLATE = "URL: {value}\n\n"


def log_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_the_training_loss_skips_prefix_targets(quickstart_run: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    meco = {"field": "url_domain", "template": TEMPLATE, "cooldown_fraction": 0.0}
    path = write_cfg(tmp_path, quickstart_run, steps=1, eval_every=1, checkpoint_every=1)
    over = [f"data.meco={json.dumps(meco)}"]
    train(load_config(str(path), over))
    logged = [r for r in log_of(tmp_path / "out") if "train_loss" in r][0]
    assert logged["meco_prefix"] is True

    # The same first step by hand: the model train() built (same seed), the batch its loader drew.
    cfg = load_config(str(path), over)
    torch.manual_seed(cfg.seed)
    cfg.model.vocab_size, cfg.model.seq_len = 257, cfg.data.seq_len
    model = GPT(cfg.model)
    x, y, _ = MixtureLoader(cfg.data).next_batch()
    ignored = y == IGNORE_INDEX
    assert ignored.any() and not ignored.all()
    assert "URL: docs.python.org\n\n" in bytes(int(t) for t in x.reshape(-1) if t < 256).decode(errors="replace")
    with torch.no_grad():
        logp = F.log_softmax(model(torch.from_numpy(x))[0].float(), dim=-1).numpy()
    rows, cols = np.nonzero(~ignored)
    manual = -logp[rows, cols, y[rows, cols]].mean()
    assert logged["train_loss"] == pytest.approx(float(manual), rel=1e-5, abs=1e-6)
    # Counting the prefix targets too (their true tokens are the next inputs) gives another number.
    y_all = y.copy()
    y_all[:, :-1] = np.where(ignored[:, :-1], x[:, 1:], y[:, :-1])
    r2, c2 = np.nonzero(y_all != IGNORE_INDEX)
    assert abs(-logp[r2, c2, y_all[r2, c2]].mean() - manual) > 1e-5


@pytest.mark.parametrize("split", [4, 8])
def test_resume_before_or_after_the_switch_reproduces_an_uninterrupted_run(quickstart_run: Path, tmp_path: Path,
                                                                           split: int) -> None:
    torch.set_num_threads(1)
    # steps 0-5 with prefix, 6-11 without; the split runs stop early, so they name the switch by step.
    fraction = [f"data.meco={json.dumps({'template': TEMPLATE, 'cooldown_fraction': 0.5})}"]
    by_step = [f"data.meco={json.dumps({'template': TEMPLATE, 'cooldown_start_step': 6})}"]
    kw = {"checkpoint_every": 4, "eval_every": 4}
    ref = train(load_config(str(write_cfg(tmp_path / "a", quickstart_run, steps=12, **kw)), fraction))
    log = [r for r in log_of(tmp_path / "a" / "out") if "train_loss" in r]
    assert [r["meco_prefix"] for r in log] == [True] * 6 + [False] * 6  # record "step" s is 0-based step s - 1
    train(load_config(str(write_cfg(tmp_path / "b", quickstart_run, steps=split, **kw)), by_step))
    mid = read_checkpoint(tmp_path / "b" / "out" / "checkpoint.pt")
    assert mid["loaders"][0]["conditioning"] is (split < 6)
    if split < 6:  # prefix tokens read ahead wait in the saved buffers, mask and all
        assert any(c["masked"] for c in mid["loaders"][0]["cursors"])
    resumed = train(load_config(str(write_cfg(tmp_path / "b", quickstart_run, steps=12, **kw)), by_step))
    assert resumed["step"] == 12 and resumed["train_loss"] == ref["train_loss"]
    a = read_checkpoint(tmp_path / "a" / "out" / "checkpoint.pt")
    b = read_checkpoint(tmp_path / "b" / "out" / "checkpoint.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["loaders"] == b["loaders"] and a["loaders"][0]["conditioning"] is False


def test_eval_sets_are_never_conditioned(quickstart_run: Path, tmp_path: Path) -> None:
    from training.train import eval_sets

    meco = {"template": TEMPLATE, "cooldown_fraction": 0.0}
    cfg = load_config(str(write_cfg(tmp_path, quickstart_run, eval_batches=2)), [f"data.meco={json.dumps(meco)}"])
    for batches in eval_sets(cfg, 0, 1).values():
        for x, y in batches:
            assert IGNORE_INDEX not in y
            assert b"URL: " not in bytes(int(t) for t in x.reshape(-1) if t < 256)
