"""Readers: formats, ids, and bad input quarantined with file, line and field."""

from __future__ import annotations

import gzip
import io
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.io.readers import CorruptInputError, InputConfig, read_documents
from tests.conftest import write_jsonl


def read_all(path: Path, **kw: object) -> tuple[pa.Table, list[dict], int, int]:
    cfg = InputConfig(paths=[str(path)], **kw)
    batches = list(read_documents(str(path), path.name, cfg))
    table = pa.concat_tables([b.table for b in batches])
    return table, [q for b in batches for q in b.quarantine], sum(b.lines for b in batches), sum(b.blank for b in batches)


@pytest.mark.parametrize("compress", [None, "gz", "zst"])
def test_jsonl_formats_ids_and_metadata(tmp_path: Path, compress: str | None) -> None:
    suffix = {None: "", "gz": ".gz", "zst": ".zst"}[compress]
    path = write_jsonl(tmp_path / f"x.jsonl{suffix}", [
        {"id": 7, "text": "hello", "url": "https://a.org", "lang": "en", "score": 0.5},
        {"text": "no id here", "domain": "books"},
    ], compress=compress)
    table, q, lines, _ = read_all(path, batch_size=1)
    assert q == [] and lines == 2
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == ["7", "x.jsonl" + suffix + ":2"]
    assert rows[0]["url"] == "https://a.org" and rows[1]["url"] is None
    assert [r["domain"] for r in rows] == ["default", "books"]
    assert json.loads(rows[0]["metadata"]) == {"lang": "en", "score": 0.5}
    assert [r["n_chars"] for r in rows] == [5, 10]


def test_malformed_lines_are_quarantined_and_good_lines_kept(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [
        {"text": "good one"},
        '{"text": "truncated',
        '["an", "array"]',
        '{"text": "trailing"} garbage',
        "",
        {"text": "good two"},
        {"txt": "wrong field"},
        {"text": 42},
        {"text": None},
    ])
    table, q, lines, blank = read_all(path)
    assert table.column("text").to_pylist() == ["good one", "good two", ""]
    assert lines == 9 and blank == 1
    got = [(e["line"], e["field"], e["error"].split(":")[0]) for e in q]
    assert got == [
        (2, None, "malformed JSON"),
        (3, None, "expected a JSON object, got list"),
        (4, None, "malformed JSON"),
        (7, "text", "missing field 'text'"),
        (8, "text", "field 'text' is int, expected a string"),
    ]
    assert all(e["file"] == "bad.jsonl" for e in q)
    assert q[0]["raw"] == '{"text": "truncated'


def test_invalid_utf8_loses_only_its_line(tmp_path: Path) -> None:
    lines = [json.dumps({"text": f"line {i}"}).encode() for i in range(1, 11)]
    lines[2] = b'{"text": "bad \xff byte"}'
    path = write_jsonl(tmp_path / "utf.jsonl", lines)
    table, q, _, _ = read_all(path)
    assert table.column("text").to_pylist() == [f"line {i}" for i in (1, 2, 4, 5, 6, 7, 8, 9, 10)]
    assert len(q) == 1 and q[0]["line"] == 3 and q[0]["error"].startswith("invalid UTF-8")


def test_parquet_schema_drift(tmp_path: Path) -> None:
    pq.write_table(pa.table({"text": ["a1", "a2"], "score": pa.array([1, 2], pa.int64())}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"text": ["b1"], "score": [1.5], "extra": ["x"]}), tmp_path / "b.parquet")
    pq.write_table(pa.table({"text": ["c1"]}), tmp_path / "c.parquet")
    seen = []
    for name in ("a", "b", "c"):
        table, q, _, _ = read_all(tmp_path / f"{name}.parquet")
        assert q == []
        seen += [(r["id"], r["text"], json.loads(r["metadata"]) if r["metadata"] else None) for r in table.to_pylist()]
    assert seen == [
        ("a.parquet:1", "a1", {"score": 1}), ("a.parquet:2", "a2", {"score": 2}),
        ("b.parquet:1", "b1", {"extra": "x", "score": 1.5}), ("c.parquet:1", "c1", None),
    ]


def test_parquet_without_text_column_is_quarantined_whole(tmp_path: Path) -> None:
    pq.write_table(pa.table({"body": ["x", "y", "z"]}), tmp_path / "nope.parquet")
    table, q, lines, _ = read_all(tmp_path / "nope.parquet")
    assert len(table) == 0 and lines == 3
    assert len(q) == 1 and q[0]["line"] is None and q[0]["field"] == "text"
    assert "missing column 'text' (3 rows)" in q[0]["error"]


def test_parquet_with_non_string_text_is_quarantined(tmp_path: Path) -> None:
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints.parquet")
    _, q, _, _ = read_all(tmp_path / "ints.parquet")
    assert "has type int64, expected string" in q[0]["error"]


def test_unknown_extension_needs_format(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.txt", [{"text": "a"}])
    with pytest.raises(ValueError, match="set input.format"):
        read_all(path)
    table, _, _, _ = read_all(path, format="jsonl")
    assert len(table) == 1


# --- pathological lines: each is read or quarantined naming its field, and the file goes on ---

@pytest.mark.parametrize(("line", "field", "error"), [
    (b"[" * 100_000, None, "malformed JSON: nesting too deep"),
    (b'{"text": "a\\ud800b"}', "text", "field 'text' holds an unpaired UTF-16 surrogate \\ud800 at character 1"),
    (b'{"text": "ok", "id": "\\udc00"}', "id", "field 'id' holds an unpaired UTF-16 surrogate \\udc00"),
    (b'{"text": "ok", "domain": "d\\udbff"}', "domain", "field 'domain' holds an unpaired"),
    (b'{"text": "ok", "note": ["\\ud800"]}', "note",
     "field 'note' holds an unpaired UTF-16 surrogate \\ud800 in its key"),
    (b'{"text": "ok", "n": ' + b"9" * 5000 + b"}", None, "malformed JSON: Exceeds the limit (4300 digits)"),
    (b'{"text": "nul \x00"}', None, "malformed JSON: Invalid control character"),
    (b'{"text": "ok", "id": [1, 2]}', "id", "field 'id' is list, expected a string or a number"),
    (b'{"text": "ok", "id": true}', "id", "field 'id' is bool, expected a string or a number"),
    (b'{"text": "ok", "url": {"a": 1}}', "url", "field 'url' is dict, expected a string or a number"),
    (b'{"text": "ok", "id": NaN}', "id", "field 'id' is nan, expected a string or a finite number"),
    (b'{"text": ["a"]}', "text", "field 'text' is list, expected a string"),
    (b"null", None, "expected a JSON object, got NoneType"),
    (b"1e999", None, "expected a JSON object, got float"),
])
def test_pathological_line_is_quarantined_naming_the_field(tmp_path: Path, line: bytes, field: str | None,
                                                           error: str) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"text": "before"}, line, {"text": "after"}])
    table, q, lines, _ = read_all(path)
    assert table.column("text").to_pylist() == ["before", "after"] and lines == 3
    assert [(e["line"], e["field"]) for e in q] == [(2, field)]
    assert q[0]["error"].startswith(error), q[0]["error"]


def test_lone_surrogate_batch_stays_writable_and_pairs_are_kept(tmp_path: Path) -> None:
    # Before: the lone surrogate reached pa.table() and the whole batch (and run) failed.
    path = write_jsonl(tmp_path / "s.jsonl", [b'{"text": "pair \\ud83d\\ude00"}', b'{"text": "lone \\ud83d"}',
                                             b'{"text": "fine", "k\\udfff": 1}', {"text": "plain"}])
    table, q, _, _ = read_all(path)
    assert table.column("text").to_pylist() == ["pair \U0001f600", "plain"]
    assert [(e["line"], e["field"]) for e in q] == [(2, "text"), (3, "k\\udfff")]
    pq.write_table(pa.Table.from_pylist(q), tmp_path / "q.parquet")  # the quarantine rows encode too
    pq.write_table(table, tmp_path / "t.parquet")


def test_bom_nan_and_duplicate_keys_are_read(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "b.jsonl", [
        b'\xef\xbb\xbf{"text": "bom"}', b"\xef\xbb\xbf", b'{"text": "nan", "s": NaN, "t": [Infinity, -Infinity]}',
        b'{"text": "first", "text": "last"}'])
    table, q, lines, blank = read_all(path)
    assert q == [] and lines == 4 and blank == 1
    assert table.column("text").to_pylist() == ["bom", "nan", "last"]  # duplicate key: the last one wins
    # metadata stays standard JSON: non-finite numbers become strings instead of NaN tokens
    assert json.loads(table.column("metadata")[1].as_py(), parse_constant=pytest.fail) == {
        "s": "NaN", "t": ["Infinity", "-Infinity"]}


@pytest.mark.parametrize("compress", [None, "gz"])
def test_huge_line_is_quarantined_without_holding_it(tmp_path: Path, compress: str | None) -> None:
    import tracemalloc

    size = 40 * 1024 * 1024  # one 40 MB line with no newline inside; the cap is 1 MiB
    huge = b'{"text": "' + b"x" * size + b'"}'
    path = write_jsonl(tmp_path / f"h.jsonl{'.gz' if compress else ''}", [{"text": "a"}, huge, {"text": "b"}],
                       compress=compress)
    tracemalloc.start()
    try:
        table, q, lines, _ = read_all(path, max_line_bytes=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert table.column("text").to_pylist() == ["a", "b"] and lines == 3
    assert len(q) == 1 and q[0]["line"] == 2
    assert f"line is {len(huge)} bytes, over input.max_line_bytes" in q[0]["error"]
    assert q[0]["raw"].startswith('{"text": "xxx') and len(q[0]["raw"]) == 1000
    assert peak < 12 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB while reading a line over the cap"


def test_line_exactly_at_the_cap_is_read(tmp_path: Path) -> None:
    line = json.dumps({"text": "y" * 100}).encode()
    path = write_jsonl(tmp_path / "c.jsonl", [line, line + b" "])
    table, q, _, _ = read_all(path, max_line_bytes=len(line))
    assert len(table) == 1 and [e["line"] for e in q] == [2]


def test_input_config_validates_new_fields() -> None:
    from curation.config import from_dict
    from curation.errors import ConfigError

    cfg = InputConfig(paths=["x"])
    assert cfg.on_corrupt_file == "fail" and cfg.max_line_bytes == 64 * 1024 * 1024
    with pytest.raises(ConfigError, match=r"on_corrupt_file: 'skip' is not one of \['fail', 'quarantine'\]"):
        from_dict(InputConfig, {"paths": ["x"], "on_corrupt_file": "skip"})
    with pytest.raises(ValueError, match="max_line_bytes must be >= 1"):
        InputConfig(paths=["x"], max_line_bytes=0)


# --- corrupt or truncated files: fail naming the file, or keep the readable part and count the rest ---

def _docs(n: int) -> list[dict]:
    return [{"id": f"d{i}", "text": f"document number {i} " + "z" * (i % 50)} for i in range(n)]


def _truncated_gz(tmp_path: Path) -> Path:
    path = write_jsonl(tmp_path / "t.jsonl.gz", _docs(4000), compress="gz")
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) * 2 // 3])
    return path


def _truncated_zst(tmp_path: Path) -> Path:
    path = write_jsonl(tmp_path / "t.jsonl.zst", _docs(4000), compress="zst")
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) * 2 // 3])
    return path


def _garbled_gz(tmp_path: Path) -> Path:
    path = write_jsonl(tmp_path / "g.jsonl.gz", _docs(4000), compress="gz")
    blob = bytearray(path.read_bytes())
    mid = len(blob) // 2
    blob[mid: mid + 64] = bytes(range(64, 128))  # a damaged stretch in the middle of the deflate stream
    path.write_bytes(bytes(blob))
    return path


def _truncated_parquet(tmp_path: Path) -> Path:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": [d["id"] for d in _docs(4000)], "text": [d["text"] for d in _docs(4000)]}),
                   path, row_group_size=500)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])  # the footer is gone: no row can be located
    return path


def _damaged_parquet_page(tmp_path: Path) -> Path:
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": [d["text"] for d in _docs(4000)]}), path, row_group_size=500, compression="none")
    offset = pq.read_metadata(path).row_group(5).column(0).data_page_offset
    blob = bytearray(path.read_bytes())
    blob[offset: offset + 32] = b"\xff" * 32  # row group 5's page header is garbage; the footer is intact
    path.write_bytes(bytes(blob))
    return path


@pytest.mark.parametrize(("make", "unit", "min_kept"), [
    (_truncated_gz, "line", 1000), (_truncated_zst, "line", 1000), (_garbled_gz, "line", 1000),
    (_truncated_parquet, "row", 0), (_damaged_parquet_page, "row", 2000),
])
def test_corrupt_file_fails_by_default_and_is_counted_in_quarantine_mode(tmp_path: Path, make: Any, unit: str,
                                                                         min_kept: int) -> None:
    path = make(tmp_path)
    match = rf"{re.escape(str(path))}: corrupt or truncated file after {unit} \d+"
    with pytest.raises(CorruptInputError, match=match):
        read_all(path)
    table, q, lines, _ = read_all(path, on_corrupt_file="quarantine")
    corrupt = [e for e in q if e["error"].startswith("corrupt or truncated file")]
    assert len(corrupt) == 1 and corrupt[0]["file"] == path.name
    read = corrupt[0]["line"] - 1
    assert f"; {read} {unit}s read before it; the rest of the file is lost" in corrupt[0]["error"]
    assert lines == read + 1 and len(table) + len(q) == lines  # every line read is kept or quarantined
    assert len(table) >= min_kept
    if make is not _garbled_gz:  # kept documents are the file's first ones, unchanged
        assert table.column("text").to_pylist() == [d["text"] for d in _docs(len(table))]


def test_transport_error_is_not_taken_for_corruption() -> None:
    from curation.io.linestream import TrackedFile, _checked_chunks

    class Flaky(io.BytesIO):
        def read(self, size: int = -1) -> bytes:
            raise ConnectionError("connection reset by peer")

    raw = TrackedFile(Flaky(b"x"))
    with pytest.raises(ConnectionError):  # not StreamCorrupt: a retry may succeed, quarantining would lose data
        list(_checked_chunks(gzip.GzipFile(fileobj=raw, mode="rb"), raw, 1024))


@pytest.mark.parametrize("mode", ["fail", "quarantine"])
def test_truncated_input_through_a_local_run(tmp_path: Path, mode: str) -> None:
    from curation.errors import ShardError
    from tests.conftest import PROSE, pipeline_dict
    from tests.curation.executors.runs import run_pipeline

    d = tmp_path / "in"
    write_jsonl(d / "ok.jsonl", [{"id": "ok", "text": PROSE[0]}])
    docs = [{"id": f"t{i}", "text": PROSE[i % len(PROSE)] + f" {i}"} for i in range(3000)]
    path = write_jsonl(d / "cut.jsonl.gz", docs, compress="gz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 3 // 4])
    cfg = pipeline_dict([str(d / "*")], tmp_path / "run", stages=[])
    cfg["input"]["on_corrupt_file"] = mode
    if mode == "fail":
        with pytest.raises(ShardError, match=r"cut.jsonl.gz: corrupt or truncated file after line \d+"):
            run_pipeline(cfg)
        return
    m = run_pipeline(cfg).manifest
    q = pq.read_table(tmp_path / "run" / "quarantine").to_pylist()
    assert len(q) == 1 and q[0]["file"] == "cut.jsonl.gz"
    read = q[0]["line"] - 1
    assert 1000 < read < 3000 and f"{read} lines read before it" in q[0]["error"]
    assert m["totals"]["docs_out"] == read + 1 and m["totals"]["quarantined"] == 1
    assert m["totals"]["lines"] == 1 + read + 1  # ok.jsonl, the lines read, the corruption row


def test_corrupt_file_counts_as_one_malformed_line_toward_the_threshold(tmp_path: Path) -> None:
    # Nothing of a footer-less Parquet file is readable: 1 of 1 lines is malformed, over the default 0.5.
    from curation.errors import ShardError
    from tests.conftest import pipeline_dict
    from tests.curation.executors.runs import run_pipeline

    (tmp_path / "in").mkdir()
    _truncated_parquet(tmp_path / "in")
    cfg = pipeline_dict([str(tmp_path / "in" / "*")], tmp_path / "run", stages=[])
    cfg["input"]["on_corrupt_file"] = "quarantine"
    with pytest.raises(ShardError, match=r"t.parquet: 1 of 1 lines are malformed, over input.max_malformed_fraction"):
        run_pipeline(cfg)
    cfg["input"]["max_malformed_fraction"] = 1.0
    cfg["output"]["dir"] = str(tmp_path / "run2")
    m = run_pipeline(cfg).manifest
    assert m["totals"]["quarantined"] == 1 and m["totals"]["lines"] == 1 and m["totals"]["docs_out"] == 0


def test_parquet_without_the_text_column_counts_toward_the_malformed_threshold(tmp_path: Path) -> None:
    """A Parquet file with no usable text column is quarantined whole; all its rows count as malformed, so the
    default threshold fails the run naming the file instead of finishing without its documents."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation.errors import ShardError
    from tests.conftest import pipeline_dict
    from tests.curation.executors.runs import run_pipeline

    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"id": ["a", "b", "c"], "body": ["x" * 50] * 3}), src / "notext.parquet")
    cfg = pipeline_dict([str(src / "*.parquet")], tmp_path / "out", [{"stage": "text_length_v1", "min_chars": 1}])
    with pytest.raises(ShardError, match=r"notext\.parquet: 3 of 3 lines are malformed"):
        run_pipeline(cfg)
    lenient = pipeline_dict([str(src / "*.parquet")], tmp_path / "out2", [{"stage": "text_length_v1", "min_chars": 1}])
    lenient["input"]["max_malformed_fraction"] = 1.0
    res = run_pipeline(lenient)
    assert res.manifest["totals"]["docs_out"] == 0
