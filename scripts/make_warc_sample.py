"""Build the bundled web-crawl sample (a WARC) from HTML pages under Debian's /usr/share/doc.

    python scripts/make_warc_sample.py                          # curation/data/sample_web/debian-doc.warc.gz
    python scripts/make_warc_sample.py --all --out /tmp/big.warc.gz --repeat 4   # every page, for benchmarks

Deterministic: record ids are UUIDv5 of type, URL and date, dates are a fixed base plus the page's
position, and warcio writes gzip members without a timestamp, so the same pages give the same bytes.
The bundled file is committed (CI machines need not have these pages); this script regenerates it.

Besides one request/response pair per page, the bundled sample holds what a real crawl holds and the
reader must skip or handle: a warcinfo record, a metadata record, a text/plain response, a 404 page,
a second capture of one page (an exact duplicate), and pages served without a charset or as ISO-8859-1.
"""

from __future__ import annotations

import argparse
import datetime
import io
import re
import sys
import uuid
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

DOC_ROOT = Path("/usr/share/doc")
HOST = "https://debian-doc.invalid/"  # .invalid: reserved, never resolves; a URL per page all the same
BASE_DATE = datetime.datetime(2024, 5, 1, tzinfo=datetime.timezone.utc)
OUT = Path(__file__).resolve().parent.parent / "curation" / "data" / "sample_web" / "debian-doc.warc.gz"

#: The bundled sample's pages (relative to /usr/share/doc): manuals, API references, news and FAQs of
#: several packages, ~5-60 KB each. Near-duplicates by nature: the libxslt API pages in two layouts.
SAMPLE_PAGES = [
    "base-passwd/users-and-groups.html",
    "bc/bc.html",
    "fontconfig/fontconfig-user.html",
    "libffi8/html/Introduction.html",
    "libffi8/html/The-Basics.html",
    "libffi8/html/Simple-Example.html",
    "libffi8/html/Types.html",
    "libffi8/html/Primitive-Types.html",
    "libffi8/html/Structures.html",
    "libffi8/html/Size-and-Alignment.html",
    "libffi8/html/Arrays-Unions-Enums.html",
    "libffi8/html/Type-Example.html",
    "libffi8/html/Complex.html",
    "libffi8/html/Multiple-ABIs.html",
    "libffi8/html/The-Closure-API.html",
    "libffi8/html/Closure-Example.html",
    "libffi8/html/Thread-Safety.html",
    "libffi8/html/Memory-Usage.html",
    "libffi8/html/Missing-Features.html",
    "libffi8/html/Index.html",
    "libxslt1-dev/html/intro.html",
    "libxslt1-dev/html/FAQ.html",
    "libxslt1-dev/html/bugs.html",
    "libxslt1-dev/html/docbook.html",
    "libxslt1-dev/html/extensions.html",
    "libxslt1-dev/html/python.html",
    "libxslt1-dev/html/xsltproc.html",
    "libxslt1-dev/html/tutorial/libxslttutorial.html",
    "libxslt1-dev/html/html/libxslt-keys.html",
    "libxslt1-dev/gtk-doc/html/libxslt/libxslt-keys.html",
    "libxslt1-dev/html/html/libxslt-imports.html",
    "libxslt1-dev/gtk-doc/html/libxslt/libxslt-imports.html",
    "libxslt1-dev/html/EXSLT/intro.html",
    "valgrind/html/QuickStart.html",
    "valgrind/html/quick-start.html",
    "valgrind/html/manual-intro.html",
    "valgrind/html/faq.html",
    "valgrind/html/dist.readme.html",
    "valgrind/html/dist.readme-packagers.html",
    "valgrind/html/dist.readme-missing.html",
    "valgrind/html/dh-manual.html",
    "valgrind/html/bbv-manual.html",
    "valgrind/html/license.gpl.html",
    "time/time.html",
    "zlib1g-dev/examples/zlib_how.html",
    "xtrans-dev/xtrans.html",
]
#: A page captured a second time, a day later: an exact duplicate, as recrawls give.
RECRAWLED = "libffi8/html/Introduction.html"
#: A plain-text response (skipped by the reader: not HTML).
PLAIN_TEXT = "bc/copyright"
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def record_id(kind: str, url: str, date: str) -> str:
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'{kind} {url} {date}')}>"


def warc_date(seq: int) -> str:
    return (BASE_DATE + datetime.timedelta(seconds=7 * seq)).strftime("%Y-%m-%dT%H:%M:%SZ")


def content_type(body: bytes) -> str:
    """What a server would send: the page's own meta charset when it has one, else none
    (the reader must then find the charset itself)."""
    m = _META_CHARSET.search(body[:4096])
    return f"text/html; charset={m.group(1).decode('ascii')}" if m else "text/html"


class Sample:
    """Writes request/response pairs and the odd records around them."""

    def __init__(self, fh: io.BufferedIOBase) -> None:
        self.writer = WARCWriter(fh, gzip=True, warc_version="WARC/1.1")
        self.seq = 0

    def _record(self, kind: str, url: str, payload: bytes, http: StatusAndHeaders | None = None,
                content: str = "", extra: dict[str, str] | None = None) -> None:
        date = warc_date(self.seq)
        self.seq += 1
        headers = {"WARC-Record-ID": record_id(kind, url, date), "WARC-Date": date, **(extra or {})}
        rec = self.writer.create_warc_record(url, kind, payload=io.BytesIO(payload), length=len(payload),
                                             http_headers=http, warc_content_type=content,
                                             warc_headers_dict=headers)
        self.writer.write_record(rec)

    def warcinfo(self, filename: str) -> None:
        fields = b"software: curation-mix scripts/make_warc_sample.py\r\nformat: WARC File Format 1.1\r\n" \
                 b"description: pages of Debian's /usr/share/doc served as if crawled\r\n"
        self._record("warcinfo", "", fields, content="application/warc-fields", extra={"WARC-Filename": filename})

    def page(self, url: str, body: bytes, status: str = "200 OK", ctype: str | None = None,
             language: str | None = None) -> None:
        req = StatusAndHeaders(f"GET /{url.removeprefix(HOST)} HTTP/1.1",
                               [("Host", HOST.split("/")[2]), ("User-Agent", "curation-mix-sample/1.0")],
                               is_http_request=True)
        self._record("request", url, b"", http=req)
        headers = [("Content-Type", ctype or content_type(body)), ("Content-Length", str(len(body)))]
        if language:
            headers.append(("Content-Language", language))
        self._record("response", url, body, http=StatusAndHeaders(status, headers, protocol="HTTP/1.1"))

    def metadata(self, url: str, text: str) -> None:
        self._record("metadata", url, text.encode(), content="application/warc-fields")


def all_pages(root: Path) -> list[str]:
    """Every distinct regular HTML file under ``root`` (symlinked copies once), sorted."""
    seen: set[Path] = set()
    pages = []
    for path in sorted(root.rglob("*.htm*")):
        if not path.is_file() or path.suffix not in (".html", ".htm") or path.resolve() in seen:
            continue
        seen.add(path.resolve())
        pages.append(path.relative_to(root).as_posix())
    return pages


def build(out: Path, root: Path, pages: list[str], extras: bool, repeat: int) -> int:
    """Write the WARC; returns the number of response records."""
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with out.open("wb") as fh:
        sample = Sample(fh)
        sample.warcinfo(out.name)
        for copy in range(repeat):
            for rel in pages:
                path = root / rel
                if not path.is_file():
                    print(f"make_warc_sample: {path} is missing; skipped", file=sys.stderr)
                    continue
                # Copies past the first get their own URL, so a benchmark file is not one page set repeated verbatim.
                url = HOST + rel + (f"?copy={copy}" if copy else "")
                # A hint the reader should carry: valgrind's manual is served with Content-Language.
                sample.page(url, path.read_bytes(), language="en" if rel.startswith("valgrind/") else None)
                n += 1
        if extras:
            n += _extras(sample, root)
    return n


def _extras(sample: Sample, root: Path) -> int:
    """The records beside plain pages that a crawl holds; see the module docstring."""
    sample.metadata(HOST + SAMPLE_PAGES[0], "fetchTimeMs: 12\r\n")
    if (root / RECRAWLED).is_file():
        sample.seq += 86400 // 7  # a day later
        sample.page(HOST + RECRAWLED, (root / RECRAWLED).read_bytes())
    if (root / PLAIN_TEXT).is_file():
        sample.page(HOST + PLAIN_TEXT, (root / PLAIN_TEXT).read_bytes(), ctype="text/plain; charset=utf-8")
    sample.page(HOST + "missing.html", b"<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1>"
                b"<p>The requested URL was not found on this server.</p></body></html>",
                status="404 Not Found")
    return 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--root", type=Path, default=DOC_ROOT, help="where the HTML pages are")
    ap.add_argument("--all", action="store_true", help="every HTML page under --root, without the odd records")
    ap.add_argument("--repeat", type=int, default=1, help="write the page set this many times (distinct URLs)")
    args = ap.parse_args()
    pages = all_pages(args.root) if args.all else SAMPLE_PAGES
    n = build(args.out, args.root, pages, extras=not args.all, repeat=args.repeat)
    print(f"wrote {args.out}: {n} responses, {args.out.stat().st_size} bytes")


if __name__ == "__main__":
    main()
