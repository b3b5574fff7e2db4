"""Crawl archives as input (``curation.io.web``): WARC responses, WET conversions, HTML files.

Every archive here is built in the test with warcio, so offsets, ids and texts are known exactly.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from curation.io.extract import ExtractionFailed, SandboxedExtractor
from curation.io.html_text import Undecodable, decode_page, html_lang
from curation.io.readers import CorruptInputError, InputConfig, ReadBatch, detect_format, read_documents

DATE = "2024-01-02T03:04:05Z"
PAGE = b"<html lang='de-AT'><head><title>T</title></head><body><h1>Heading</h1><p>First paragraph.</p></body></html>"
PAGE_TEXT = "Heading\n\nFirst paragraph."
#: 12,000 nested <div>s: resiliparse needs seconds (quadratic in depth), far over the tests' time limit.
PATHOLOGICAL = b"<html><body>" + b"<div>" * 12000 + b"deep" + b"</div>" * 12000 + b"</body></html>"


def rid(n: int) -> str:
    return f"<urn:uuid:00000000-0000-0000-0000-{n:012d}>"


@dataclass
class Rec:
    """One record to write: a response (``http`` headers given) or any other type."""

    kind: str
    url: str = "https://example.org/"
    body: bytes = b""
    http: list[tuple[str, str]] | None = None
    status: str = "200 OK"
    n: int = 0  # record id number; 0: no WARC-Record-ID
    extra: dict[str, str] = field(default_factory=dict)
    content_type: str = ""


def page(n: int, url: str, body: bytes = PAGE, ctype: str = "text/html; charset=utf-8", **kw: Any) -> Rec:
    return Rec("response", url, body, http=[("Content-Type", ctype)] if ctype else [], n=n, **kw)


def warc_bytes(recs: list[Rec]) -> tuple[bytes, list[int]]:
    """The uncompressed WARC and each record's offset in it."""
    out = io.BytesIO()
    writer = WARCWriter(out, gzip=False)
    offsets = []
    for r in recs:
        offsets.append(out.tell())
        headers = {"WARC-Date": DATE, **r.extra}
        if r.n:
            headers["WARC-Record-ID"] = rid(r.n)
        http = StatusAndHeaders(r.status, r.http, protocol="HTTP/1.1") if r.http is not None else None
        rec = writer.create_warc_record(r.url, r.kind, payload=io.BytesIO(r.body), length=len(r.body),
                                        http_headers=http, warc_content_type=r.content_type,
                                        warc_headers_dict=headers)
        if not r.n:
            rec.rec_headers.remove_header("WARC-Record-ID")
        writer.write_record(rec)
    return out.getvalue(), offsets


def gzip_members(data: bytes, offsets: list[int]) -> bytes:
    """Each record in its own gzip member, as crawlers write .warc.gz."""
    bounds = offsets + [len(data)]
    return b"".join(gzip.compress(data[a:b], mtime=0) for a, b in itertools.pairwise(bounds))


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def read(path: Path, **kw: Any) -> list[ReadBatch]:
    return list(read_documents(str(path), path.name, InputConfig(paths=[str(path)], **kw)))


def docs(batches: list[ReadBatch]) -> list[dict[str, Any]]:
    return pa.concat_tables([b.table for b in batches]).to_pylist()


def quarantine(batches: list[ReadBatch]) -> list[tuple[int | None, str]]:
    return [(q["line"], q["error"]) for b in batches for q in b.quarantine]


def counts(batches: list[ReadBatch]) -> tuple[int, int, int, int]:
    """(documents, blank, quarantined, lines), and the reader's accounting holds."""
    n = (sum(len(b.table) for b in batches), sum(b.blank for b in batches), sum(b.quarantined for b in batches),
         sum(b.lines for b in batches))
    assert n[0] + n[1] + n[2] == n[3]
    return n


def test_html_responses_become_documents_with_their_metadata(tmp_path: Path) -> None:
    recs = [
        Rec("warcinfo", "", b"software: test\r\n", content_type="application/warc-fields", n=1),
        Rec("request", "https://example.org/a", b"", http=None, n=2),
        Rec("response", "https://example.org/a", PAGE, n=3, extra={"WARC-Identified-Content-Language": "deu"},
            http=[("Content-Type", "text/html; charset=utf-8"), ("Content-Language", "de")]),
        page(4, "https://example.org/robots.txt", b"User-agent: *", ctype="text/plain"),
        page(5, "https://example.org/logo.png", b"\x89PNG\r\n", ctype="image/png"),
        Rec("metadata", "https://example.org/a", b"fetchTimeMs: 3\r\n", content_type="application/warc-fields", n=6),
        page(7, "https://example.org/b", b"<p>No type given: a fragment, not a page.</p>", ctype=""),
        page(8, "https://example.org/c", b"<!doctype html><p>Gone.</p>", ctype="", status="404 Not Found"),
    ]
    data, offsets = warc_bytes(recs)
    batches = read(write(tmp_path, "crawl.warc.gz", gzip_members(data, offsets)), domain="web")
    assert counts(batches) == (2, 6, 0, 8)
    a, b = docs(batches)
    assert a == {
        "id": "urn:uuid:00000000-0000-0000-0000-000000000003", "text": PAGE_TEXT, "source": "crawl.warc.gz",
        "domain": "web", "url": "https://example.org/a", "n_chars": len(PAGE_TEXT),
        "metadata": a["metadata"]}
    assert json.loads(a["metadata"]) == {
        "warc_record_id": rid(3), "warc_date": DATE, "warc_offset": offsets[2],
        "content_type": "text/html; charset=utf-8", "http_status": 200, "charset": "utf-8", "charset_source": "http",
        "html_lang": "de-at", "content_language": "de", "identified_language": "deu"}
    # No Content-Type: the payload's first bytes decide (a <p> fragment is not an HTML document); any status.
    assert (b["id"], b["text"]) == ("urn:uuid:00000000-0000-0000-0000-000000000008", "Gone.")
    meta = json.loads(b["metadata"])
    assert (meta["http_status"], meta["content_type"], meta["charset_source"]) == (404, None, "utf-8")


def test_a_response_without_content_type_is_sniffed(tmp_path: Path) -> None:
    recs = [page(1, "https://e.org/doc", b"<!DOCTYPE html><html><body><p>Sniffed page.</p></body></html>", ctype=""),
            page(2, "https://e.org/bin", b"\x00\x01binary", ctype=""),
            page(3, "https://e.org/xhtml", b'<?xml version="1.0" encoding="UTF-8"?>\n<!-- c -->\n<html><body>'
                                           b"<p>XHTML page.</p></body></html>", ctype="")]
    data, _ = warc_bytes(recs)
    batches = read(write(tmp_path, "s.warc", data))
    assert counts(batches) == (2, 1, 0, 3)
    assert [d["text"] for d in docs(batches)] == ["Sniffed page.", "XHTML page."]
    assert json.loads(docs(batches)[0]["metadata"])["content_type"] is None


def test_wet_conversion_records_keep_their_text(tmp_path: Path) -> None:
    text = "Plain text line one.\nLigne deux, déjà.\n"
    recs = [Rec("warcinfo", "", b"x: y\r\n", content_type="application/warc-fields", n=1),
            Rec("conversion", "https://e.org/p", text.encode(), n=2, content_type="text/plain",
                extra={"WARC-Identified-Content-Language": "eng,fra"})]
    data, offsets = warc_bytes(recs)
    batches = read(write(tmp_path, "c.warc.wet.gz", gzip_members(data, offsets)))
    assert counts(batches) == (1, 1, 0, 2)
    (doc,) = docs(batches)
    assert doc["text"] == text and doc["url"] == "https://e.org/p"
    assert json.loads(doc["metadata"]) == {
        "warc_record_id": rid(2), "warc_date": DATE, "warc_offset": offsets[1], "content_type": "text/plain",
        "http_status": None, "charset": "utf-8", "charset_source": "utf-8", "html_lang": None,
        "content_language": None, "identified_language": "eng,fra"}


def test_an_html_file_is_one_document(tmp_path: Path) -> None:
    path = write(tmp_path, "page.htm", b'<html lang="fr"><head><meta charset="windows-1252"></head>'
                                       b"<body><p>Caf\xe9 cr\xe8me.</p></body></html>")
    batches = read(path)
    assert counts(batches) == (1, 0, 0, 1)
    (doc,) = docs(batches)
    assert (doc["id"], doc["text"], doc["url"]) == ("page.htm", "Café crème.", None)
    assert json.loads(doc["metadata"]) == {"content_type": "text/html", "charset": "cp1252", "charset_source": "meta",
                                           "html_lang": "fr"}


@pytest.mark.parametrize("name, fmt", [("a.warc", "warc"), ("a.warc.gz", "warc"), ("a.warc.zst", "warc"),
                                       ("CC-MAIN-1.warc.wet.gz", "wet"), ("a.wet", "wet"), ("a.html", "html"),
                                       ("a.HTM", "html"), ("a.jsonl.gz", "jsonl")])
def test_web_formats_are_detected_by_extension(name: str, fmt: str) -> None:
    assert detect_format(name, "auto") == fmt


def test_a_record_without_record_id_gets_a_url_and_date_hash(tmp_path: Path) -> None:
    data, _ = warc_bytes([page(0, "https://e.org/x")])
    (doc,) = docs(read(write(tmp_path, "n.warc", data)))
    assert doc["id"] == "sha1:" + __import__("hashlib").sha1(f"https://e.org/x\t{DATE}".encode()).hexdigest()


def test_chunked_and_gzip_encoded_payloads_are_decoded(tmp_path: Path) -> None:
    body = gzip.compress(PAGE, mtime=0)
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    rec = Rec("response", "https://e.org/z", chunked, n=1, http=[
        ("Content-Type", "text/html"), ("Content-Encoding", "gzip"), ("Transfer-Encoding", "chunked")])
    data, _ = warc_bytes([rec])
    (doc,) = docs(read(write(tmp_path, "z.warc", data)))
    assert doc["text"] == PAGE_TEXT


# --- charsets and language hints -------------------------------------------------------------------------------

CYRILLIC = "Съешь же ещё этих мягких французских булок, да выпей чаю. " * 4


@pytest.mark.parametrize("payload, ctype, text, charset, source", [
    ("Grüße".encode("cp1252"), "text/html; charset=windows-1252", "Grüße", "cp1252", "http"),
    ("Grüße".encode(), "text/html; charset=utf-8", "Grüße", "utf-8", "http"),
    # A declared charset that does not decode the bytes is passed over.
    ("Grüße".encode(), "text/html; charset=us-ascii", "Grüße", "utf-8", "utf-8"),
    ("\ufeffGrüße".encode("utf-16-le"), None, "Grüße", "utf-16-le", "bom"),
    (b'<meta http-equiv="Content-Type" content="text/html; charset=ISO-8859-1">Gr\xfc\xdfe', "text/html",
     '<meta http-equiv="Content-Type" content="text/html; charset=ISO-8859-1">Grüße', "iso8859-1", "meta"),
    ("Grüße".encode(), "text/html; charset=no-such-charset", "Grüße", "utf-8", "utf-8"),
    (CYRILLIC.encode("cp1251"), "text/html", CYRILLIC, "cp1251", "detected"),
])
def test_charset_order_declared_meta_utf8_detected(payload: bytes, ctype: str | None, text: str, charset: str,
                                                   source: str) -> None:
    decoded = decode_page(payload, ctype)
    assert (decoded.text, decoded.charset, decoded.source) == (text, charset, source)


def test_a_page_with_few_bad_bytes_is_decoded_with_replacement_and_binary_is_undecodable() -> None:
    # UTF-8 with one stray byte: no charset decodes it strictly (the detector finds none); 1 of 3,801 replaced.
    mostly = ("Grüße Welt, schön. " * 200).encode() + b"\xff"
    decoded = decode_page(mostly, "text/html")
    assert (decoded.source, decoded.text.count("\ufffd")) == ("replaced", 1)
    with pytest.raises(Undecodable, match=r"no charset decodes it \(declared: none, meta: none, detected: none\); "
                                          r"as UTF-8 \d+ of \d+ characters would be replaced"):
        decode_page(bytes(range(128, 256)) * 8, "text/html")


@pytest.mark.parametrize("payload, lang", [
    (b"<html lang='EN_us'><body lang=fr>", "en-us"), (b'<html><body lang="pt-BR">', "pt-br"),
    (b'<html xml:lang="nl">', "nl"), (b"<html><body>", None),
])
def test_html_lang_hint(payload: bytes, lang: str | None) -> None:
    assert html_lang(payload) == lang


# --- what is quarantined ---------------------------------------------------------------------------------------

def test_malformed_records_are_quarantined_and_reading_resumes(tmp_path: Path) -> None:
    data, off = warc_bytes([page(i, f"https://e.org/{i}") for i in range(1, 8)])
    rec = [data[a:b] for a, b in zip(off, off[1:] + [len(data)])]
    cl = int(rec[0].split(b"Content-Length: ")[1].split(b"\r\n")[0])

    def length(i: int, n: int) -> bytes:
        return rec[i].replace(b"Content-Length: %d" % cl, b"Content-Length: %d" % n)

    junk = b"junk between records\r\n"
    parts = [rec[0], rec[1].replace(b"WARC-Type: response", b"WARC-Type response"),  # 2: a header line without ':'
             length(2, cl + 100),  # 3: too long, its block runs into record 4
             length(3, cl - 7),  # 4: too short
             rec[4], junk,
             length(5, 10**9),  # 6: past the end of the file, over the cap: streamed past, record 7 found in it
             rec[6]]
    at = [sum(map(len, parts[:i])) for i in range(len(parts))]
    batches = read(write(tmp_path, "m.warc", b"".join(parts)))
    assert [d["url"] for d in docs(batches)] == ["https://e.org/1", "https://e.org/5", "https://e.org/7"]
    assert quarantine(batches) == [
        (2, (f"malformed record 2 at offset {at[1]} ({rid(2)}): header line without a name: b'WARC-Type response'; "
             f"{len(parts[1])} bytes skipped")),
        (3, (f"malformed record 3 at offset {at[2]} ({rid(3)}): Content-Length {cl + 100} does not match the record: "
             f"the block is not followed by CRLF CRLF and the next record; {len(parts[2])} bytes skipped")),
        (4, (f"malformed record 4 at offset {at[3]} ({rid(4)}): Content-Length {cl - 7} does not match the record: "
             f"the block is not followed by CRLF CRLF and the next record; {len(parts[3])} bytes skipped")),
        (6, (f"malformed record 6 at offset {at[5]} (no WARC-Record-ID): bytes that are not a WARC record; "
             f"{len(junk)} bytes skipped")),
        (7, (f"malformed record 7 at offset {at[6]} ({rid(6)}): Content-Length runs past the next record: the "
             f"stream ends inside the block of record 7 (Content-Length 1000000000, "
             f"{cl + 4 + len(parts[7])} bytes of it read); "  # its own block and CRLF CRLF, then record 7
             f"{len(parts[6])} bytes skipped")),
    ]
    assert counts(batches) == (3, 0, 5, 8)


def test_pages_over_the_size_cap_are_quarantined_and_other_large_records_skipped(tmp_path: Path) -> None:
    big_page = b"<html><body><p>" + b"word " * 400 + b"</p></body></html>"
    bomb = gzip.compress(b"<html>" + b" " * 100_000, mtime=0)  # 100 KB of HTML once decoded
    recs = [page(1, "https://e.org/big", big_page), page(2, "https://e.org/video", b"\x00" * 5000, ctype="video/mp4"),
            Rec("response", "https://e.org/bomb", bomb, n=3, http=[("Content-Type", "text/html"),
                                                                   ("Content-Encoding", "gzip")]),
            page(4, "https://e.org/small")]
    data, off = warc_bytes(recs)
    batches = read(write(tmp_path, "big.warc", data), max_record_bytes=1000)
    assert [d["url"] for d in docs(batches)] == ["https://e.org/small"]
    block = len(big_page) + len(b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n")
    assert quarantine(batches) == [
        (1, f"record 1 at offset 0 ({rid(1)}): block is {block} bytes, over input.max_record_bytes=1000; not read"),
        (3, (f"record 3 at offset {off[2]} ({rid(3)}): payload decodes to more than input.max_record_bytes=1000 bytes "
             "(Content-Encoding); not read")),
    ]
    assert counts(batches) == (1, 1, 2, 4)


def test_an_undecodable_page_is_quarantined(tmp_path: Path) -> None:
    data, _off = warc_bytes([page(1, "https://e.org/bin", bytes(range(128, 256)) * 4, ctype="text/html"),
                            page(2, "https://e.org/ok")])
    batches = read(write(tmp_path, "u.warc", data))
    assert [d["url"] for d in docs(batches)] == ["https://e.org/ok"]
    assert quarantine(batches) == [
        (1, (f"record 1 at offset 0 ({rid(1)}): undecodable page: no charset decodes it (declared: none, meta: none, "
             "detected: none); as UTF-8 512 of 512 characters would be replaced"))]


def test_a_runaway_extraction_is_killed_and_the_next_page_is_read(tmp_path: Path) -> None:
    data, off = warc_bytes([page(1, "https://e.org/1"), page(2, "https://e.org/deep", PATHOLOGICAL),
                            page(3, "https://e.org/3")])
    batches = read(write(tmp_path, "t.warc", data), extract_timeout_s=0.5)
    assert [(d["url"], d["text"]) for d in docs(batches)] == [("https://e.org/1", PAGE_TEXT),
                                                               ("https://e.org/3", PAGE_TEXT)]
    assert quarantine(batches) == [
        (2, f"record 2 at offset {off[1]} ({rid(2)}): extraction timed out after 0.5 s; its process was killed")]


def test_the_timed_out_worker_process_is_gone() -> None:
    with SandboxedExtractor("resiliparse", 0.3) as sandbox:
        assert sandbox.extract(PAGE.decode()) == PAGE_TEXT
        pid = sandbox.pid
        with pytest.raises(ExtractionFailed, match=r"^extraction timed out after 0.3 s; its process was killed$"):
             sandbox.extract(PATHOLOGICAL.decode())
        with pytest.raises(ProcessLookupError):
             os.kill(pid, 0)  # type: ignore[arg-type]
        assert sandbox.extract(PAGE.decode()) == PAGE_TEXT and sandbox.starts == 2


def _raise_on_boom(html: str) -> str:
    if "boom" in html:
        raise ValueError("no main text in a boom")
    return "fine"


def _die_on_boom(html: str) -> str:
    if "boom" in html:
        os.kill(os.getpid(), 9)
    return "fine"


@pytest.mark.parametrize("func, error", [
    ("_raise_on_boom", "extractor error: ValueError: no main text in a boom"),
    ("_die_on_boom", "the extractor process died (killed by SIGKILL)"),
])
def test_an_extractor_error_or_crash_loses_only_its_page(tmp_path: Path, func: str, error: str) -> None:
    data, _off = warc_bytes([page(1, "https://e.org/1", b"<p>boom</p>"), page(2, "https://e.org/2")])
    path = write(tmp_path, "e.warc", data)
    cfg = InputConfig(paths=[str(path)])
    cfg.extractor = f"{__name__}:{func}"  # type: ignore[assignment]  # not a config choice: module:function
    batches = list(read_documents(str(path), path.name, cfg))
    assert [(d["url"], d["text"]) for d in docs(batches)] == [("https://e.org/2", "fine")]
    assert quarantine(batches) == [(1, f"record 1 at offset 0 ({rid(1)}): {error}")]


@pytest.mark.parametrize("mode", ["fail", "quarantine"])
def test_a_truncated_warc_gz_follows_on_corrupt_file(tmp_path: Path, mode: str) -> None:
    data, off = warc_bytes([page(i, f"https://e.org/{i}") for i in range(1, 5)])
    gz = gzip_members(data, off)
    path = write(tmp_path, "cut.warc.gz", gz[: len(gz) * 5 // 8])  # inside the third record's member
    if mode == "fail":
        with pytest.raises(CorruptInputError, match=r"cut.warc.gz: corrupt or truncated file after record 2 "
                                                    r"\(EOFError: Compressed file ended before the end-of-stream "
                                                    r"marker was reached\); 2 records read before it"):
             read(path)
        return
    batches = read(path, on_corrupt_file="quarantine")
    assert [d["url"] for d in docs(batches)] == ["https://e.org/1", "https://e.org/2"]
    assert quarantine(batches) == [(3, ("corrupt or truncated file (EOFError: Compressed file ended before the "
                                       "end-of-stream marker was reached); 2 records read before it; the rest of the "
                                       "file is lost"))]
    assert counts(batches) == (2, 0, 1, 3)


def test_a_plain_warc_cut_inside_a_record_is_a_truncated_file(tmp_path: Path) -> None:
    data, off = warc_bytes([page(i, f"https://e.org/{i}") for i in range(1, 4)])
    path = write(tmp_path, "cut.warc", data[: off[2] + 450])
    batches = read(path, on_corrupt_file="quarantine")
    assert [d["url"] for d in docs(batches)] == ["https://e.org/1", "https://e.org/2"]
    cl = int(data[off[2]:].split(b"Content-Length: ")[1].split(b"\r\n")[0])
    head = 450 - (off[1] - off[0] - cl - 4)  # the cut record's header is as long as the first one's
    assert quarantine(batches) == [(3, (f"corrupt or truncated file (the stream ends inside the block of record 3 "
                                       f"(Content-Length {cl}, {head} bytes of it read)); 2 records read before it; "
                                       "the rest of the file is lost"))]
