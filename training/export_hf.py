"""Export a ``train`` checkpoint (training/model.py's GPT) as a Hugging Face GPT-2 directory.

    train export-hf runs/train-tiny/checkpoint.pt runs/train-tiny/hf

Why: the curation stages that score documents with a language model (``lm_loss_v1`` for PreSelect)
load models with ``AutoModelForCausalLM``. Exporting lets a model trained by ``train`` on a run's
shards score the next curation run, which closes the loop from training back to curation.

The GPT here is GPT-2's architecture up to three details, all mapped exactly: the MLP uses exact
GELU (``activation_function: gelu``), linear layers store ``(out, in)`` weights where GPT-2's Conv1D
stores ``(in, out)`` (transposed on export), and the output head has no bias and is tied to the
token embedding (GPT-2's is too). Only the byte tokenizer is supported: the export writes a
byte-level tokenizer whose ids are the byte values 0..255 and whose BOS/EOS is 256, the document
separator the loader packs between documents (so ``lm_loss_v1`` prepends what the model saw
before every document in training). ``n_positions`` is the training ``seq_len``: score with
``block_size`` at most that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.checkpoint import read_checkpoint

EOS_TOKEN = "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table, the one the ``tokenizers`` ByteLevel step uses."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def byte_tokenizer() -> Any:
    """A ``PreTrainedTokenizerFast`` with ids = UTF-8 byte values and ``<|endoftext|>`` = 256."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # ByteLevel maps each byte to one printable character; a BPE with no merges then gives one id
    # per byte, and this vocabulary makes that id the byte value itself.
    vocab = {ch: b for b, ch in bytes_to_unicode().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS_TOKEN])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN)


def export_hf(checkpoint: str | Path, out: str | Path) -> dict[str, Any]:
    """Write ``config.json``, the weights and the tokenizer of ``checkpoint`` into ``out``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    ckpt = read_checkpoint(checkpoint, map_location="cpu")
    cfg = ckpt["config"]
    if cfg["data"]["tokenizer"] != "bytes":
        raise ValueError(f"{checkpoint}: data.tokenizer is {cfg['data']['tokenizer']!r}; export-hf supports 'bytes' only")
    m = cfg["model"]
    sd = ckpt["model"]
    if sd["tok.weight"].shape[0] != 257:
        raise ValueError(f"{checkpoint}: vocabulary of {sd['tok.weight'].shape[0]} tokens, the byte tokenizer has 257")
    hf_cfg = GPT2Config(vocab_size=257, n_positions=m["seq_len"], n_embd=m["d_model"], n_layer=m["n_layer"],
                        n_head=m["n_head"], activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, layer_norm_epsilon=1e-5, bos_token_id=256, eos_token_id=256,
                        tie_word_embeddings=True)
    model = GPT2LMHeadModel(hf_cfg)
    new: dict[str, torch.Tensor] = {"transformer.wte.weight": sd["tok.weight"], "transformer.wpe.weight": sd["pos.weight"],
                                    "transformer.ln_f.weight": sd["ln_f.weight"], "transformer.ln_f.bias": sd["ln_f.bias"],
                                    "lm_head.weight": sd["tok.weight"]}
    pairs = {"ln_1": "ln1", "ln_2": "ln2"}
    linears = {"attn.c_attn": "qkv", "attn.c_proj": "proj", "mlp.c_fc": "mlp.0", "mlp.c_proj": "mlp.2"}
    for i in range(m["n_layer"]):
        for hf, ours in pairs.items():
            for p in ("weight", "bias"):
                new[f"transformer.h.{i}.{hf}.{p}"] = sd[f"blocks.{i}.{ours}.{p}"]
        for hf, ours in linears.items():
            new[f"transformer.h.{i}.{hf}.weight"] = sd[f"blocks.{i}.{ours}.weight"].t().contiguous()
            new[f"transformer.h.{i}.{hf}.bias"] = sd[f"blocks.{i}.{ours}.bias"]
    missing, unexpected = model.load_state_dict(new, strict=False)
    # GPT-2 keeps a causal-mask buffer in some transformers versions; no parameter may be left out.
    left = [k for k in missing if not k.endswith(("attn.bias", "attn.masked_bias"))]
    if left or unexpected:
        raise ValueError(f"{checkpoint}: weights do not map onto GPT-2 (missing {left}, unexpected {unexpected})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out)
    byte_tokenizer().save_pretrained(out)
    return {"out": str(out), "step": int(ckpt["step"]), "n_positions": m["seq_len"],
            "parameters": sum(p.numel() for p in model.parameters())}
