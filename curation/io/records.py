"""Map one input record (a parsed JSON object or a Parquet row) to the base-schema fields.

Every way a record can be unusable raises :class:`BadRecord` naming the field, so the reader can
quarantine it; nothing a record holds can make a later Arrow conversion fail.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import re
from typing import Any, Protocol

#: JSON escapes that can decode to a UTF-16 surrogate (``\\ud800``-``\\udfff``). Only such an
#: escape can put a surrogate into a parsed string (strict UTF-8 decoding rejects encoded ones),
#: and a lone surrogate cannot be encoded as UTF-8, so Arrow would fail on it later.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")

_LABEL_TYPES = (str, int, float, decimal.Decimal, datetime.date, datetime.time, datetime.timedelta, bytes)


class FieldNames(Protocol):
    text_field: str
    id_field: str | None
    domain_field: str | None
    url_field: str | None
    domain: str


class BadRecord(Exception):
    """A record that cannot become a document; ``field`` names the culprit (None: the whole record)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def may_hold_surrogates(line: bytes) -> bool:
    """Cheap pre-check: only lines with a surrogate-range escape need the full UTF-8 check."""
    return _SURROGATE_ESCAPE.search(line) is not None


def normalise(record: dict[str, Any], source: str, pos: int, cfg: FieldNames,
              check_utf8: bool = False) -> dict[str, Any]:
    """Base-schema row of ``record``; ``pos`` (1-based line or row) makes the id when it has none."""
    if cfg.text_field not in record:
        raise BadRecord(cfg.text_field, f"missing field {cfg.text_field!r}")
    text = record[cfg.text_field]
    if text is None:
        text = ""  # null text is an empty document: dropped later with reason 'empty'
    if not isinstance(text, str):
        raise BadRecord(cfg.text_field, f"field {cfg.text_field!r} is {type(text).__name__}, expected a string")
    doc_id = _label(record, cfg.id_field)
    domain = _label(record, cfg.domain_field)
    url = _label(record, cfg.url_field)
    used = {cfg.text_field, cfg.id_field, cfg.domain_field, cfg.url_field}
    rest = {k: v for k, v in record.items() if k not in used}
    row = dict(
        id=doc_id if doc_id is not None else f"{source}:{pos}",
        text=text,
        source=source,
        domain=domain if domain is not None else cfg.domain,
        url=url,
        metadata=_metadata(rest) if rest else None,
        n_chars=len(text),
    )
    if check_utf8:
        _check_utf8(row, rest, cfg)
    return row


def _label(record: dict[str, Any], name: str | None) -> str | None:
    """A scalar id/domain/url field as a string; None when absent, null or empty."""
    if name is None:
        return None
    value = record.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, _LABEL_TYPES):
        raise BadRecord(name, f"field {name!r} is {type(value).__name__}, expected a string or a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRecord(name, f"field {name!r} is {value}, expected a string or a finite number")
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRecord(name, f"field {name!r} is bytes that are not UTF-8 ({exc.reason})") from exc
        return value or None
    return str(value)


def _metadata(rest: dict[str, Any]) -> str:
    """The remaining fields as a standard JSON object (no NaN/Infinity tokens)."""
    try:
        return json.dumps(rest, ensure_ascii=False, sort_keys=True, default=str, allow_nan=False)
    except ValueError:
        # Non-finite floats are kept as the strings "NaN"/"Infinity"/"-Infinity": the value
        # survives and the metadata stays parseable by strict JSON readers.
        return json.dumps(_finite(rest), ensure_ascii=False, sort_keys=True, default=str, allow_nan=False)
    except RecursionError as exc:
        raise BadRecord(None, "metadata nests too deeply to be stored as JSON") from exc


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _check_utf8(row: dict[str, Any], rest: dict[str, Any], cfg: FieldNames) -> None:
    """Raise BadRecord naming the field whose string holds a lone surrogate."""
    names = {"id": cfg.id_field, "text": cfg.text_field, "domain": cfg.domain_field, "url": cfg.url_field}
    for column, name in names.items():
        value = row[column]
        if isinstance(value, str) and (bad := _surrogate_at(value)) is not None:
            raise BadRecord(name, _surrogate_message(name or column, value, bad))
    if row["metadata"] is not None and _surrogate_at(row["metadata"]) is not None:
        for key, value in rest.items():
            dumped = json.dumps({key: value}, ensure_ascii=False, default=str)
            if (bad := _surrogate_at(dumped)) is not None:
                safe_key = printable(key)
                raise BadRecord(safe_key, _surrogate_message(safe_key, dumped, bad, "in its key or value"))


def _surrogate_at(value: str) -> int | None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _surrogate_message(name: str, value: str, at: int, where: str = "") -> str:
    where = f" {where}" if where else ""
    return (f"field {name!r} holds an unpaired UTF-16 surrogate \\u{ord(value[at]):04x}{where} "
            f"at character {at}; it cannot be stored as UTF-8")


def printable(value: str) -> str:
    """``value`` with any lone surrogate written as a ``\\udXXX`` escape, so it encodes as UTF-8."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")
