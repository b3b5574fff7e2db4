"""``--format mds`` read back with MosaicML streaming's ``StreamingDataset`` (every document once, same text and
tokens, resumable), and ``--format jsonl`` in both compressions."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.curation.export.conftest import run_docs


@pytest.fixture(scope="module")
def streaming() -> Any:
    from curation.export.mds import import_streaming

    # No clean_stale_shared_memory(): it unlinks every streaming segment on the machine, other users' too.
    return import_streaming()


def _dataset(streaming: Any, out: Path, prefix: str) -> Any:
    return streaming.StreamingDataset(local=str(out / "mds" / prefix), shuffle=False, batch_size=1)


def test_mds_every_document_once_with_its_text_and_tokens(exported: Callable[..., Path], tiny_run: Path,
                                                         streaming: Any) -> None:
    out = exported("mds", tokenizer="bytes")
    m = json.loads((out / "export_manifest.json").read_text())
    docs = run_docs(tiny_run)
    seen = []
    for domain, info in m["domains"].items():
        ds = _dataset(streaming, out, info["prefix"])
        mine = [d for d in docs if d["domain"] == domain]
        assert ds.num_samples == len(mine) == info["documents"]
        samples = [ds[i] for i in range(ds.num_samples)]
        assert [s["id"] for s in samples] == [d["id"] for d in mine]  # export order = run order
        for s, d in zip(samples, mine):
            assert s["text"] == d["text"]
            assert s["tokens"].dtype.name == "uint16" and s["tokens"].tolist() == list(d["text"].encode())
        seen += [s["id"] for s in samples]
    assert sorted(seen) == sorted(d["id"] for d in docs) and len(seen) == len(set(seen)) == 15


def test_mds_state_dict_resumes_where_it_stopped(exported: Callable[..., Path], streaming: Any) -> None:
    out = exported("mds", tokenizer="bytes")
    web = [s["id"] for s in _dataset(streaming, out, "web")]
    assert web == ["w0", "w1", "w2", "w3", "w4", "w5"]
    first = _dataset(streaming, out, "web")
    it = iter(first)
    head = [next(it)["id"] for _ in range(4)]
    state = first.state_dict(num_samples=4, from_beginning=False)
    del it, first
    resumed = _dataset(streaming, out, "web")
    resumed.load_state_dict(state)
    assert head + [s["id"] for s in resumed] == web


def test_mds_zstd_compression(exported: Callable[..., Path], streaming: Any) -> None:
    out = exported("mds", tokenizer="bytes", compression="zstd")
    files = sorted(p.name for p in (out / "mds" / "books").rglob("*") if p.is_file())
    assert "shard.00000.mds.zstd" in files and "shard.00000.mds" not in files
    assert [s["id"] for s in _dataset(streaming, out, "books")] == ["b0", "b1", "b2", "b3"]


def _lines(path: Path) -> list[dict[str, Any]]:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(raw)
    else:
        import zstandard

        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw)).read()
    return [json.loads(line) for line in data.decode().splitlines()]


@pytest.mark.parametrize("compression,ext", [("zstd", "zst"), ("gzip", "gz")])
def test_jsonl_lines_are_the_run_documents(exported: Callable[..., Path], tiny_run: Path, compression: str,
                                           ext: str) -> None:
    out = exported("jsonl", tokenizer="bytes", compression=compression)
    docs = run_docs(tiny_run)
    m = json.loads((out / "export_manifest.json").read_text())
    for domain, info in m["domains"].items():
        files = sorted((out / "jsonl" / info["prefix"]).iterdir())
        assert files and all(f.name.endswith(f".jsonl.{ext}") for f in files)
        lines = [rec for f in files for rec in _lines(f)]
        mine = [d for d in docs if d["domain"] == domain]
        assert [(r["id"], r["text"], r["domain"], r["source"]) for r in lines] == \
               [(d["id"], d["text"], d["domain"], d["source"]) for d in mine]
        assert [r["n_tokens"] for r in lines] == [len(d["text"].encode()) for d in mine]
        assert [r.get("url") for r in lines] == [d["url"] for d in mine]
    web = _lines(sorted((out / "jsonl" / "web").iterdir())[0])[0]
    assert web == {"text": web["text"], "id": "w0", "domain": "web", "source": "a.jsonl", "url": "https://w/0",
                   "n_tokens": len(web["text"].encode())}
