"""Fuzz: no input line, value, column type or truncation point makes the reader raise or lose count.

Every property checks the accounting ``kept + quarantined + blank == lines`` against a line count
computed independently from the bytes, and that what was kept can be written to Parquet (a lone
surrogate that slipped through would fail there).
"""

from __future__ import annotations

import gzip
import io
import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.io.linestream import Oversize, iter_lines
from curation.io.readers import CorruptInputError, InputConfig, ReadBatch, read_documents
from curation.schema import base_schema

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Strings including lone surrogates (category Cs), control characters and NUL.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
JSON_SCALARS = (st.none() | st.booleans() | st.floats(allow_nan=True, allow_infinity=True)
                | st.integers(min_value=-(10**40), max_value=10**40) | ANY_TEXT)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(ANY_TEXT, inner, max_size=3), max_leaves=8)
FIELDS = st.sampled_from(["text", "id", "domain", "url", "meta", "\ufefftext"])
RECORDS = st.dictionaries(FIELDS, JSON_VALUES, max_size=5) | st.fixed_dictionaries(
    {"text": ANY_TEXT}, optional={"id": JSON_SCALARS, "domain": JSON_VALUES, "url": JSON_VALUES, "m": JSON_VALUES})


def _encode(value: Any, ascii_only: bool) -> bytes:
    # ensure_ascii=True writes lone surrogates as \\udXXX escapes; False writes them raw, which
    # surrogatepass turns into bytes no strict UTF-8 decoder accepts.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


PATHOLOGICAL = st.sampled_from([
    b"[" * 100_000, b"{\"a\":" * 50_000, b"\xef\xbb\xbf{\"text\": \"bom\"}", b"\x00\x00", b"{\"text\": \"\x01\"}",
    b"{\"text\": \"x\", \"n\": " + b"9" * 5000 + b"}", b"{\"text\": \"x\", \"n\": NaN, \"i\": -Infinity}",
    b"{\"text\": \"a\", \"text\": 1}", b"{\"text\": \"\\ud800\"}", b"{\"text\": \"\\udc00\\ud800\"}",
    b"   ", b"\r", b"\xef\xbb\xbf", b"\xff\xfe{}", b"1e999", b"\"just a string\"",
    b"{\"text\": \"" + b"y" * 3000 + b"\"}",
])
LINES = st.lists(
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))
    | st.builds(_encode, RECORDS | JSON_VALUES, st.booleans())
    | PATHOLOGICAL,
    max_size=12,
)


def _write(path: Path, data: bytes, codec: str) -> Path:
    if codec == "gz":
        data = gzip.compress(data)
    elif codec == "zst":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def _expected_lines(data: bytes) -> int:
    return 0 if not data else data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def _read(path: Path, **kw: Any) -> list[ReadBatch]:
    return list(read_documents(str(path), path.name, InputConfig(paths=[str(path)], **kw)))


def _check_accounting(batches: list[ReadBatch], expected_lines: int | None = None) -> pa.Table:
    for b in batches:
        assert len(b.table) + b.quarantined + b.blank == b.lines
        assert all(q["line"] is None for q in b.quarantine) or len(b.quarantine) == b.quarantined
    table = pa.concat_tables([base_schema().empty_table()] + [b.table for b in batches if b.table.num_columns])
    if expected_lines is not None:
        assert sum(b.lines for b in batches) == expected_lines
    pq.write_table(table, io.BytesIO())  # Arrow-encodable all the way down
    for m in table.column("metadata").to_pylist():
        if m is not None:  # standard JSON: no NaN/Infinity tokens
            json.loads(m, parse_constant=lambda tok: pytest.fail(f"non-standard JSON token {tok} in metadata"))
    q = pa.Table.from_pylist([q for b in batches for q in b.quarantine])
    pq.write_table(q, io.BytesIO()) if q.num_rows else None
    return table


@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=6), cap=st.integers(1, 40))
@settings(max_examples=200, deadline=None)
def test_iter_lines_matches_split_for_any_chunking(data: bytes, cuts: list[int], cap: int) -> None:
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    chunks = [data[a:b] for a, b in zip(bounds, bounds[1:])]
    want = data.split(b"\n")
    if want and want[-1] == b"":
        want.pop()
    got = list(iter_lines(iter(chunks), cap))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if len(w) > cap:
            assert isinstance(g, Oversize) and g.size == len(w) and w.startswith(g.head) and len(g.head) <= 4096
        else:
            assert g == w


@pytest.mark.parametrize("codec", ["", "gz", "zst"])
@given(lines=LINES, trailing_newline=st.booleans(), cap=st.sampled_from([64, 1 << 20]), batch_size=st.integers(1, 5))
@FUZZ
def test_jsonl_any_lines_never_raise_and_all_are_counted(tmp_path: Path, codec: str, lines: list[bytes],
                                                         trailing_newline: bool, cap: int, batch_size: int) -> None:
    data = b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")
    path = _write(tmp_path / f"f.jsonl{'.' + codec if codec else ''}", data, codec)
    batches = _read(path, max_line_bytes=cap, batch_size=batch_size)
    table = _check_accounting(batches, _expected_lines(data))
    if codec:  # the codec changes nothing: same documents as the plain file
        plain = _check_accounting(_read(_write(tmp_path / "p.jsonl", data, ""), max_line_bytes=cap))
        assert table.drop_columns(["id", "source"]).equals(plain.drop_columns(["id", "source"]))
    for b in batches:
        for q in b.quarantine:
            assert q["file"] == path.name and 1 <= q["line"] <= len(lines) and q["error"]


# Column generators for Parquet: (arrow type, value strategy); names collide on purpose.
_COLUMN_KINDS = [
    (pa.string(), ANY_TEXT.map(lambda s: s.encode("utf-8", "replace").decode("utf-8"))),
    (pa.large_string(), st.text(max_size=8)),
    (pa.binary(), st.binary(max_size=8)),
    (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    (pa.float64(), st.floats(allow_nan=True, allow_infinity=True)),
    (pa.bool_(), st.booleans()),
    (pa.list_(pa.int32()), st.lists(st.integers(-5, 5), max_size=3)),
    (pa.struct([("a", pa.string()), ("b", pa.float32())]),
     st.fixed_dictionaries({"a": st.text(max_size=3), "b": st.floats(width=32)})),
    (pa.map_(pa.string(), pa.int8()), st.lists(st.tuples(st.text(max_size=3), st.integers(-5, 5)), max_size=2)),
    (pa.timestamp("us", tz="UTC"), st.integers(-(2**50), 2**50)),
    (pa.date32(), st.integers(-(2**31), 2**31 - 1)),  # most are outside Python's date range
    (pa.decimal128(10, 3), st.decimals(min_value=-999, max_value=999, places=3, allow_nan=False)),
    (pa.null(), st.none()),
    (pa.dictionary(pa.int8(), pa.string()), st.sampled_from(["x", "y"])),
]
COLUMN = st.tuples(st.sampled_from(["text", "id", "domain", "url", "extra", "text"]),
                   st.integers(0, len(_COLUMN_KINDS) - 1), st.booleans())


def _column(kind: int, values: list[Any], nullable: bool) -> pa.Array:
    dtype, _ = _COLUMN_KINDS[kind]
    if nullable:
        values = [None if i % 3 == 0 else v for i, v in enumerate(values)]
    if pa.types.is_dictionary(dtype):
        return pa.array(values, pa.string()).dictionary_encode()
    if pa.types.is_date32(dtype) or pa.types.is_timestamp(dtype):
        return pa.array(values, pa.int32() if pa.types.is_date32(dtype) else pa.int64()).cast(dtype)
    return pa.array(values, dtype)


@given(data=st.data(), columns=st.lists(COLUMN, max_size=5), rows=st.integers(0, 6), batch_size=st.integers(1, 4))
@FUZZ
def test_parquet_any_schema_never_raises_and_all_rows_are_counted(tmp_path: Path, data: st.DataObject,
                                                                  columns: list[tuple[str, int, bool]],
                                                                  rows: int, batch_size: int) -> None:
    arrays, names = [], []
    for name, kind, nullable in columns:
        values = data.draw(st.lists(_COLUMN_KINDS[kind][1], min_size=rows, max_size=rows))
        arrays.append(_column(kind, values, nullable))
        names.append(name)
    table = pa.Table.from_arrays(arrays, names=names) if arrays else pa.table({"x": pa.nulls(rows)})
    path = tmp_path / "f.parquet"
    pq.write_table(table, path)
    batches = _read(path, batch_size=batch_size)
    _check_accounting(batches, rows)


def _corpus(n: int) -> bytes:
    return b"".join(json.dumps({"id": str(i), "text": f"document {i} " + "w" * (i % 97)}).encode() + b"\n"
                    for i in range(n))


@pytest.mark.parametrize("codec", ["gz", "zst"])
@given(cut=st.floats(0.0, 1.0, exclude_max=True))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_truncated_stream_is_detected_at_any_cut(tmp_path: Path, codec: str, cut: float) -> None:
    data = _corpus(3000)
    full = _write(tmp_path / f"full.jsonl.{codec}", data, codec).read_bytes()
    path = tmp_path / f"cut.jsonl.{codec}"
    path.write_bytes(full[: max(1, math.floor(cut * len(full)))])
    with pytest.raises(CorruptInputError, match=str(path)):
        _read(path)
    batches = _read(path, on_corrupt_file="quarantine")
    kept = _check_accounting(batches).column("id").to_pylist()
    assert kept == [str(i) for i in range(len(kept))]  # a prefix of the file, nothing invented
    (q,) = [q for b in batches for q in b.quarantine]
    assert q["line"] == len(kept) + 1 and f"{len(kept)} lines read before it" in q["error"]
