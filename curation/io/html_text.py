"""Bytes of a web page to text: charset choice, HTML sniffing and language hints.

Charset order (the first that decodes the whole page strictly wins, and ``charset_source`` says which):
``http`` (the Content-Type header's charset), ``bom`` (a byte-order mark), ``meta`` (``<meta charset>``
or ``http-equiv`` in the first 4 KB), ``utf-8`` (the web's default), ``detected`` (charset-normalizer,
a dependency of trafilatura). When none decodes, the page is decoded as UTF-8 with U+FFFD replacing
bad bytes (``replaced``), unless more than ``MAX_REPLACED_SHARE`` of its characters would be
replacements: then it is binary or in an unknown encoding and :class:`Undecodable` is raised.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

#: Bytes searched for a <meta> charset (HTML5's prescan looks at 1024; real pages put it later).
META_SCAN_BYTES = 4096
#: Above this share of U+FFFD after replacement, a page is undecodable rather than slightly damaged.
MAX_REPLACED_SHARE = 0.01
#: Bytes given to the charset detector: enough to decide, bounded in time.
DETECT_BYTES = 256 * 1024

_CHARSET = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_META_CHARSET = re.compile(rb"""<meta[^>]{0,500}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_LANG_TAG = rb"""([A-Za-z]{1,8}(?:[-_][A-Za-z0-9]{1,8}){0,3})"""  # a BCP 47 tag, loosely
_LANG = re.compile(rb"""<(html|body)\b[^>]{0,2000}?\blang\s*=\s*["']?\s*""" + _LANG_TAG, re.IGNORECASE)
_HTML_START = re.compile(rb"\s*(?:<\?xml[^>]{0,200}>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b",
                         re.IGNORECASE | re.DOTALL)  # XHTML pages may open with an XML declaration
_BOMS = [(codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")]
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})


class Undecodable(Exception):
    """No charset decodes the page and replacing bad bytes would change too much of it."""


@dataclass(frozen=True)
class Decoded:
    text: str
    charset: str  # the codec's canonical name
    source: str  # http | bom | meta | utf-8 | detected | replaced


def mime_type(content_type: str | None) -> str | None:
    """``text/html`` of ``text/html; charset=UTF-8``; None when absent or empty."""
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


def declared_charset(content_type: str | None) -> str | None:
    m = _CHARSET.search(content_type or "")
    return m.group(1) if m else None


def looks_like_html(payload: bytes) -> bool:
    """Whether the payload starts like an HTML document (for responses without a Content-Type)."""
    head = payload[:1024].lstrip(codecs.BOM_UTF8)
    return _HTML_START.match(head) is not None


def html_lang(payload: bytes) -> str | None:
    """The ``lang`` attribute of ``<html>`` (else of ``<body>``), lower-cased, from the first 64 KB."""
    found: dict[bytes, str] = {}
    for m in _LANG.finditer(payload[: 64 * 1024]):
        found.setdefault(m.group(1).lower(), m.group(2).decode("ascii").lower().replace("_", "-"))
        if b"html" in found:
            break
    return found.get(b"html") or found.get(b"body")


def _codec(label: str | None) -> str | None:
    """Python's codec for a charset label, or None when unknown (labels are attacker-chosen strings)."""
    if not label:
        return None
    try:
        return codecs.lookup(label.strip().lower()).name
    except (LookupError, ValueError):
        return None


def _try(payload: bytes, codec: str | None) -> str | None:
    if codec is None:
        return None
    try:
        return payload.decode(codec)
    except (UnicodeDecodeError, LookupError, ValueError):
        return None


def decode_page(payload: bytes, content_type: str | None) -> Decoded:
    """The page as text; see the module docstring for the order of attempts."""
    http = _codec(declared_charset(content_type))
    if (text := _try(payload, http)) is not None:
        return Decoded(_strip_bom(text), http, "http")  # type: ignore[arg-type]
    for bom, codec in _BOMS:
        if payload.startswith(bom) and (text := _try(payload[len(bom):], codec)) is not None:
            return Decoded(text, codec, "bom")
    m = _META_CHARSET.search(payload[:META_SCAN_BYTES])
    meta = _codec(m.group(1).decode("ascii")) if m else None
    if (text := _try(payload, meta)) is not None:
        return Decoded(text, meta, "meta")  # type: ignore[arg-type]
    if (text := _try(payload, "utf-8")) is not None:
        return Decoded(text, "utf-8", "utf-8")
    detected = _detect(payload)
    if detected is not None and (text := _try(payload, detected)) is not None:
        return Decoded(text, detected, "detected")
    text = payload.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    if bad > MAX_REPLACED_SHARE * max(len(text), 1):
        raise Undecodable(f"no charset decodes it (declared: {declared_charset(content_type) or 'none'}, "
                          f"meta: {m.group(1).decode('ascii') if m else 'none'}, detected: {detected or 'none'}); "
                          f"as UTF-8 {bad} of {len(text)} characters would be replaced")
    return Decoded(text, "utf-8", "replaced")


def _strip_bom(text: str) -> str:
    return text.removeprefix("\ufeff")


def _detect(payload: bytes) -> str | None:
    from charset_normalizer import from_bytes

    best = from_bytes(payload[:DETECT_BYTES]).best()
    return _codec(best.encoding) if best is not None else None
