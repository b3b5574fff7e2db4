"""Fuzz the WARC framing: cut points, bad header lines, wrong Content-Length, stray bytes, arbitrary bytes.

Properties: the reader never raises (with ``on_corrupt_file: quarantine``); every record is a document,
a skipped record or a quarantine row (``kept + quarantined + blank == lines``); every record the damage
did not touch is read; what was read can be written to Parquet. WET conversion records keep these
tests fast (no extraction process): their framing is the same as WARC responses'. One property runs
WARC responses with arbitrary HTTP heads and bodies through the real extractor.
"""

from __future__ import annotations

import gzip
import io
import itertools
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.io.readers import InputConfig, ReadBatch, read_documents
from curation.schema import QUARANTINE_SCHEMA, base_schema
from tests.curation.io.test_warc import Rec, warc_bytes

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TEXTS = st.text(st.characters(codec="utf-8"), max_size=60)
DAMAGE = st.sampled_from(["none", "none", "header", "length", "junk_after", "no_type"])


def conversions(texts: list[str]) -> tuple[list[bytes], list[str]]:
    """One WET conversion record per text; their bytes and record ids."""
    data, offsets = warc_bytes([Rec("conversion", f"https://e.org/{i}", t.encode(), n=i + 1,
                                    content_type="text/plain") for i, t in enumerate(texts)])
    bounds = offsets + [len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)], [f"urn:uuid:00000000-0000-0000-0000-{i + 1:012d}"
                                                            for i in range(len(texts))]


def read(tmp_path: Path, name: str, data: bytes, fmt: str = "wet") -> list[ReadBatch]:
    path = tmp_path / name
    path.write_bytes(data)
    cfg = InputConfig(paths=[str(path)], format=fmt, on_corrupt_file="quarantine", batch_size=3)  # type: ignore[arg-type]
    return list(read_documents(str(path), name, cfg))


def check(batches: list[ReadBatch]) -> list[dict[str, Any]]:
    """The accounting holds and everything read is writable; the documents."""
    for b in batches:
        assert len(b.table) + b.quarantined + b.blank == b.lines
        assert len(b.quarantine) == b.quarantined
    table = pa.concat_tables([base_schema().empty_table()] + [b.table for b in batches if b.table.num_columns])
    pq.write_table(table, io.BytesIO())
    quarantine = [q for b in batches for q in b.quarantine]
    pq.write_table(pa.Table.from_pylist(quarantine, schema=QUARANTINE_SCHEMA), io.BytesIO())
    return table.to_pylist()


def damage(record: bytes, kind: str, length: int) -> bytes:
    if kind == "header":  # a header line without a colon
        return record.replace(b"WARC-Date: ", b"WARC-Date ", 1)
    if kind == "no_type":
        return record.replace(b"WARC-Type: conversion\r\n", b"", 1)
    if kind == "length":
        start = record.index(b"Content-Length: ") + len(b"Content-Length: ")
        end = record.index(b"\r\n", start)
        return record[:start] + str(length).encode() + record[end:]
    if kind == "junk_after":
        return record + b"stray bytes, not a record\r\n"
    return record


@given(texts=st.lists(TEXTS, min_size=1, max_size=6), kinds=st.lists(DAMAGE, min_size=6, max_size=6),
       lengths=st.lists(st.integers(0, 2000) | st.sampled_from([10**12, 10**20]), min_size=6, max_size=6),
       gz=st.booleans())
@FUZZ
def test_records_the_damage_did_not_touch_are_all_read(tmp_path: Path, texts: list[str], kinds: list[str],
                                                       lengths: list[int], gz: bool) -> None:
    records, ids = conversions(texts)
    parts = [damage(r, k, n) for r, k, n in zip(records, kinds, lengths)]
    data = b"".join(parts)
    if gz:
        data = b"".join(gzip.compress(p, mtime=0) for p in parts)
    got = check(read(tmp_path, "f.warc.wet" + (".gz" if gz else ""), data))
    got_ids = [d["id"] for d in got]
    for rid, part, original in zip(ids, parts, records):
        intact = part == original or part.startswith(original)  # junk after a record leaves it intact
        # An intact record is read, unless a damaged record before it swallowed it whole (a wrong
        # Content-Length that happens to end right before a CRLF CRLF and a record): then it is in that text.
        if intact:
            assert rid in got_ids or any(rid in d["text"] for d in got), (rid, got_ids)


@given(texts=st.lists(TEXTS, min_size=1, max_size=5), cut=st.floats(0, 1))
@FUZZ
def test_a_plain_file_cut_anywhere_keeps_every_record_before_the_cut(tmp_path: Path, texts: list[str],
                                                                     cut: float) -> None:
    records, ids = conversions(texts)
    data = b"".join(records)
    at = int(cut * len(data))
    batches = read(tmp_path, "cut.warc.wet", data[:at])
    got = check(batches)
    ends = [sum(map(len, records[: i + 1])) - 4 for i in range(len(records))]  # where each block ends
    whole = [rid for rid, end in zip(ids, ends) if end <= at]
    assert [d["id"] for d in got] == whole
    starts = [0] + [e + 4 for e in ends]
    at_boundary = any(e <= at <= s for e, s in zip(ends, starts[1:])) or at == 0
    errors = [q["error"] for b in batches for q in b.quarantine]
    assert errors == ([] if at_boundary else [errors[0]])
    assert at_boundary or (errors[0].startswith("corrupt or truncated file (the stream ends inside") and
                           f"; {len(whole)} records read before it" in errors[0])


@given(texts=st.lists(TEXTS, min_size=1, max_size=5), cut=st.floats(0, 1))
@FUZZ
def test_a_gz_file_cut_anywhere_keeps_a_prefix_and_says_so(tmp_path: Path, texts: list[str], cut: float) -> None:
    records, ids = conversions(texts)
    members = [gzip.compress(r, mtime=0) for r in records]
    data = b"".join(members)
    at = int(cut * len(data))
    batches = read(tmp_path, "cut.warc.wet.gz", data[:at])
    got = [d["id"] for d in check(batches)]
    complete = sum(1 for i in range(len(members)) if sum(map(len, members[: i + 1])) <= at)
    assert got == ids[: len(got)] and len(got) >= complete  # a prefix, at least the members not cut
    errors = [q["error"] for b in batches for q in b.quarantine]
    at_boundary = at in {sum(map(len, members[:i])) for i in range(len(members) + 1)}
    assert len(errors) == (0 if at_boundary else 1)


PIECES = [b"WARC/1.0\r\n", b"WARC-Type: conversion\r\n", b"Content-Length: 5\r\n", b"Content-Length: x\r\n", b"\r\n",
          b"hello", b"\r\n\r\n", b"WARC/", b"\n", b"\x00\xff", b"Content-Length: 99999999999\r\n"]


@given(data=st.binary(max_size=400) | st.lists(st.sampled_from(PIECES), max_size=30).map(b"".join))
@FUZZ
def test_arbitrary_bytes_never_raise(tmp_path: Path, data: bytes) -> None:
    check(read(tmp_path, "any.warc.wet", data))


@given(heads=st.lists(st.binary(max_size=80) | st.sampled_from([
    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/html\r\n\r\n", b"HTTP/1.1 \r\n\r\n"]),
    min_size=1, max_size=4), bodies=st.lists(st.binary(max_size=200) | st.just(b"<html><p>x</p></html>"),
                                             min_size=4, max_size=4))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_responses_with_any_http_head_and_body_never_raise(tmp_path: Path, heads: list[bytes],
                                                           bodies: list[bytes]) -> None:
    # Written by hand: warcio's writer refuses a payload that is not an HTTP response, which is the point here.
    data = b"".join(b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:%d>\r\n"
                    b"WARC-Target-URI: https://e.org/%d\r\nContent-Type: application/http; msgtype=response\r\n"
                    b"Content-Length: %d\r\n\r\n%s\r\n\r\n" % (i, i, len(h + b), h + b)
                    for i, (h, b) in enumerate(zip(heads, bodies)))
    batches = read(tmp_path, "r.warc.gz", gzip.compress(data, mtime=0), fmt="warc")
    check(batches)
    assert sum(b.lines for b in batches) == len(heads)
