"""Crawl archives and HTML files as documents: ``warc`` (WARC responses), ``wet`` and ``html``.

``warc``: every ``response`` record whose HTTP Content-Type is HTML (``text/html``,
``application/xhtml+xml``; without one, the WARC-Identified-Payload-Type, else the payload's first
bytes) becomes one document: the page decoded (``curation.io.html_text``) and its main text extracted
in a time-bounded worker (``curation.io.extract``). ``wet``: every ``conversion`` record, its text as
it is (decoded the same way). ``html``: one file, one document.

Each document's ``id`` is its WARC-Record-ID without the angle brackets (else ``sha1:`` of URL and
date), ``url`` the WARC-Target-URI, and ``metadata`` a JSON object with ``warc_record_id``,
``warc_date``, ``warc_offset``, ``content_type``, ``http_status``, ``charset``, ``charset_source``,
``html_lang`` (the page's ``lang`` attribute), ``content_language`` (the HTTP header) and
``identified_language`` (WARC-Identified-Content-Language), null when absent.

Accounting, as for JSONL lines: every record is a document, a skipped record (another type, or not
HTML; counted as a blank line) or a quarantine row whose error names the record's number, offset and
id: a malformed record, a page over ``input.max_record_bytes`` (its block, or its payload once
decoded), a page no charset decodes, an extractor error or time-out. A page whose extracted text is
empty is a document with empty text, dropped before any stage with reason ``empty``. A truncated or
corrupt archive follows ``input.on_corrupt_file``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa

from curation.io.extract import ExtractionFailed, SandboxedExtractor
from curation.io.html_text import HTML_TYPES, Undecodable, decode_page, html_lang, looks_like_html, mime_type
from curation.io.linestream import StreamCorrupt, open_chunks
from curation.io.read_batch import Builder, InputConfig, ReadBatch, corrupt_row, quarantine_row
from curation.io.warc import Malformed, RawRecord, Truncated, http_head, iter_records, parse_record

_COMPRESSED = (".gz", ".zst", ".zstd", ".bz2", ".xz")
_SKIP = object()  # a record that is not a document of this format


class _Bad(Exception):
    """A record that cannot become a document: its quarantine message and excerpt."""

    def __init__(self, message: str, raw: bytes | str | None) -> None:
        super().__init__(message)
        self.message = message
        self.raw = raw


def read_web(path: str, source: str, cfg: InputConfig, fmt: str) -> Iterator[ReadBatch]:
    """Document batches of one ``warc``/``wet`` archive or one ``html`` file."""
    with SandboxedExtractor(cfg.extractor, cfg.extract_timeout_s) as sandbox:  # started at the first page
        if fmt == "html":
            yield _read_html_file(path, source, cfg, sandbox)
        else:
            yield from _read_archive(path, source, cfg, fmt, sandbox)


def _read_archive(path: str, source: str, cfg: InputConfig, fmt: str,
                  sandbox: SandboxedExtractor) -> Iterator[ReadBatch]:
    builder = Builder()
    batch = ReadBatch(table=pa.table({}))
    done = 0  # records read so far
    with open_chunks(path) as chunks:
        try:
            for item in iter_records(chunks, cfg.max_record_bytes, path.lower().endswith(_COMPRESSED)):
                done = item.number
                batch.lines += 1
                try:
                    row = _document(item, source, cfg, fmt, sandbox)
                except _Bad as bad:
                    batch.quarantine.append(quarantine_row(source, item.number, None, bad.message, bad.raw))
                    batch.quarantined += 1
                    continue
                if row is _SKIP:
                    batch.blank += 1
                    continue
                builder.add(row)  # type: ignore[arg-type]
                if len(builder) >= cfg.batch_size:
                    batch.table = builder.flush()
                    yield batch
                    batch = ReadBatch(table=pa.table({}))
        except (StreamCorrupt, Truncated) as exc:
            why = exc.why if isinstance(exc, Truncated) else str(exc)
            batch.quarantine.append(corrupt_row(path, source, cfg, done, "record", why, None))
            batch.lines += 1
            batch.quarantined += 1
    batch.table = builder.flush()
    yield batch


def _where(rec: RawRecord | Malformed) -> str:
    return f"record {rec.number} at offset {rec.offset} ({rec.record_id or 'no WARC-Record-ID'})"


def _document(item: RawRecord | Malformed, source: str, cfg: InputConfig, fmt: str,
              sandbox: SandboxedExtractor) -> dict[str, Any] | object:
    """The base-schema row of a record, ``_SKIP``, or raises _Bad."""
    if isinstance(item, Malformed):
        raise _Bad(f"malformed {_where(item)}: {item.why}; {item.size} bytes skipped", item.raw)
    if item.type != ("response" if fmt == "warc" else "conversion"):
        return _SKIP
    try:
        return _page(item, source, cfg, fmt, sandbox)
    except (_Bad, MemoryError):
        raise
    except Exception as exc:  # last line of defence: one record never fails the file
        raise _Bad(f"{_where(item)}: unreadable record: {type(exc).__name__}: {exc}", item.header) from exc


def _page(rec: RawRecord, source: str, cfg: InputConfig, fmt: str,
          sandbox: SandboxedExtractor) -> dict[str, Any] | object:
    cap = cfg.max_record_bytes
    if rec.block is None:
        if fmt == "warc" and not _maybe_html(rec, http_head(rec.head)):
            return _SKIP  # a large download (video, archive): not a page
        raise _Bad(f"{_where(rec)}: block is {rec.length} bytes, over input.max_record_bytes={cap}; not read",
                   rec.header)
    try:
        record, payload = parse_record(rec, cap)
    except Exception as exc:  # whatever warcio raises, its message names the problem
        raise _Bad(f"malformed {_where(rec)}: warcio cannot parse it: {type(exc).__name__}: {exc}", rec.header) \
            from exc
    http = record.http_headers if fmt == "warc" else None
    if fmt == "warc":
        if http is None:
            return _SKIP  # not an HTTP response (dns:, ftp:)
        if not _maybe_html(rec, http, payload):
            return _SKIP
        content_type = http.get_header("Content-Type")
    else:
        content_type = rec.fields.get("content-type")
    if payload is None:
        raise _Bad(f"{_where(rec)}: payload decodes to more than input.max_record_bytes={cap} bytes "
                   "(Content-Encoding); not read", rec.header)
    try:
        decoded = decode_page(payload, content_type)
    except Undecodable as exc:
        raise _Bad(f"{_where(rec)}: undecodable page: {exc}", rec.header) from exc
    if fmt == "warc":
        try:
            text = sandbox.extract(decoded.text)
        except ExtractionFailed as exc:
            raise _Bad(f"{_where(rec)}: {exc}", rec.header) from exc
    else:
        text = decoded.text
    url = _unbracket(rec.fields.get("warc-target-uri"))
    date = rec.fields.get("warc-date")
    rid = _unbracket(rec.record_id)
    status = http.get_statuscode() if http is not None else None
    meta = {
        "warc_record_id": rec.record_id, "warc_date": date, "warc_offset": rec.offset,
        "content_type": content_type, "http_status": int(status) if status and status.isdigit() else None,
        "charset": decoded.charset, "charset_source": decoded.source,
        "html_lang": html_lang(payload) if fmt == "warc" else None,
        "content_language": http.get_header("Content-Language") if http is not None else None,
        "identified_language": rec.fields.get("warc-identified-content-language"),
    }
    return {"id": rid or _url_date_id(url, date, source, rec.offset), "text": text, "source": source,
            "domain": cfg.domain, "url": url, "metadata": json.dumps(meta, ensure_ascii=False, sort_keys=True),
            "n_chars": len(text)}


def _maybe_html(rec: RawRecord, http: Any, payload: bytes | None = None) -> bool:
    """Whether a response is an HTML page: its HTTP Content-Type, else the crawler's identified type,
    else its first bytes. True when nothing tells (an over-cap page is then quarantined, not skipped)."""
    mime = mime_type(http.get_header("Content-Type")) if http is not None else None
    if mime is not None:
        return mime in HTML_TYPES
    identified = mime_type(rec.fields.get("warc-identified-payload-type"))
    if identified is not None:
        return identified in HTML_TYPES
    if payload is not None:
        return looks_like_html(payload)
    return True


def _unbracket(value: str | None) -> str | None:
    """WARC 1.0 writes ``<urn:uuid:...>``; some tools also bracket the target URI."""
    if not value:
        return None
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    return value or None


def _url_date_id(url: str | None, date: str | None, source: str, offset: int) -> str:
    """A stable id for a record without WARC-Record-ID: the URL and capture date, else its place."""
    if url is None and date is None:
        return f"{source}@{offset}"
    return "sha1:" + hashlib.sha1(f"{url}\t{date}".encode("utf-8", "surrogatepass")).hexdigest()


def _read_html_file(path: str, source: str, cfg: InputConfig, sandbox: SandboxedExtractor) -> ReadBatch:
    """One HTML file as one document (id: its source path)."""
    builder = Builder()
    batch = ReadBatch(table=pa.table({}), lines=1)
    cap = cfg.max_record_bytes
    with fsspec.open(path, "rb", compression="infer") as fh:
        payload = fh.read(cap + 1)
    try:
        if len(payload) > cap:
            raise _Bad(f"file is over input.max_record_bytes={cap} bytes; not read", payload[:400])
        try:
            decoded = decode_page(payload, None)
            text = sandbox.extract(decoded.text)
        except (Undecodable, ExtractionFailed) as exc:
            raise _Bad(f"undecodable page: {exc}" if isinstance(exc, Undecodable) else str(exc), payload[:400]) \
                from exc
    except _Bad as bad:
        batch.quarantine.append(quarantine_row(source, 1, None, bad.message, bad.raw))
        batch.quarantined = 1
        batch.table = builder.flush()
        return batch
    meta = {"content_type": "text/html", "charset": decoded.charset, "charset_source": decoded.source,
            "html_lang": html_lang(payload)}
    builder.add({"id": source, "text": text, "source": source, "domain": cfg.domain, "url": None,
                 "metadata": json.dumps(meta, ensure_ascii=False, sort_keys=True), "n_chars": len(text)})
    batch.table = builder.flush()
    return batch


def sample_web_input(path: str, fmt: str, cfg: InputConfig, keep: Callable[[str], bool],
                     target: Path) -> tuple[int, int, int, int]:
    """Copy the would-be documents of one web input that ``keep`` accepts into ``target``, as raw records
    (or the file itself for ``html``), so that a run on the sample reads and extracts them as the full run
    would; ``keep`` sees the record's block decoded as UTF-8. Returns (documents, bytes, sampled documents,
    sampled bytes), sizes being block lengths. Reading stops at a truncated or corrupt stream (the run
    reports it). For ``curate plan``."""
    if fmt == "html":
        with fsspec.open(path, "rb", compression="infer") as fh:
            data = fh.read(cfg.max_record_bytes + 1)
        if keep(data.decode("utf-8", "replace")):
            target.write_bytes(data)
            return 1, len(data), 1, len(data)
        return 1, len(data), 0, 0
    wanted = "response" if fmt == "warc" else "conversion"
    docs = size = sampled = sampled_size = 0
    with open_chunks(path) as chunks, target.open("wb") as out:
        try:
            for rec in iter_records(chunks, cfg.max_record_bytes, path.lower().endswith(_COMPRESSED)):
                if isinstance(rec, Malformed) or rec.type != wanted or rec.block is None:
                    continue
                if fmt == "warc" and not _maybe_html(rec, http_head(rec.head)):
                    continue  # a response the reader would skip: not a document
                docs += 1
                size += rec.length
                if keep(rec.block.decode("utf-8", "replace")):
                    out.write(rec.header + rec.block + b"\r\n\r\n")
                    sampled += 1
                    sampled_size += rec.length
        except (StreamCorrupt, Truncated):
            pass
    return docs, size, sampled, sampled_size


def split_web_sample(src: Path, k: int, target: Path) -> int:
    """Move the first ``k`` records of a sample written by :func:`sample_web_input` into ``target``; returns
    the bytes (block lengths) moved. For ``curate plan``'s probe task."""
    records = [r for r in iter_records(iter([src.read_bytes()]), 1 << 62, compressed=True)
               if isinstance(r, RawRecord)]
    target.write_bytes(b"".join(r.header + (r.block or b"") + b"\r\n\r\n" for r in records[:k]))
    src.write_bytes(b"".join(r.header + (r.block or b"") + b"\r\n\r\n" for r in records[k:]))
    return sum(r.length for r in records[:k])
