"""Readers: JSONL (plain, .gz, .zst) and Parquet, local paths or fsspec URLs, into document batches.

Bad input never crashes a run and is never dropped silently: a malformed line (bad JSON, invalid
UTF-8, not an object, missing or non-string text) becomes a quarantine row naming file, line and
field, and is counted. Each line is decoded on its own, so one bad byte loses only its line.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from curation.schema import base_schema

_RAW_EXCERPT = 1000


@dataclass(kw_only=True)
class InputConfig:
    """Where documents come from and which fields hold what.

    Args:
        paths: Files, globs or fsspec URLs (``s3://bucket/x/*.jsonl.zst``). Each file is one task.
        format: ``jsonl``, ``parquet``, or ``auto`` (by extension).
        text_field: Field holding the document text.
        id_field: Field holding a unique document id; when absent the id is ``SOURCE:LINE``.
        domain_field: Field holding the domain/source label; falls back to ``domain``.
        domain: Domain label for documents without ``domain_field``.
        url_field: Field holding the URL, if any.
        batch_size: Documents per batch handed to the stages (memory is bounded by this).
        max_malformed_fraction: A file whose quarantined share of lines exceeds this fails the run.
        max_chars: Documents longer than this are dropped with reason ``too_long`` before any stage.
    """

    paths: list[str]
    format: str = "auto"
    text_field: str = "text"
    id_field: str | None = "id"
    domain_field: str | None = "domain"
    domain: str = "default"
    url_field: str | None = "url"
    batch_size: int = 1000
    max_malformed_fraction: float = 0.5
    max_chars: int = 2_000_000

    def __post_init__(self) -> None:
        if not self.paths:
            raise ValueError("paths: at least one input path is needed")
        if self.format not in ("auto", "jsonl", "parquet"):
            raise ValueError(f"format: {self.format!r} is not one of ['auto', 'jsonl', 'parquet']")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not 0.0 <= self.max_malformed_fraction <= 1.0:
            raise ValueError("max_malformed_fraction must be in [0, 1]")


@dataclass
class ReadBatch:
    """A batch of normalised documents plus what was quarantined while reading it."""

    table: pa.Table
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    lines: int = 0  # input lines/rows consumed, including quarantined and blank ones
    blank: int = 0


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
    raise ValueError(f"{path}: cannot tell the format from the extension; set input.format")


def read_documents(path: str, source: str, cfg: InputConfig) -> Iterator[ReadBatch]:
    """Yield normalised document batches from one input file."""
    fmt = detect_format(path, cfg.format)
    reader = _read_jsonl if fmt == "jsonl" else _read_parquet
    yield from reader(path, source, cfg)


class _Builder:
    """Accumulates normalised rows column-wise and emits Arrow tables."""

    def __init__(self) -> None:
        self.schema = base_schema()
        self.cols: dict[str, list[Any]] = {f.name: [] for f in self.schema}

    def add(self, **row: Any) -> None:
        for name, values in self.cols.items():
            values.append(row[name])

    def __len__(self) -> int:
        return len(self.cols["id"])

    def flush(self) -> pa.Table:
        table = pa.table(self.cols, schema=self.schema)
        self.cols = {f.name: [] for f in self.schema}
        return table


def _normalise(record: dict[str, Any], source: str, pos: int, cfg: InputConfig) -> dict[str, Any]:
    """Map an input record to base-schema fields. Raises KeyError/TypeError naming the field."""
    if cfg.text_field not in record:
        raise KeyError(cfg.text_field)
    text = record[cfg.text_field]
    if text is None:
        text = ""  # null text is an empty document: dropped later with reason 'empty'
    if not isinstance(text, str):
        raise TypeError(f"field {cfg.text_field!r} is {type(text).__name__}, expected a string")
    doc_id = record.get(cfg.id_field) if cfg.id_field else None
    doc_id = f"{source}:{pos}" if doc_id is None or doc_id == "" else str(doc_id)
    domain = record.get(cfg.domain_field) if cfg.domain_field else None
    url = record.get(cfg.url_field) if cfg.url_field else None
    used = {cfg.text_field, cfg.id_field, cfg.domain_field, cfg.url_field}
    rest = {k: v for k, v in record.items() if k not in used}
    return dict(
        id=doc_id,
        text=text,
        source=source,
        domain=str(domain) if domain not in (None, "") else cfg.domain,
        url=str(url) if url not in (None, "") else None,
        metadata=json.dumps(rest, ensure_ascii=False, sort_keys=True, default=str) if rest else None,
        n_chars=len(text),
    )


def _quarantine(file: str, line: int | None, field_name: str | None, error: str, raw: Any) -> dict[str, Any]:
    if isinstance(raw, bytes):
        raw = raw[: _RAW_EXCERPT * 4].rstrip(b"\r\n").decode("utf-8", errors="replace")
    return {"file": file, "line": line, "field": field_name, "error": error,
            "raw": None if raw is None else str(raw)[:_RAW_EXCERPT]}


@contextmanager
def _open_lines(path: str) -> Iterator[IO[bytes]]:
    """Binary line stream of a possibly compressed file (gz, bz2, xz via fsspec; zstd by hand,
    because fsspec's zstd file object cannot be iterated by line)."""
    if path.lower().endswith((".zst", ".zstd")):
        import zstandard

        with fsspec.open(path, "rb") as raw:
            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
            yield io.BufferedReader(reader)  # type: ignore[arg-type]
    else:
        with fsspec.open(path, "rb", compression="infer") as fh:
            yield fh


def _read_jsonl(path: str, source: str, cfg: InputConfig) -> Iterator[ReadBatch]:
    builder = _Builder()
    batch = ReadBatch(table=pa.table({}))
    with _open_lines(path) as fh:
        for line_no, raw in enumerate(fh, start=1):
            batch.lines += 1
            stripped = raw.strip()
            if not stripped:
                batch.blank += 1
                continue
            try:
                record = json.loads(stripped.decode("utf-8"))  # strict: one bad byte loses this line only
                if not isinstance(record, dict):
                    raise TypeError(f"expected a JSON object, got {type(record).__name__}")
                builder.add(**_normalise(record, source, line_no, cfg))
            except UnicodeDecodeError as exc:
                batch.quarantine.append(_quarantine(source, line_no, None, f"invalid UTF-8: {exc.reason} at byte {exc.start}", raw))
            except json.JSONDecodeError as exc:
                batch.quarantine.append(_quarantine(source, line_no, None, f"malformed JSON: {exc.msg} at column {exc.colno}", raw))
            except KeyError as exc:
                batch.quarantine.append(_quarantine(source, line_no, str(exc.args[0]), f"missing field {exc.args[0]!r}", raw))
            except TypeError as exc:
                batch.quarantine.append(_quarantine(source, line_no, cfg.text_field if "field" in str(exc) else None, str(exc), raw))
            if len(builder) >= cfg.batch_size:
                batch.table = builder.flush()
                yield batch
                batch = ReadBatch(table=pa.table({}))
    batch.table = builder.flush()
    yield batch


def _read_parquet(path: str, source: str, cfg: InputConfig) -> Iterator[ReadBatch]:
    with fsspec.open(path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        names = pf.schema_arrow.names
        if cfg.text_field not in names:
            # A file without the text column is quarantined whole, with its row count, not skipped.
            q = _quarantine(source, None, cfg.text_field,
                            f"missing column {cfg.text_field!r} ({pf.metadata.num_rows} rows); columns: {names}", None)
            yield ReadBatch(table=base_schema().empty_table(), quarantine=[q], lines=pf.metadata.num_rows)
            return
        text_type = pf.schema_arrow.field(cfg.text_field).type
        if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
            q = _quarantine(source, None, cfg.text_field,
                            f"column {cfg.text_field!r} has type {text_type}, expected string "
                            f"({pf.metadata.num_rows} rows)", None)
            yield ReadBatch(table=base_schema().empty_table(), quarantine=[q], lines=pf.metadata.num_rows)
            return
        row = 0
        for record_batch in pf.iter_batches(batch_size=cfg.batch_size):
            builder = _Builder()
            batch = ReadBatch(table=pa.table({}))
            for record in record_batch.to_pylist():
                row += 1
                batch.lines += 1
                try:
                    builder.add(**_normalise(record, source, row, cfg))
                except (KeyError, TypeError) as exc:
                    batch.quarantine.append(_quarantine(source, row, cfg.text_field, str(exc), None))
            batch.table = builder.flush()
            yield batch
