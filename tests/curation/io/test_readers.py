"""Readers: formats, ids, and bad input quarantined with file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.io.readers import InputConfig, read_documents
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
