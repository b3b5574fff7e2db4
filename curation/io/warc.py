"""WARC framing that survives damage: record boundaries are found here, each record is parsed by warcio.

warcio and FastWARC both stop at the first record they cannot parse (a bad header line, a wrong
Content-Length, bytes between records) and lose the rest of the file (measured: docs/benchmarks.md,
"Crawl archives"). Here the decompressed stream is cut into records by their ``Content-Length``, and
each block must be followed by line breaks and then the next ``WARC/`` line or the end. A record that
fails a check becomes one :class:`Malformed` item saying why, and reading resumes at the next line
starting with ``WARC/<digit>`` (inside the bad record's block first, where a too-long Content-Length
hides the next record). The record's own bytes are then parsed by warcio (:func:`parse_record`), which
decodes the HTTP headers, chunked transfer encoding and Content-Encoding.

The stream ending inside a record raises :class:`Truncated` for a plain file (it was cut). For a
compressed file the decompressor has already vouched that the stream is complete (a cut one raises
``StreamCorrupt`` in ``linestream``), so there it is the record's Content-Length that is wrong: Malformed.

Offsets are positions in the decompressed stream: byte offsets of a plain ``.warc``.
Memory is bounded by the cap: a block over ``max_block_bytes`` is streamed past, keeping its first
``HEAD_BYTES``; a header over ``MAX_HEADER_BYTES`` is malformed; resynchronising keeps a few bytes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: Bytes of a block kept when the block itself is over the cap: enough for HTTP headers.
HEAD_BYTES = 64 * 1024
#: A WARC header block longer than this is malformed (real ones are under 2 KB).
MAX_HEADER_BYTES = 64 * 1024
#: Bytes of a malformed region kept for the quarantine excerpt.
EXCERPT_BYTES = 400
_MAX_LENGTH_DIGITS = 15  # 10^15 bytes: a petabyte; more digits is garbage
#: Line breaks tolerated between a block and the next record (the standard says exactly CRLF CRLF).
_MAX_GAP = 64
_VERSION = re.compile(rb"WARC/\d+\.\d+")
_START = re.compile(rb"WARC/\d")
_START_PREFIX = re.compile(rb"W(?:A(?:R(?:C(?:/\d?)?)?)?)?\Z")
_LINE_START = re.compile(rb"\nWARC/\d")
_BLANK_LINE = re.compile(rb"\n\r?\n")
_CONTENT = re.compile(rb"[^\r\n]")


class Truncated(Exception):
    """A plain stream ended inside a record; ``complete`` records came before it."""

    def __init__(self, complete: int, offset: int, why: str) -> None:
        super().__init__(why)
        self.complete = complete
        self.offset = offset
        self.why = why


@dataclass
class RawRecord:
    """One framed record: its header fields and its block (None when over the cap)."""

    number: int  # 1-based position among the file's records (a malformed region counts as one)
    offset: int
    header: bytes  # the header block, version line to the blank line
    fields: dict[str, str]  # names lower-cased; a repeated name keeps its first value
    length: int  # Content-Length
    block: bytes | None  # None when length > max_block_bytes
    head: bytes  # the block's first HEAD_BYTES

    @property
    def record_id(self) -> str | None:
        return self.fields.get("warc-record-id")

    @property
    def type(self) -> str:
        return self.fields.get("warc-type", "").lower()


@dataclass
class Malformed:
    """Bytes that are not a usable record; ``record_id`` when its header could be read."""

    number: int
    offset: int
    size: int  # bytes skipped, up to where reading resumed
    why: str
    record_id: str | None
    raw: bytes  # the first EXCERPT_BYTES


class _Window:
    """A sliding buffer over decompressed chunks, addressed by stream offsets."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self.buf = bytearray()
        self.start = 0  # stream offset of buf[0]
        self.eof = False

    @property
    def end(self) -> int:
        return self.start + len(self.buf)

    def more(self) -> bool:
        """Append one more chunk; False at the end of the stream."""
        while not self.eof:
            chunk = next(self._chunks, None)
            if chunk is None:
                self.eof = True
            elif chunk:
                self.buf += chunk
                return True
        return False

    def fill(self, upto: int) -> bool:
        """Read until offset ``upto`` is buffered; False if the stream ends first."""
        while self.end < upto:
            if not self.more():
                return False
        return True

    def get(self, begin: int, stop: int) -> bytes:
        return bytes(self.buf[max(begin - self.start, 0): max(stop - self.start, 0)])

    def drop(self, upto: int) -> None:
        """Forget the stream before ``upto``, reading (and discarding) up to it as needed."""
        while True:
            cut = min(upto, self.end) - self.start
            if cut > 0:
                del self.buf[:cut]
                self.start += cut
            if self.end >= upto or not self.more():
                return

    def is_start(self, pos: int) -> bool:
        """Whether a record starts at ``pos``; also a prefix of ``WARC/<digit>`` cut by the stream's end, so that
        a file cut there reads as truncated rather than as stray bytes."""
        if self.fill(pos + 6):
            return _START.match(self.buf, pos - self.start) is not None
        return _START_PREFIX.match(self.buf, pos - self.start) is not None

    def next_start(self, begin: int) -> int:
        """Offset of the first line at or after ``begin`` that starts with ``WARC/<digit>`` (the stream's end if
        none), dropping what it scans. The byte before ``begin`` is taken to end a line when it was dropped."""
        if begin <= self.start and self.is_start(begin):
            return begin
        at = max(begin - 1, self.start)
        while True:
            m = _LINE_START.search(self.buf, at - self.start)
            if m is not None:
                return self.start + m.start() + 1
            at = max(at, self.end - 6)  # a match may span this chunk and the next
            self.drop(at)
            if not self.more():
                self.drop(self.end)
                return self.end

    def skip_block(self, begin: int, stop: int, hold: int) -> int | None:
        """Stream towards ``stop`` without holding the block, but hold from the first line inside it that
        starts with ``WARC/<digit>`` (up to ``hold`` bytes): if the stream ends before ``stop``, or the block is
        not followed by a record, that is where the next record is. Returns its offset, or None."""
        found: int | None = None
        at = begin - 1  # the header's last byte ends a line
        while self.end < stop:
            if found is None:
                m = _LINE_START.search(self.buf, at - self.start)
                if m is not None and self.start + m.start() + 1 < stop:
                    found = self.start + m.start() + 1
                else:
                    at = max(at, self.end - 6)  # a match may span this chunk and the next
                    self.drop(min(at, stop - 1))
            elif self.end - found > hold:  # too far to hold: the next candidate, if any
                at, found = found, None
                self.drop(at)
                continue
            if not self.more():
                break
        if found is None:
            self.drop(min(stop, self.end) - 1)  # keep the byte before the next record
        return found

    def header_end(self, pos: int) -> int | None:
        """Offset just past the blank line ending the header at ``pos``; None if not within MAX_HEADER_BYTES."""
        while True:
            m = _BLANK_LINE.search(self.buf, pos - self.start, pos - self.start + MAX_HEADER_BYTES)
            if m is not None:
                return self.start + m.end()
            if self.end - pos >= MAX_HEADER_BYTES or not self.more():
                return None


def iter_records(chunks: Iterator[bytes], max_block_bytes: int, compressed: bool) -> Iterator[RawRecord | Malformed]:
    """Framed records of a decompressed WARC stream (see the module docstring)."""
    win = _Window(chunks)
    pos = number = 0
    while True:
        win.drop(pos)
        while (m := _CONTENT.search(win.buf)) is None:  # blank lines between records, skipped a chunk at a time
            win.drop(win.end)
            if not win.more():
                return
        pos = win.start + m.start()
        number += 1
        if not win.is_start(pos):
            raw = win.get(pos, pos + EXCERPT_BYTES)
            nxt = win.next_start(pos + 1)
            yield Malformed(number, pos, nxt - pos, "bytes that are not a WARC record", None, raw)
            pos = nxt
            continue
        item, pos = _record(win, number, pos, max_block_bytes, compressed)
        yield item


def _record(win: _Window, number: int, pos: int, cap: int, compressed: bool) -> tuple[RawRecord | Malformed, int]:
    """The record starting at ``pos``, and where reading goes on."""
    raw = win.get(pos, pos + EXCERPT_BYTES)
    header_end = win.header_end(pos)
    if header_end is None:
        if win.eof and win.end - pos < MAX_HEADER_BYTES:
            return _ended_inside(win, number, pos, raw, None, compressed, win.next_start(pos + 1),
                                 "the stream ends inside a record header")
        return _malformed(number, pos, raw, None, win.next_start(pos + 1),
                          f"no blank line within {MAX_HEADER_BYTES} bytes ends the header")
    header = win.get(pos, header_end)
    fields, problem = _parse_header(header)
    rid = fields.get("warc-record-id")
    if problem is not None:
        return _malformed(number, pos, raw, rid, win.next_start(header_end), problem)
    length = int(fields["content-length"])
    stop = header_end + length
    block: bytes | None = None
    if length <= cap:
        inside = None  # the whole block is held: a record start inside it is found by next_start
        if win.fill(stop):
            block = win.get(header_end, stop)
            head = block[:HEAD_BYTES]
    else:
        win.fill(header_end + HEAD_BYTES)
        head = win.get(header_end, header_end + HEAD_BYTES)
        inside = win.skip_block(header_end, stop, cap)
    if win.end < stop:
        # Content-Length runs past the end: the file was cut, or the length is wrong and a later record
        # (found in what was read) proves it.
        nxt = inside if inside is not None else win.next_start(header_end)
        return _ended_inside(win, number, pos, raw, rid, compressed, nxt,
                             f"the stream ends inside the block of record {number} (Content-Length {length}, "
                             f"{win.end - header_end} bytes of it read)")
    if not _terminated(win, stop):
        # A wrong Content-Length: the block ends elsewhere. Resume inside it, where the next record may start.
        nxt = inside if inside is not None else win.next_start(header_end if block is not None else stop)
        return _malformed(number, pos, raw, rid, nxt, f"Content-Length {length} does not match the record: "
                          "the block is not followed by CRLF CRLF and the next record")
    return RawRecord(number, pos, header, fields, length, block, head), stop


def _parse_header(header: bytes) -> tuple[dict[str, str], str | None]:
    """Fields of a header block and what makes it unusable, if anything."""
    lines = header.replace(b"\r\n", b"\n").rstrip(b"\n").split(b"\n")
    fields: dict[str, str] = {}
    last: str | None = None
    if not _VERSION.fullmatch(lines[0].strip()):
        return fields, f"bad version line {lines[0][:40]!r}"
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t") and last is not None:  # a folded continuation line
            fields[last] += " " + line.strip().decode("utf-8", "replace")
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name.strip():
            return fields, f"header line without a name: {line[:60]!r}"
        last = name.strip().decode("utf-8", "replace").lower()
        fields.setdefault(last, value.strip().decode("utf-8", "replace"))
    length = fields.get("content-length")
    if length is None:
        return fields, "no Content-Length"
    if not length.isascii() or not length.isdigit() or len(length) > _MAX_LENGTH_DIGITS:
        return fields, f"bad Content-Length {length[:40]!r}"
    if not fields.get("warc-type"):
        return fields, "no WARC-Type"
    return fields, None


def _terminated(win: _Window, stop: int) -> bool:
    """Whether the block ending at ``stop`` is followed by the standard CRLF CRLF, or by other line breaks
    and then a record or the end (what lenient writers produce)."""
    win.fill(stop + 4)
    if win.get(stop, stop + 4) == b"\r\n\r\n":
        return True
    gap = 0
    while win.fill(stop + gap + 1) and gap <= _MAX_GAP and win.buf[stop + gap - win.start] in b"\r\n":
        gap += 1
    if not win.fill(stop + gap + 1):
        return True  # the end of the stream: the standard's CRLF CRLF may be missing from the last record
    return 1 <= gap <= _MAX_GAP and win.is_start(stop + gap)


def _malformed(number: int, pos: int, raw: bytes, rid: str | None, nxt: int,
               why: str) -> tuple[Malformed, int]:
    return Malformed(number, pos, nxt - pos, why, rid, raw), nxt


def _ended_inside(win: _Window, number: int, pos: int, raw: bytes, rid: str | None, compressed: bool, nxt: int,
                  why: str) -> tuple[Malformed, int]:
    """The stream ended inside the record at ``pos``; ``nxt`` is the first record start after it that was
    seen. One means a wrong Content-Length; none means a plain file was cut (Truncated), and in a
    compressed one (whose decompressor vouched for its end) a wrong length again."""
    if nxt < win.end:
        return _malformed(number, pos, raw, rid, nxt, f"Content-Length runs past the next record: {why}")
    if compressed:
        return _malformed(number, pos, raw, rid, win.end, f"Content-Length runs past the end of the stream: {why}")
    raise Truncated(number - 1, pos, why)


def parse_record(raw: RawRecord, max_payload_bytes: int) -> tuple[Any, bytes | None]:
    """``(warcio record, payload)`` of a held record, HTTP headers parsed and transfer and content encodings
    decoded. The payload is None when it decodes to more than ``max_payload_bytes`` (a compression bomb
    in Content-Encoding). Raises whatever warcio raises on a record it cannot parse."""
    from warcio.archiveiterator import ArchiveIterator

    if raw.block is None:
        raise ValueError("parse_record needs a held block")
    stream = io.BytesIO(raw.header + raw.block + b"\r\n\r\n")
    for record in ArchiveIterator(stream, check_digests=False):
        payload = record.content_stream().read(max_payload_bytes + 1)
        return record, None if len(payload) > max_payload_bytes else payload
    raise ValueError("warcio found no record in the framed bytes")


def http_head(head: bytes) -> Any:
    """warcio's HTTP status and headers parsed from the first bytes of a response block, or None."""
    from warcio.statusandheaders import StatusAndHeadersParser

    try:
        return StatusAndHeadersParser(["HTTP/1.0", "HTTP/1.1", "HTTP/2", "HTTP/2.0"], verify=False).parse(
            io.BytesIO(head))
    except Exception:  # noqa: BLE001 - headers we cannot read only mean "type unknown"
        return None
