"""What every input reader shares: the input config, the batch a reader yields, the row builder, and the
quarantine rows (one malformed line or record; a damaged file under ``on_corrupt_file``).

The JSONL/Parquet readers (``curation.io.readers``) and the crawl-archive readers (``curation.io.web``) both build
on this module, so neither imports the other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa

from curation.config import check_choices
from curation.errors import ShardError
from curation.io.records import printable
from curation.schema import base_schema

_RAW_EXCERPT = 1000


@dataclass(kw_only=True)
class InputConfig:
    """Where documents come from and which fields hold what.

    Args:
        paths: Files, globs or fsspec URLs (``s3://bucket/x/*.jsonl.zst``). Each file is one task.
        format: ``jsonl``, ``parquet``, ``warc``, ``wet``, ``html``, or ``auto`` (by extension: ``.warc``,
            ``.wet``, ``.html``/``.htm``, each also compressed). The web formats ignore the
            ``*_field`` options: documents take id, url and metadata from the records (``curation.io.web``).
        text_field: Field holding the document text.
        id_field: Field holding a unique document id; when absent the id is ``SOURCE:LINE``.
        domain_field: Field holding the domain/source label; falls back to ``domain``.
        domain: Domain label for documents without ``domain_field``.
        url_field: Field holding the URL, if any.
        batch_size: Documents per batch handed to the stages (memory is bounded by this).
        max_malformed_fraction: A file whose quarantined share of lines exceeds this fails the run.
        max_chars: Documents longer than this are dropped with reason ``too_long`` before any stage.
        max_line_bytes: A JSONL line longer than this (in bytes, after decompression) is
            quarantined without being decoded or held in memory whole.
        on_corrupt_file: ``fail`` (a truncated or damaged file fails the run, naming it) or
            ``quarantine`` (keep the lines read before the damage and record the rest as one
            quarantine row; it counts as one malformed line toward ``max_malformed_fraction``).
        extractor: Main-text extractor of ``warc``/``html`` pages: ``resiliparse`` or ``trafilatura``.
        extract_timeout_s: Seconds one page's extraction may take; past it the worker process doing it is
            killed and the page quarantined.
        max_record_bytes: A WARC record block, decoded payload or HTML file over this many bytes is not
            read: quarantined when it is a page, skipped when it is not.
    """

    paths: list[str]
    format: Literal["auto", "jsonl", "parquet", "warc", "wet", "html"] = "auto"
    text_field: str = "text"
    id_field: str | None = "id"
    domain_field: str | None = "domain"
    domain: str = "default"
    url_field: str | None = "url"
    batch_size: int = 1000
    max_malformed_fraction: float = 0.5
    max_chars: int = 2_000_000
    max_line_bytes: int = 64 * 1024 * 1024
    on_corrupt_file: Literal["fail", "quarantine"] = "fail"
    extractor: Literal["resiliparse", "trafilatura"] = "resiliparse"
    extract_timeout_s: float = 5.0
    max_record_bytes: int = 10 * 1024 * 1024

    def __post_init__(self) -> None:
        check_choices(self)
        if not self.paths:
            raise ValueError("paths: at least one input path is needed")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not 0.0 <= self.max_malformed_fraction <= 1.0:
            raise ValueError("max_malformed_fraction must be in [0, 1]")
        if self.max_line_bytes < 1:
            raise ValueError("max_line_bytes must be >= 1")
        if not self.extract_timeout_s > 0:
            raise ValueError("extract_timeout_s must be > 0")
        if self.max_record_bytes < 1:
            raise ValueError("max_record_bytes must be >= 1")


class CorruptInputError(ShardError):
    """An input file is truncated or damaged and ``on_corrupt_file`` is ``fail``."""


@dataclass
class ReadBatch:
    """A batch of normalised documents plus what was quarantined while reading it.

    ``len(table) + quarantined + blank == lines`` for every batch.
    """

    table: pa.Table
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    lines: int = 0  # input lines/rows consumed, including quarantined and blank ones
    blank: int = 0
    quarantined: int = 0  # input lines/rows the quarantine rows stand for (a whole-file row stands for all)


class Builder:
    """Accumulates normalised rows column-wise and emits Arrow tables."""

    def __init__(self) -> None:
        self.schema = base_schema()
        self.cols: dict[str, list[Any]] = {f.name: [] for f in self.schema}

    def add(self, row: dict[str, Any]) -> None:
        for name, values in self.cols.items():
            values.append(row[name])

    def __len__(self) -> int:
        return len(self.cols["id"])

    def flush(self) -> pa.Table:
        table = pa.table(self.cols, schema=self.schema)
        self.cols = {f.name: [] for f in self.schema}
        return table


def quarantine_row(file: str, line: int | None, field_name: str | None, error: str, raw: Any) -> dict[str, Any]:
    if isinstance(raw, bytes):
        raw = raw[: _RAW_EXCERPT * 4].rstrip(b"\r\n").decode("utf-8", errors="replace")
    # printable(): a lone surrogate in any of these would make the quarantine table unwritable.
    return {"file": printable(file), "line": line, "field": None if field_name is None else printable(field_name),
            "error": printable(error), "raw": None if raw is None else printable(str(raw)[:_RAW_EXCERPT])}


def corrupt_row(path: str, source: str, cfg: InputConfig, done: int, unit: str, cause: str, raw: Any) -> dict[str, Any]:
    """The quarantine row of a damaged file, or CorruptInputError when the policy is ``fail``."""
    what = f"{done} {unit}s read before it; the rest of the file is lost"
    if cfg.on_corrupt_file == "fail":
        raise CorruptInputError(f"{path}: corrupt or truncated file after {unit} {done} ({cause}); {what}. "
                                f"Set input.on_corrupt_file: quarantine to keep the readable part")
    return quarantine_row(source, done + 1, None, f"corrupt or truncated file ({cause}); {what}", raw)
