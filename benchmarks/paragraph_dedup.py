""".venv/bin/python benchmarks/paragraph_dedup.py --copies 8 --repeats 3

Line deduplication: ``paragraph_dedup_v1`` (``unit: line``) against datatrove 0.10.1's sentence dedup in line
mode (``SentDedupConfig(n_sentences=1, split_sentences=False)``: ``SentenceDedupSignature`` ->
``SentenceFindDedups`` -> ``SentenceDedupFilter``), same documents, same order, one process each:

* the corpus: the bundled sample (1,265 documents: code, licences, READMEs, Python docs) and the bundled WARC
  sample's pages (main text by our reader, resiliparse), ``--copies`` times. Copy 0 is verbatim; in copy k > 0
  each line stays verbatim with probability ``--share`` (chosen by a hash of copy, document and line) and
  otherwise gets `` ~k`` appended, so lines recur in 1 to ``copies`` documents besides the repeats the
  sample has of itself (licence texts, code idioms, navigation);
* agreement: both with datatrove's numbers normalisation and without its punctuation and diacritics
  removal (``TextNormConfig(remove_punctuation=False, norm_unicode_diacritics=False)``, the normalisation
  ``paragraph_dedup_v1`` has with ``normalize_digits: true``), ours with ``min_docs: 2``,
  ``min_unit_chars: 0``, and neither dropping documents (datatrove ``min_doc_words=0,
  min_num_sentences=0``; ours ``min_chars: 0``). The removed lines of each are compared as multisets of
  (document, normalised line); every line in only one of them is put down to a rule that differs
  (docs/methods.md, "Paragraph and line deduplication", "Against datatrove"): a line repeated inside one
  document (datatrove counts occurrences, we count documents and keep every copy in the first holder), a
  line break other than ``\\n`` (datatrove splits with ``str.splitlines``), or a document past 65,535
  lines (datatrove's line index is a uint16) — anything else is counted as "unexplained";
* speed: CPU seconds (``time.process_time``) of the whole removal, input documents already in memory:
  ours is ``add_keys`` per batch of 1,000, ``run_global`` on a ``LocalFrame`` and ``apply`` per batch
  (what the in-process executor runs, without its Parquet I/O); datatrove is its three steps writing and
  reading its signature and duplicate files in a temporary folder. Best of ``--repeats``, the tools
  alternating. Also timed: ours with its defaults (paragraphs, ``min_docs: 3``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import xxhash

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TQDM_DISABLE", "1")  # datatrove's progress bars
sys.path.insert(0, str(REPO))

from curation.stages.dedup.paragraph import ParagraphDedup, ParagraphDedupConfig, normalize_unit, split_units
from curation.stages.frame import LocalFrame

SAMPLE = REPO / "curation" / "data" / "sample"
WARC = REPO / "curation" / "data" / "sample_web" / "debian-doc.warc.gz"
BATCH = 1000
#: Line breaks of ``str.splitlines`` other than "\n" (and "\r\n", which ours keeps as "\r" at a line's end).
OTHER_BREAKS = ("\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def base_texts() -> list[str]:
    """The bundled sample's texts, then the WARC sample's extracted pages, in file order."""
    from curation.io.readers import InputConfig, read_documents

    texts = []
    for f in sorted(SAMPLE.glob("*.jsonl.gz")):
        with gzip.open(f, "rt") as fh:
            texts += [json.loads(line)["text"] for line in fh if line.strip()]
    cfg = InputConfig(paths=[str(WARC)], format="warc")
    for rb in read_documents(str(WARC), WARC.name, cfg):
        texts += [t for t in rb.table.column("text").to_pylist() if t and t.strip()]
    return texts


def make_corpus(copies: int, share: float) -> list[str]:
    base = base_texts()
    out = list(base)
    limit = int(share * 2**64)
    for k in range(1, copies):
        for d, text in enumerate(base):
            lines = text.split("\n")
            out.append("\n".join(
                line if not line.strip() or xxhash.xxh3_64_intdigest(f"{k}:{d}:{i}") < limit else f"{line} ~{k}"
                for i, line in enumerate(lines)))
    return out


def table_of(texts: list[str]) -> pa.Table:
    from curation.schema import base_schema

    n = len(texts)
    t = pa.table({"id": [f"d{i}" for i in range(n)], "text": texts, "source": ["bench"] * n, "domain": ["x"] * n,
                  "url": [None] * n, "metadata": [None] * n, "n_chars": [len(x) for x in texts]}, schema=base_schema())
    return t.append_column("_task", pa.array(np.zeros(n, np.int32))).append_column(
        "_row", pa.array(np.arange(n, dtype=np.int64)))


def run_ours(table: pa.Table, **config: Any) -> tuple[float, list[str], dict[int, Counter[str]]]:
    """CPU seconds, output texts, and per document the multiset of removed normalised units."""
    stage = ParagraphDedup(ParagraphDedupConfig(max_source_removal_fraction=None, **config))
    digits = stage.config.normalize_digits
    t0 = time.process_time()
    keyed = pa.concat_tables([stage.add_keys(table.slice(s, BATCH)) for s in range(0, len(table), BATCH)])
    marks = stage.run_global(LocalFrame(keyed, num_buckets=stage.num_buckets)).collect()
    outs = []
    for s in range(0, len(keyed), BATCH):
        res = stage.apply(keyed.slice(s, BATCH), marks)
        outs += res.kept.column("text").to_pylist()
    cpu = time.process_time() - t0
    removed: dict[int, Counter[str]] = {}
    texts = table.column("text").to_pylist()
    hs = keyed.column("_pd_h").to_pylist()
    for row, units in zip(marks.column("_row").to_pylist(), marks.column("units").to_pylist()):
        gone = {u["hash"] for u in units}
        us = split_units(texts[row], stage.config.unit)[0]
        removed[row] = Counter(normalize_unit(u, digits) for u, h in zip(us, hs[row]) if h in gone)
    return cpu, outs, removed


def run_datatrove(texts: list[str], folder: Path) -> tuple[float, dict[int, Counter[str]]]:
    from datatrove.data import Document
    from datatrove.pipeline.dedup import (
        SentDedupConfig,
        SentenceDedupFilter,
        SentenceDedupSignature,
        SentenceFindDedups,
    )
    from datatrove.utils.logging import logger
    from datatrove.utils.text import TextNormConfig

    logger.remove()
    logging.disable(logging.WARNING)
    cfg = SentDedupConfig(n_sentences=1, split_sentences=False, min_doc_words=0, min_num_sentences=0,
                          norm_config=TextNormConfig(remove_punctuation=False, norm_unicode_diacritics=False))
    docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
    t0 = time.process_time()
    SentenceDedupSignature(output_folder=str(folder / "sigs"), config=cfg).run(iter(docs), 0, 1)
    SentenceFindDedups(data_folder=str(folder / "sigs"), output_folder=str(folder / "dups"), config=cfg).run(None, 0, 1)
    kept = [d.text for d in SentenceDedupFilter(data_folder=str(folder / "dups"), config=cfg).run(
        iter([Document(text=t, id=str(i)) for i, t in enumerate(texts)]), 0, 1)]
    cpu = time.process_time() - t0
    del kept  # (it leaves out documents left empty: it has no min-length rule that could keep them)
    dups = np.fromfile(folder / "dups" / "0000" / "00000.c4_dup", dtype=np.dtype([("doc", "<u4"), ("sent", "<u2")]))
    removed: dict[int, Counter[str]] = {}
    for doc, sent in zip(dups["doc"].tolist(), dups["sent"].tolist()):
        line = texts[doc].splitlines()[sent]
        removed.setdefault(doc, Counter())[normalize_unit(line, True)] += 1
    return cpu, removed


def agreement(texts: list[str], ours: dict[int, Counter[str]], theirs: dict[int, Counter[str]]) -> dict[str, Any]:
    """Removed lines in both, in one only, and why each line in one only differs."""
    both = only_ours = only_theirs = 0
    why: Counter[str] = Counter()
    for d in sorted(set(ours) | set(theirs)):
        a, b = ours.get(d, Counter()), theirs.get(d, Counter())
        both += sum((a & b).values())
        diff_a, diff_b = a - b, b - a
        only_ours += sum(diff_a.values())
        only_theirs += sum(diff_b.values())
        if not diff_a and not diff_b:
            continue
        text = texts[d]
        mine = Counter(normalize_unit(u, True) for u in split_units(text, "line")[0])
        for line, n in (diff_a + diff_b).items():
            if len(text.splitlines()) > 65535:
                why["document over 65,535 lines"] += n
            elif any(c in text for c in OTHER_BREAKS) and (line not in mine or any(c in line for c in OTHER_BREAKS)
                                                            or line not in {normalize_unit(x, True) for x in
                                                                            text.splitlines()}):
                why["line break other than \\n"] += n
            elif mine[line] > 1:
                why["repeat inside one document"] += n
            else:
                why["unexplained"] += n
    total = both + only_ours + only_theirs
    return {"removed_both": both, "only_ours": only_ours, "only_datatrove": only_theirs,
            "agreement": round(both / total, 5) if total else 1.0, "differences": dict(why)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--share", type=float, default=0.3, help="chance a line of a copy stays verbatim")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    texts = make_corpus(args.copies, args.share)
    nbytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    lines = sum(t.count("\n") + 1 for t in texts)
    print(f"corpus: {len(texts):,} documents, {nbytes / 1e6:.1f} MB of text, {lines:,} lines "
          f"({args.copies} copies, share {args.share})", flush=True)
    table = table_of(texts)
    agree_cfg = {"unit": "line", "min_docs": 2, "min_unit_chars": 0, "normalize_digits": True, "min_chars": 0}
    ours_cpu, dt_cpu, default_cpu = [], [], []
    result: dict[str, Any] = {}
    for r in range(args.repeats):
        cpu, _, removed_ours = run_ours(table, **agree_cfg)
        ours_cpu.append(cpu)
        with tempfile.TemporaryDirectory() as tmp:
            cpu, removed_dt = run_datatrove(texts, Path(tmp))
        dt_cpu.append(cpu)
        default_cpu.append(run_ours(table)[0])
        if r == 0:
            result = agreement(texts, removed_ours, removed_dt)
            print("agreement:", json.dumps(result), flush=True)
        print(f"round {r}: ours {ours_cpu[-1]:.2f} s, datatrove {dt_cpu[-1]:.2f} s, ours (defaults) "
              f"{default_cpu[-1]:.2f} s", flush=True)
    best = {"ours": min(ours_cpu), "datatrove": min(dt_cpu), "ours_defaults": min(default_cpu)}
    mbs = {k: round(nbytes / 1e6 / v, 2) for k, v in best.items()}
    print(json.dumps({"docs": len(texts), "mb": round(nbytes / 1e6, 1), "lines": lines, "cpu_s": best,
                      "mb_per_cpu_s": mbs, "speed_ratio": round(best["datatrove"] / best["ours"], 2),
                      **result}, indent=1))


if __name__ == "__main__":
    main()
