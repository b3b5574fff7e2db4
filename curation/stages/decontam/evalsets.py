"""Read eval-set files into items: (item id, the texts to check).

JSONL (``.jsonl``, ``.json``, optionally ``.gz``/``.zst``), Parquet (``.parquet``) and plain text
(``.txt``: one item per line). Items are read on the driver only; a bad line or a missing field
is a ``ConfigError`` naming the file, line and field, since a silently skipped eval item would
let its contamination through.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq

from curation.config import check_choices, parse_mapping
from curation.errors import ConfigError


@dataclass(kw_only=True)
class EvalFileSpec:
    """One eval-set file.

    Args:
        path: Local file (its sha256 enters the run identity, so editing it refuses a resume).
        fields: JSONL/Parquet fields whose text is checked, each on its own (n-grams never span two
            fields); a value may be a string or a list of strings (answer choices). Nulls are skipped.
        id_field: Field holding the item id; None: the 1-based line (JSONL, text) or row (Parquet) number.
        format: ``auto`` (by extension), ``jsonl``, ``parquet`` or ``text``.
    """

    path: str
    fields: list[str] = field(default_factory=lambda: ["text"])
    id_field: str | None = None
    format: Literal["auto", "jsonl", "parquet", "text"] = "auto"

    def __post_init__(self) -> None:
        check_choices(self)
        if "://" in self.path:
            raise ValueError(f"eval file {self.path!r}: only local files are supported")
        if not self.fields:
            raise ValueError(f"eval file {self.path!r}: fields must name at least one field")

    def resolved_format(self) -> str:
        if self.format != "auto":
            return self.format
        name = self.path.lower().removesuffix(".gz").removesuffix(".zst")
        for suffix, fmt in ((".jsonl", "jsonl"), (".json", "jsonl"), (".parquet", "parquet"), (".txt", "text")):
            if name.endswith(suffix):
                return fmt
        raise ConfigError(f"eval file {self.path}: cannot tell the format from the name; "
                          "set format: jsonl|parquet|text")


def _open_text(path: str) -> io.TextIOBase:
    if path.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8")
    if path.endswith(".zst"):
        import zstandard

        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(open(path, "rb")), encoding="utf-8")
    return open(path, encoding="utf-8")


def _texts(spec: EvalFileSpec, record: dict[str, Any], where: str) -> list[str]:
    out: list[str] = []
    for name in spec.fields:
        if name not in record:
            raise ConfigError(f"{where}: no field {name!r} (fields present: {sorted(record)})")
        value = record[name]
        values = value if isinstance(value, list) else [value]
        for v in values:
            if v is None:
                continue
            if not isinstance(v, str):
                raise ConfigError(f"{where}: field {name!r} holds {type(v).__name__}, "
                                  "expected a string or list of strings")
            out.append(v)
    return out


def _item_id(spec: EvalFileSpec, record: dict[str, Any], number: int, where: str) -> str:
    if spec.id_field is None:
        return str(number)
    if record.get(spec.id_field) is None:
        raise ConfigError(f"{where}: no id in field {spec.id_field!r}")
    return str(record[spec.id_field])


def read_items(spec: EvalFileSpec) -> Iterator[tuple[str, list[str]]]:
    """Yield ``(item id, texts)`` for each item of an eval file, in file order."""
    if not Path(spec.path).is_file():
        raise ConfigError(f"decontaminate_v1: eval file {spec.path} does not exist")
    fmt = spec.resolved_format()
    if fmt == "parquet":
        columns = list(dict.fromkeys([*spec.fields, *([spec.id_field] if spec.id_field else [])]))
        names = pq.read_schema(spec.path).names
        missing = [c for c in columns if c not in names]
        if missing:
            raise ConfigError(f"{spec.path}: no column(s) {missing} (columns present: {names})")
        for i, record in enumerate(pq.read_table(spec.path, columns=columns).to_pylist(), start=1):
            where = f"{spec.path} row {i}"
            yield _item_id(spec, record, i, where), _texts(spec, record, where)
        return
    with _open_text(spec.path) as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if fmt == "text":
                yield str(i), [line.rstrip("\n")]
                continue
            where = f"{spec.path} line {i}"
            record = parse_mapping(line, where, "json")
            yield _item_id(spec, record, i, where), _texts(spec, record, where)
