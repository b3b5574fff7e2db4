"""Readers: JSONL (plain, .gz, .zst, .bz2, .xz), Parquet and crawl archives (WARC, WET, HTML files;
``curation.io.web``), local paths or fsspec URLs, into document batches.

No input line can fail a run, and none is dropped silently: a line that is over
``max_line_bytes``, not UTF-8, not JSON (including nesting too deep or a number too long), not an
object, or whose text/id/domain/url field has an unusable type or a lone surrogate becomes a
quarantine row naming file, line and field, and is counted; the rest of the file goes on. Each
line is decoded on its own, so one bad byte loses only its line. A leading byte-order mark is
stripped. A duplicate key keeps its last value, as every JSON parser in Python does.

A corrupt or truncated file (compressed stream or Parquet) fails the run naming the file, or with
``on_corrupt_file: quarantine`` keeps what was readable and adds one quarantine row whose ``line``
is the first line not read and whose error says how many lines were read before the damage.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from curation.io.linestream import Oversize, StreamCorrupt, TrackedFile, iter_lines, open_chunks
# InputConfig, ReadBatch and CorruptInputError are this module's public names too (readers' callers import them here).
from curation.io.read_batch import (_RAW_EXCERPT, Builder, CorruptInputError, InputConfig, ReadBatch,  # noqa: F401
                                    corrupt_row, quarantine_row)
from curation.io.records import BadRecord, may_hold_surrogates, normalise
from curation.schema import base_schema

_BOM = b"\xef\xbb\xbf"


def detect_format(path: str, configured: str) -> str:
    if configured != "auto":
        return configured
    name = path.lower()
    for ext in (".gz", ".zst", ".zstd", ".bz2", ".xz"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".warc"):
        return "warc"
    if name.endswith(".wet"):
        return "wet"
    if name.endswith((".html", ".htm")):
        return "html"
    raise ValueError(f"{path}: cannot tell the format from the extension; set input.format")


def read_documents(path: str, source: str, cfg: InputConfig) -> Iterator[ReadBatch]:
    """Yield normalised document batches from one input file."""
    fmt = detect_format(path, cfg.format)
    if fmt in ("warc", "wet", "html"):
        from curation.io.web import read_web  # (lazily: the web readers' dependencies load only for web inputs)

        yield from read_web(path, source, cfg, fmt)
        return
    reader = _read_jsonl if fmt == "jsonl" else _read_parquet
    yield from reader(path, source, cfg)


def _parse_line(line: bytes, source: str, line_no: int, cfg: InputConfig) -> dict[str, Any]:
    """One non-blank JSONL line as a base-schema row; raises BadRecord for anything unusable."""
    try:
        record = json.loads(line.decode("utf-8"))  # strict: one bad byte loses this line only
    except UnicodeDecodeError as exc:
        raise BadRecord(None, f"invalid UTF-8: {exc.reason} at byte {exc.start}") from exc
    except json.JSONDecodeError as exc:
        raise BadRecord(None, f"malformed JSON: {exc.msg} at column {exc.colno}") from exc
    except ValueError as exc:  # e.g. an integer over Python's 4300-digit conversion limit
        raise BadRecord(None, f"malformed JSON: {exc}") from exc
    except RecursionError as exc:
        raise BadRecord(None, "malformed JSON: nesting too deep") from exc
    if not isinstance(record, dict):
        raise BadRecord(None, f"expected a JSON object, got {type(record).__name__}")
    return normalise(record, source, line_no, cfg, check_utf8=may_hold_surrogates(line))


def _read_jsonl(path: str, source: str, cfg: InputConfig) -> Iterator[ReadBatch]:
    builder = Builder()
    batch = ReadBatch(table=pa.table({}))
    line_no = 0
    with open_chunks(path) as chunks:
        try:
            for raw in iter_lines(chunks, cfg.max_line_bytes):
                line_no += 1
                batch.lines += 1
                row, bad = _line_row(raw, source, line_no, cfg)
                if row is not None:
                    builder.add(row)
                elif bad is not None:
                    batch.quarantine.append(bad)
                    batch.quarantined += 1
                else:
                    batch.blank += 1
                if len(builder) >= cfg.batch_size:
                    batch.table = builder.flush()
                    yield batch
                    batch = ReadBatch(table=pa.table({}))
        except StreamCorrupt as exc:
            batch.quarantine.append(corrupt_row(path, source, cfg, line_no, "line", str(exc), None))
            batch.lines += 1
            batch.quarantined += 1
    batch.table = builder.flush()
    yield batch


def _line_row(raw: bytes | Oversize, source: str, line_no: int,
              cfg: InputConfig) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(row, None)`` for a document, ``(None, quarantine_row)`` for a bad line, ``(None, None)`` for a blank one."""
    if isinstance(raw, Oversize):
        return None, quarantine_row(source, line_no, None, f"line is {raw.size} bytes, over input.max_line_bytes="
                                 f"{cfg.max_line_bytes}; not decoded", raw.head)
    stripped = raw.strip()
    if stripped.startswith(_BOM):  # a byte-order mark (file start, or files concatenated)
        stripped = stripped[len(_BOM):].strip()
    if not stripped:
        return None, None
    try:
        return _parse_line(stripped, source, line_no, cfg), None
    except BadRecord as exc:
        return None, quarantine_row(source, line_no, exc.field, exc.message, raw)
    except MemoryError:
        raise
    except Exception as exc:  # last line of defence: one line never fails the file
        return None, quarantine_row(source, line_no, None, f"unreadable line: {type(exc).__name__}: {exc}", raw)


def _stringish(dtype: pa.DataType) -> bool:
    if pa.types.is_dictionary(dtype):
        return _stringish(dtype.value_type)
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype)


def _schema_problem(pf: pq.ParquetFile, cfg: InputConfig) -> str | None:
    """Why no row of this file can be a document (no usable text column), or None."""
    names = pf.schema_arrow.names
    rows = pf.metadata.num_rows
    count = names.count(cfg.text_field)
    if count == 0:
        return f"missing column {cfg.text_field!r} ({rows} rows); columns: {names}"
    if count > 1:
        return f"column {cfg.text_field!r} appears {count} times ({rows} rows)"
    text_type = pf.schema_arrow.field(cfg.text_field).type
    if not _stringish(text_type):
        return f"column {cfg.text_field!r} has type {text_type}, expected string ({rows} rows)"
    return None


def _read_parquet(path: str, source: str, cfg: InputConfig) -> Iterator[ReadBatch]:
    done = 0  # rows read so far
    with fsspec.open(path, "rb") as fh:
        raw = TrackedFile(fh)  # tells a transport failure (re-raised) from a damaged file
        try:
            pf = pq.ParquetFile(raw)
            problem = _schema_problem(pf, cfg)
            batches = pf.iter_batches(batch_size=cfg.batch_size)
        except MemoryError:
            raise
        except Exception as exc:
            if raw.failed:
                raise
            yield _corrupt_batch(path, source, cfg, 0, exc)
            return
        if problem is not None:
            # A file without a usable text column is quarantined whole, with its row count, not skipped.
            rows = pf.metadata.num_rows
            q = quarantine_row(source, None, cfg.text_field, problem, None)
            yield ReadBatch(table=base_schema().empty_table(), quarantine=[q], lines=rows, quarantined=rows)
            return
        while True:
            try:
                record_batch = next(batches)
            except StopIteration:
                return
            except MemoryError:
                raise
            except Exception as exc:
                if raw.failed:
                    raise
                yield _corrupt_batch(path, source, cfg, done, exc)
                return
            yield _parquet_batch(record_batch, source, done, cfg)
            done += record_batch.num_rows


def _corrupt_batch(path: str, source: str, cfg: InputConfig, done: int, exc: Exception) -> ReadBatch:
    q = corrupt_row(path, source, cfg, done, "row", f"{type(exc).__name__}: {exc}", None)
    return ReadBatch(table=base_schema().empty_table(), quarantine=[q], lines=1, quarantined=1)


def _parquet_batch(record_batch: pa.RecordBatch, source: str, start: int, cfg: InputConfig) -> ReadBatch:
    builder = Builder()
    batch = ReadBatch(table=pa.table({}), lines=record_batch.num_rows)
    for offset, record in enumerate(_records(record_batch)):
        row = start + offset + 1
        try:
            if isinstance(record, BadRecord):
                raise record
            builder.add(normalise(record, source, row, cfg))
            continue
        except BadRecord as exc:
            q = quarantine_row(source, row, exc.field, exc.message, _excerpt(record))
        except MemoryError:
            raise
        except Exception as exc:  # last line of defence: one row never fails the file
            q = quarantine_row(source, row, None, f"unreadable row: {type(exc).__name__}: {exc}", _excerpt(record))
        batch.quarantine.append(q)
        batch.quarantined += 1
    batch.table = builder.flush()
    return batch


def _records(record_batch: pa.RecordBatch) -> list[dict[str, Any] | BadRecord]:
    """Rows as dicts; a value Python cannot represent (e.g. an out-of-range date) spoils only its row."""
    try:
        return record_batch.to_pylist()
    except MemoryError:
        raise
    except Exception:
        pass
    names = record_batch.schema.names
    bad: dict[int, BadRecord] = {}
    columns: list[list[Any]] = []
    for name, column in zip(names, record_batch.columns):
        try:
            columns.append(column.to_pylist())
            continue
        except MemoryError:
            raise
        except Exception:
            pass
        values: list[Any] = []
        for i in range(len(column)):
            try:
                values.append(column[i].as_py())
            except MemoryError:
                raise
            except Exception as exc:
                values.append(None)
                bad.setdefault(i, BadRecord(name, f"column {name!r}: value cannot be read "
                                                  f"({type(exc).__name__}: {exc})"))
        columns.append(values)
    return [bad.get(i) or dict(zip(names, values)) for i, values in enumerate(zip(*columns))] \
        if columns else [{} for _ in range(record_batch.num_rows)]


def _excerpt(record: Any) -> str | None:
    if not isinstance(record, dict):
        return None
    try:
        return json.dumps(record, ensure_ascii=False, default=str)[:_RAW_EXCERPT]
    except (ValueError, TypeError, RecursionError):
        return None
