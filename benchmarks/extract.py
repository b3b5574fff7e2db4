""".venv/bin/python benchmarks/extract.py

Crawl archives in: documents/s per core and main-text quality of this project's WARC reader against datatrove's
own (``datatrove.pipeline.readers.WarcReader`` + ``datatrove.pipeline.extractors.Trafilatura``, 0.10.1).

Speed. Every HTML page under /usr/share/doc up to ``--max-page-bytes`` (Debian's manuals; ``--repeat`` copies
with distinct URLs) is written to one .warc.gz by ``scripts/make_warc_sample.py``; each reader then reads that
same file in a fresh process, one page at a time, each with its extraction worker process (ours: a subprocess per
reader, killed past the time limit; datatrove: its ExtractorSandbox, a forked process). Timed: the whole read,
imports excluded; CPU is user + system time of the reader and its reaped children (the workers).
Documents counted: pages with non-empty text (datatrove's extractor drops empty ones; ours drops them before the
first stage). Rows: ours with resiliparse (the default), ours with trafilatura (same options as datatrove's
but ``deduplicate=False``), datatrove's reader + Trafilatura (its defaults: favour_precision, deduplicate).
Time limits are 60 s for all, so that no page is cut by a limit in one reader and not in another.

Quality. ``benchmarks/data/extract_labels.jsonl`` holds 20 pages of the bundled sample WARC whose visible lines
were labelled by hand as main text or not (menus, tables of contents, prev/next links, banners, signatures,
legal front matter are not). Each extractor's output is split into lines and normalised (NFKC, whitespace,
bullets); an output line counts as correct when it occurs in the page's main text (its lines joined by
spaces), and a labelled main line counts as found when it occurs in the output joined the same way, so
extractors that break or join lines differently are not penalised. Precision = correct / output lines,
recall = found / main lines, summed over the pages. Caveat: the labelled lines are those of a full-text
rendering by resiliparse, so line boundaries favour it slightly; the containment rule limits this.
datatrove's WarcReader skips a response without WARC-Identified-Payload-Type whose payload libmagic does not
call text/html: the XHTML pages that start with ``<?xml`` (7 of the 20), so a second datatrove row runs its
extractor on every page, to tell the reader's share from the extractor's.

Also measured: the WARC libraries alone (warcio and FastWARC iterating the same file and reading every
response payload), µs per record.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
SAMPLE = REPO / "curation" / "data" / "sample_web" / "debian-doc.warc.gz"
LABELS = REPO / "benchmarks" / "data" / "extract_labels.jsonl"
TIMEOUT_S = 60.0


def build_warc(out: Path, max_page_bytes: int, repeat: int) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "scripts"))
    import make_warc_sample as mws

    pages = [p for p in mws.all_pages(mws.DOC_ROOT) if (mws.DOC_ROOT / p).stat().st_size <= max_page_bytes]
    if not pages:
        raise SystemExit(f"no HTML pages under {mws.DOC_ROOT}")
    n = mws.build(out, mws.DOC_ROOT, pages, extras=False, repeat=repeat)
    html = sum((mws.DOC_ROOT / p).stat().st_size for p in pages) * repeat
    return {"pages": n, "html_mb": html / 1e6, "warc_gz_mb": out.stat().st_size / 1e6}


def cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_ours(path: str, extractor: str) -> dict[str, Any]:
    from curation.io.readers import InputConfig, read_documents

    cfg = InputConfig(paths=[path], extractor=extractor, extract_timeout_s=TIMEOUT_S,  # type: ignore[arg-type]
                      max_record_bytes=1 << 30)
    t, c = time.perf_counter(), cpu()
    docs = chars = quarantined = 0
    for batch in read_documents(path, Path(path).name, cfg):
        texts = [x for x in batch.table.column("text").to_pylist() if x]
        docs += len(texts)
        chars += sum(map(len, texts))
        quarantined += batch.quarantined
    return {"docs": docs, "chars": chars, "quarantined": quarantined, "wall": time.perf_counter() - t,
            "cpu": cpu() - c}


def run_datatrove(path: str) -> dict[str, Any]:
    import logging

    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers import WarcReader
    from datatrove.utils.logging import logger

    logger.remove()  # its per-file progress lines would be timed too
    logging.disable(logging.WARNING)
    folder, name = str(Path(path).parent), Path(path).name
    t, c = time.perf_counter(), cpu()
    docs = chars = 0
    reader = WarcReader(folder, glob_pattern=name)
    for doc in Trafilatura(timeout=TIMEOUT_S).run(reader.run()):
        if doc.text:
            docs += 1
            chars += len(doc.text)
    return {"docs": docs, "chars": chars, "quarantined": None, "wall": time.perf_counter() - t, "cpu": cpu() - c}


def run_libraries(path: str) -> dict[str, Any]:
    """µs per record for warcio and FastWARC reading every response payload of the file (best of 3)."""
    from fastwarc.warc import ArchiveIterator as FastIterator
    from fastwarc.warc import WarcRecordType
    from warcio.archiveiterator import ArchiveIterator

    def warcio_read() -> int:
        n = 0
        with open(path, "rb") as fh:
            for rec in ArchiveIterator(fh):
                n += 1
                if rec.rec_type == "response":
                    rec.content_stream().read()
        return n

    def fastwarc_read() -> int:
        n = 0
        with open(path, "rb") as fh:
            for rec in FastIterator(fh, parse_http=True):
                n += 1
                if rec.record_type == WarcRecordType.response:
                    rec.reader.read()
        return n

    out = {}
    for name, fn in (("warcio", warcio_read), ("fastwarc", fastwarc_read)):
        best = float("inf")
        for _ in range(3):
            c = cpu()
            n = fn()
            best = min(best, cpu() - c)
        out[name] = best / n * 1e6
    return out


def child(args: argparse.Namespace) -> None:
    what = args.child
    if what.startswith("quality:"):
        result = quality(what.split(":", 1)[1])
    elif what == "datatrove":
        result = run_datatrove(args.warc)
    elif what == "libraries":
        result = run_libraries(args.warc)
    else:
        result = run_ours(args.warc, what.split("/")[1])
    print("RESULT " + json.dumps(result))


def measure(what: str, warc: Path) -> dict[str, Any]:
    """One measurement in a fresh interpreter, so that imports and caches do not carry over."""
    proc = subprocess.run([sys.executable, __file__, "--child", what, "--warc", str(warc)], env=ENV, check=False,
                          capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{what} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# --- quality -----------------------------------------------------------------------------------------------------

_BULLET = re.compile(r"^\s*(?:[•*·\-–]|\d+\.)\s+")


def norm(line: str) -> str:
    line = unicodedata.normalize("NFKC", line).replace("¶", " ")
    return re.sub(r"\s+", " ", _BULLET.sub("", line)).strip()


def score(main: list[str], extracted: str) -> tuple[int, int, int, int]:
    """(correct output lines, output lines, found main lines, main lines); lines under 2 characters ignored."""
    main_n = [m for m in map(norm, main) if len(m) >= 2]
    out = [o for o in map(norm, extracted.splitlines()) if len(o) >= 2]
    main_blob, out_blob = " ".join(main_n), " ".join(out)
    return sum(o in main_blob for o in out), len(out), sum(m in out_blob for m in main_n), len(main_n)


def sample_pages() -> tuple[dict[str, str], dict[str, str]]:
    """The bundled sample's pages as HTML text: decoded as ours decodes them, and as datatrove's reader does."""
    from datatrove.pipeline.readers.warc import process_record
    from warcio.archiveiterator import ArchiveIterator

    from curation.io.html_text import decode_page

    ours, theirs = {}, {}
    with open(SAMPLE, "rb") as fh:
        for rec in ArchiveIterator(fh):
            if rec.rec_type != "response":
                continue
            url = rec.rec_headers.get_header("WARC-Target-URI")
            payload = rec.content_stream().read()
            ctype = rec.http_headers.get_header("Content-Type")
            ours.setdefault(url, decode_page(payload, ctype).text)
            # datatrove's own decoding, on the record re-read (process_record reads the payload itself)
            with open(SAMPLE, "rb") as again:
                for r2 in ArchiveIterator(again):
                    if r2.rec_type == "response" and r2.rec_headers.get_header("WARC-Target-URI") == url:
                        data = process_record(r2)
                        theirs.setdefault(url, data["text"] if data else "")
                        break
    return ours, theirs


QUALITY = {"ours (resiliparse)": "resiliparse", "ours (trafilatura)": "trafilatura",
           "datatrove (WarcReader + Trafilatura)": "datatrove",
           "datatrove's Trafilatura alone, every page": "datatrove-extractor"}


def quality(which: str) -> dict[str, Any]:
    """Line precision and recall of one extractor over the labelled pages, in label order. Run in a fresh
    process per extractor: trafilatura's deduplication cache (datatrove turns it on) lives for the process."""
    labels = [json.loads(x) for x in LABELS.read_text().splitlines() if x.strip()]
    ours_html, theirs_html = sample_pages()
    if which.startswith("datatrove"):
        from datatrove.pipeline.extractors import Trafilatura

        dt = Trafilatura()
        # "datatrove": the pages its WarcReader yields (a page it skips has no text); "-extractor": every page.
        pages = theirs_html if which == "datatrove" else ours_html
        outputs = [dt.extract(pages[lab["url"]]) or "" if pages[lab["url"]] else "" for lab in labels]
    else:
        from curation.io.extract import extract_text

        outputs = [extract_text(ours_html[lab["url"]], which) for lab in labels]
    tot = [0, 0, 0, 0]
    for lab, out in zip(labels, outputs):
        for i, v in enumerate(score(lab["main"], out)):
            tot[i] += v
    return {"precision": tot[0] / max(tot[1], 1), "recall": tot[2] / max(tot[3], 1), "correct": tot[0],
            "output_lines": tot[1], "found": tot[2], "main_lines": tot[3]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-page-bytes", type=int, default=1_000_000, help="leave out larger pages (one 8 MB page)")
    ap.add_argument("--repeat", type=int, default=1, help="copies of the page set in the benchmark WARC")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--warc", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if not args.skip_speed:
        with tempfile.TemporaryDirectory() as tmp:
            warc = Path(tmp) / "bench.warc.gz"
            size = build_warc(warc, args.max_page_bytes, args.repeat)
            print(f"data: {size['pages']} HTML pages, {size['html_mb']:.1f} MB of HTML, "
                  f"{size['warc_gz_mb']:.1f} MB .warc.gz (Debian /usr/share/doc, pages <= {args.max_page_bytes} "
                  f"bytes, x{args.repeat})")
            libs = measure("libraries", warc)
            print(f"WARC libraries alone (read every response payload): warcio {libs['warcio']:.0f} µs/record, "
                  f"FastWARC {libs['fastwarc']:.0f} µs/record")
            results = {w: measure(w, warc) for w in ("ours/resiliparse", "ours/trafilatura", "datatrove")}
        base = results["datatrove"]["docs"] / results["datatrove"]["cpu"]
        print("\n| reader | docs | chars out | quarantined | wall s | CPU s | docs/s per core | vs datatrove "
              "| CPU ms per HTML response |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, r in results.items():
            rate = r["docs"] / r["cpu"]
            quarantined = "-" if r["quarantined"] is None else r["quarantined"]
            print(f"| {name} | {r['docs']} | {r['chars']:,} | {quarantined} | {r['wall']:.1f} | {r['cpu']:.1f} "
                  f"| {rate:.1f} | {rate / base:.2f}x | {r['cpu'] / size['pages'] * 1000:.1f} |")
    print("\nextractor quality on benchmarks/data/extract_labels.jsonl (20 pages):\n")
    print("| extractor | line precision | line recall | correct / output lines | found / main lines |")
    print("|---|---:|---:|---:|---:|")
    for name, which in QUALITY.items():
        r = measure(f"quality:{which}", SAMPLE)
        print(f"| {name} | {r['precision']:.3f} | {r['recall']:.3f} | {r['correct']} / {r['output_lines']} "
              f"| {r['found']} / {r['main_lines']} |")


if __name__ == "__main__":
    main()
