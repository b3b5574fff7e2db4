"""PII detection: precision/recall on the labelled set and docs/s per core, pii_v1 vs datatrove's PIIFormatter.

    .venv/bin/python benchmarks/pii.py                 # labelled set + bundled sample (curation/data/sample)
    .venv/bin/python benchmarks/pii.py --repeat 5      # best of 5 timing passes

Accuracy: exact spans (start, end, type) on ``curation.stages.pii.labelled`` (the lines the tests
use). datatrove's ``PIIFormatter`` only handles e-mails and IPv4 addresses; its spans are taken from
the formatter's own compiled regexes and validators (``emails_replacer`` -> email, ``ip_replacer``
with its public-only validator -> ip), i.e. exactly the substrings ``format()`` replaces. Types it
does not handle show recall 0; its precision is over the types it handles.

Speed: one process, one thread, so docs/s is per core: ``Detector.redact`` (all five types) and,
for the same documents, ``PIIFormatter.format`` (two types), best of ``--repeat`` passes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from curation.stages.pii.detect import TYPES, Detector, Span
from curation.stages.pii.labelled import labelled_lines, score

SAMPLE = Path(__file__).resolve().parents[1] / "curation" / "data" / "sample"


def sample_texts(folder: Path = SAMPLE) -> list[str]:
    texts = []
    for f in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            texts += [json.loads(line)["text"] for line in fh]
    return texts


def datatrove_finder() -> tuple[Callable[[str], list[Span]], Callable[[str], str]]:
    from datatrove.pipeline.formatters import PIIFormatter

    fmt = PIIFormatter()

    def find(text: str) -> list[Span]:
        spans = [Span(*m.span(), "email") for m in fmt.emails_replacer.regex.finditer(text)]
        ip = fmt.ip_replacer
        spans += [Span(*m.span(), "ip") for m in ip.regex.finditer(text)
                  if ip.validator is None or ip.validator(m.group(0))]
        return spans

    return find, fmt.format


def best_rate(fn: Callable[[str], object], texts: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for t in texts:
            fn(t)
        best = min(best, time.perf_counter() - t0)
    return len(texts) / best


def table(rows: Iterable[tuple[str, ...]], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    lines = labelled_lines()
    detector = Detector()
    dt_find, dt_format = datatrove_finder()
    ours, theirs = score(detector.find, lines), score(dt_find, lines)
    n_marks = sum(len(ln.spans) for ln in lines)
    print(f"labelled set: {len(lines)} lines, {n_marks} marked spans, "
          f"{sum(1 for ln in lines if not ln.spans)} lines with none\n")
    rows = []
    for t in (*TYPES, "all"):
        o, d = ours[t], theirs[t]
        handled = t in ("email", "ip", "all")
        rows.append((t, str(o.tp + o.fn), f"{o.precision:.3f}", f"{o.recall:.3f}", f"{o.fp}",
                     f"{d.precision:.3f}" if handled else "n/a", f"{d.recall:.3f}", f"{d.fp}"))
    header = ("type", "marked", "pii_v1 P", "pii_v1 R", "pii_v1 FP", "datatrove P", "datatrove R", "datatrove FP")
    print(table(rows, header))

    texts = sample_texts()
    mb = sum(len(t.encode()) for t in texts) / 1e6
    ours_rate = best_rate(detector.redact, texts, args.repeat)
    dt_rate = best_rate(dt_format, texts, args.repeat)
    found = sum(sum(detector.redact(t)[1].values()) for t in texts)
    print(f"\nsample: {len(texts)} docs, {mb:.1f} MB; pii_v1 found {found} spans")
    print(table([("pii_v1 (5 types)", f"{ours_rate:,.0f}", f"{ours_rate * mb / len(texts):.1f}"),
                 ("datatrove PIIFormatter (email, IPv4)", f"{dt_rate:,.0f}", f"{dt_rate * mb / len(texts):.1f}")],
                ("detector", "docs/s per core", "MB/s per core")))


if __name__ == "__main__":
    main()
