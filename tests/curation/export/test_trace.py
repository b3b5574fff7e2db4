"""``curate trace``: an export consumed by the reference sampler, traced back to the right documents.

The expected ids are computed here without the export's code: tokens and document boundaries from megatron-core's
``IndexedDataset``, the blend order from megatron-core's compiled ``build_blending_indices``, ids from the run's
Parquet shards read with pyarrow.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from curation.export.trace import sources, trace
from tests.curation.export.conftest import curate, import_megatron, run_docs

SEQ = 32


@pytest.fixture(scope="module")
def weighted(exported: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    mix = tmp_path_factory.mktemp("mix") / "mix.yaml"
    mix.write_text("ratios: {web: 2, books: 1, code/x: 1}\n")
    return exported("megatron", weights=str(mix))


def _consumer(out: Path, run: Path) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray, list[str]]]]:
    """Per domain: (the stream read from the .bin, document end offsets, ids from the run) and the blend's domains."""
    IndexedDataset = import_megatron().indexed_dataset.IndexedDataset
    m = json.loads((out / "export_manifest.json").read_text())
    docs = run_docs(run)
    streams = {}
    for domain, info in m["domains"].items():
        ds = IndexedDataset(str(out / "megatron" / info["prefix"]))
        tokens = np.concatenate([ds[i] for i in range(len(ds))])
        streams[domain] = (tokens, np.cumsum(ds.sequence_lengths), [d["id"] for d in docs if d["domain"] == domain])
    return list(m["mixture"]["weights"]), streams


def _expected(out: Path, run: Path, step: int, batch: int) -> list[tuple[str, list[str], np.ndarray]]:
    """(domain, ids, tokens) of each sample of ``step``: the reference sampler written out independently."""
    mc = import_megatron()
    helpers_cpp, normalize = mc.helpers_cpp, mc.utils.normalize
    m = json.loads((out / "export_manifest.json").read_text())
    order, streams = _consumer(out, run)
    weights = np.array(normalize([m["mixture"]["weights"][d] for d in order]), dtype=np.float64)
    size = (step + 1) * batch
    which, draw = np.zeros(size, np.int16), np.zeros(size, np.int64)
    helpers_cpp.build_blending_indices(which, draw, weights, len(order), size, False)
    out_rows = []
    for i in range(step * batch, size):
        domain = order[which[i]]
        tokens, ends, ids = streams[domain]
        k = int(draw[i]) % ((len(tokens) - 1) // SEQ)
        a, b = k * SEQ, k * SEQ + SEQ + 1
        starts = np.concatenate([[0], ends[:-1]])
        hit = [ids[j] for j in range(len(ids)) if starts[j] < b and ends[j] > a]
        out_rows.append((domain, hit, tokens[a:b]))
    return out_rows


@pytest.mark.parametrize("step", [0, 3, 11])
def test_trace_names_the_documents_the_reference_sampler_read(weighted: Path, tiny_run: Path, step: int) -> None:
    batch = 4
    got = trace(weighted, step, batch, SEQ)
    want = _expected(weighted, tiny_run, step, batch)
    assert [s.sample for s in got] == list(range(step * batch, (step + 1) * batch))
    assert [(s.domain, [d.id for d in s.docs]) for s in got] == [(d, ids) for d, ids, _ in want]
    for s, (_, _, tokens) in zip(got, want):
        assert len(tokens) == SEQ + 1 and sum(d.tokens for d in s.docs) == SEQ + 1  # every token is a document's
    if step == 11:  # code/x (152 tokens, 4 samples) was drawn more often than it has samples: a second epoch
        assert any(s.epoch == 1 for s in got)


def test_trace_of_one_prefix_with_the_bytes_tokenizer(exported: Callable[..., Path], tiny_run: Path) -> None:
    """Exact ids by hand: books' documents are their UTF-8 bytes + EOD, so the windows are plain arithmetic."""
    out = exported("megatron", tokenizer="bytes")
    books = [d for d in run_docs(tiny_run) if d["domain"] == "books"]
    ends = np.cumsum([len(d["text"].encode()) + 1 for d in books])
    assert ends.tolist() == [577, 1153, 1713, 2290]  # 2,290 tokens: (2290 - 1) // 100 = 22 samples
    got = trace(out, 2, 3, 100, prefix="books")  # samples 6, 7, 8: tokens [600, 701), [700, 801), [800, 901)
    assert [[d.id for d in s.docs] for s in got] == [["b1"], ["b1"], ["b1"]]
    got = trace(out, 3, 3, 100, prefix="books")  # [900, 1001), [1000, 1101), [1100, 1201): b1 ends at 1153
    assert [[(d.id, d.tokens) for d in s.docs] for s in got] == [[("b1", 101)], [("b1", 101)],
                                                                  [("b1", 53), ("b2", 48)]]
    assert got[2].docs[1].shard == books[2]["_shard"] and got[2].docs[1].row == books[2]["_row"]
    got = trace(out, 7, 3, 100, prefix="books")  # samples 21, 22, 23: 22 and 23 are samples 0 and 1 of epoch 1
    assert [(s.prefix_sample, s.epoch, [d.id for d in s.docs]) for s in got] == \
           [(21, 0, ["b3"]), (0, 1, ["b0"]), (1, 1, ["b0"])]


def test_sources_come_from_the_run_tables(weighted: Path, tiny_run: Path) -> None:
    docs = {d["id"]: d for d in run_docs(tiny_run)}
    found = sources(weighted, ["w1", "c2", "nope"])
    assert set(found) == {"w1", "c2"}
    assert found["w1"]["source"] == "a.jsonl" and found["w1"]["url"] == "https://w/1"
    assert found["w1"]["dropped_as_duplicates"] == 1  # w_dup, dropped by exact_dedup_v1 with dup_of w1
    assert found["c2"]["dropped_as_duplicates"] == 0 and found["c2"]["domain"] == "code/x"
    assert found["w1"]["score_r"] == docs["w1"]["score_r"] and found["c2"]["score_r"] == docs["c2"]["score_r"]


def test_cli_trace_json_and_lines(weighted: Path, tiny_run: Path) -> None:
    r = curate("trace", weighted, "--step", "3", "--batch-size", "4", "--seq-len", str(SEQ), "--json")
    assert r.exit_code == 0, r.output
    rows: list[dict[str, Any]] = json.loads(r.output)
    want = _expected(weighted, tiny_run, 3, 4)
    assert [[d["id"] for d in row["docs"]] for row in rows] == [ids for _, ids, _ in want]
    first = rows[0]["docs"][0]
    assert first["source"]["source"] in ("a.jsonl", "b.jsonl") and "score_r" in first["source"]
    r = curate("trace", weighted, "--step", "3", "--batch-size", "4", "--seq-len", str(SEQ))
    assert r.exit_code == 0 and r.output.splitlines()[1].startswith("sample 12: ")
    assert f"  {want[0][1][0]}  " in r.output


def test_trace_refusals_are_one_line(weighted: Path, tmp_path: Path) -> None:
    for args, words in [(["--prefix", "nope"], "'nope' is no prefix of this export"),
                        (["--seq-len", "100000"], "fewer than seq_len + 1"),
                        (["--blend", "1 web 2"], "expected 'w1 prefix1 w2 prefix2 ...'")]:
        base = ["trace", weighted, "--step", "0", "--batch-size", "2"]
        r = curate(*base, *(["--seq-len", "8"] if "--seq-len" not in args else []), *args)
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and words in r.output, r.output
    r = curate("trace", tmp_path, "--step", "0", "--batch-size", "2", "--seq-len", "8")
    assert r.exit_code == 2 and "not a finished export" in r.output
