"""Step 1 of ``curate plan``: draw the sample (coordinated by a hash of each document) and its probe task.

How and why the sample is drawn as it is: the package docstring (``curation/planner/__init__.py``).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import ConfigError
from curation.io.linestream import Oversize, iter_lines, open_chunks
from curation.io.readers import detect_format
from curation.pipeline import PipelineConfig

#: Words of a document the sampling key looks at (bounds its cost on long documents).
KEY_WORDS = 256
SHINGLE = 5
KEY_SHINGLES = 3  # shingles in a document's sampling key (see doc_key)
#: A sample with fewer documents is drawn again at a higher rate (small inputs: a 1% sample of
#: 5,000 documents would say little).
MIN_SAMPLE_DOCS = 200
#: Documents moved into the probe task (fewer when the sample is small: at most a third of a file's).
PROBE_DOCS = 16


def doc_key(text: str, seed: int = 0) -> float:
    """The coordinated sampling key of a document, uniform in [0, 1) (see the package docstring)."""
    words = text.lower().split()[:KEY_WORDS]
    if len(words) <= SHINGLE:
        best = " ".join(words).encode()
    else:
        shingles = {" ".join(words[i:i + SHINGLE]).encode() for i in range(len(words) - SHINGLE + 1)}
        # The KEY_SHINGLES smallest under crc32 (a bottom-k sketch), not just the smallest: two documents
        # share it with probability about J^k. One shingle (k = 1) clusters unrelated pages that share any
        # common phrase (a menu line, a stock sentence): measured on the scale benchmark's corpus, 5,000
        # documents had 2,335 keys, the largest shared by 58, so a 1% sample drew whole clusters and its
        # kept share and cost per byte missed the full run's by 20-30%.
        best = b"\0".join(sorted(heapq.nsmallest(KEY_SHINGLES, shingles, key=zlib.crc32)))
    digest = hashlib.blake2b(best, digest_size=8, key=seed.to_bytes(8, "little")).digest()
    return int.from_bytes(digest, "little") / 2.0 ** 64


@dataclass
class FileSample:
    """One input file: its documents and uncompressed bytes, in full and in the sample."""

    source: str
    docs: int = 0
    bytes: int = 0
    sample_docs: int = 0
    sample_bytes: int = 0
    sample_path: str = ""
    probe: bool = False  # the small task that measures a task's fixed cost (not an input file)


def _text_of(line: bytes, field_name: str) -> str:
    try:
        rec = json.loads(line)
        text = rec.get(field_name) if isinstance(rec, dict) else None
        return text if isinstance(text, str) else line.decode("utf-8", "replace")
    except (ValueError, UnicodeDecodeError):
        return line.decode("utf-8", "replace")  # a malformed line is sampled like any other


def sample_file(path: str, source: str, config: PipelineConfig, rate: float, out: Path) -> FileSample:
    """Write the sampled documents of one input file under ``out`` (JSONL as raw lines, Parquet as rows)."""
    cfg = config.input
    fs = FileSample(source)
    fmt = detect_format(path, cfg.format)
    if fmt in ("warc", "wet", "html"):  # raw records (extraction is most of their cost, so the sample pays it)
        from curation.io.web import sample_web_input

        target = out / f"{len(list(out.iterdir())):05d}.{fmt}"
        fs.docs, fs.bytes, fs.sample_docs, fs.sample_bytes = sample_web_input(
            path, fmt, cfg, lambda text: doc_key(text, config.seed) < rate, target)
        fs.sample_path = str(target)
        return fs
    if fmt == "parquet":
        target = out / f"{len(list(out.iterdir())):05d}.parquet"
        pf = pq.ParquetFile(path)
        writer = None
        for rb in pf.iter_batches(batch_size=4096):
            texts = rb.column(cfg.text_field).to_pylist()
            sizes = [len(t.encode()) if isinstance(t, str) else 0 for t in texts]
            keep = [isinstance(t, str) and doc_key(t, config.seed) < rate for t in texts]
            fs.docs += len(texts)
            fs.bytes += sum(sizes)
            fs.sample_docs += sum(keep)
            fs.sample_bytes += sum(s for s, k in zip(sizes, keep) if k)
            kept = pa.Table.from_batches([rb]).filter(pa.array(keep))
            writer = writer or pq.ParquetWriter(target, kept.schema)
            writer.write_table(kept)
        if writer is not None:
            writer.close()
        fs.sample_path = str(target)
        return fs
    target = out / f"{len(list(out.iterdir())):05d}.jsonl"
    with open_chunks(path) as chunks, open(target, "wb") as fh:
        for line in iter_lines(chunks, cfg.max_line_bytes):
            if isinstance(line, Oversize) or not line.strip():
                continue
            fs.docs += 1
            fs.bytes += len(line)
            if doc_key(_text_of(line, cfg.text_field), config.seed) < rate:
                fh.write(line + b"\n")
                fs.sample_docs += 1
                fs.sample_bytes += len(line)
    fs.sample_path = str(target)
    return fs


def parse_rate(text: str) -> float:
    """``1%`` or ``0.01`` -> 0.01; must lie in (0, 1]."""
    try:
        rate = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ConfigError(f"--sample: {text!r} is not a fraction (0.01) or a percentage (1%)") from None
    if not 0 < rate <= 1:
        raise ConfigError(f"--sample: {text!r} must be in (0, 1]")
    return rate


def draw(config: PipelineConfig, rate: float, sample_dir: Path,
         min_docs: int = MIN_SAMPLE_DOCS) -> tuple[float, list[FileSample]]:
    """Draw a ``rate`` sample of ``config``'s inputs into ``sample_dir``: ``(rate, files)``, the probe
    task's file last when there is one.

    When the sample holds fewer than ``min_docs`` documents it is drawn once more at the rate that
    gives about that many (all of a small input), and that rate is returned.
    """
    files = _draw_at(config, rate, sample_dir)
    got, full = sum(f.sample_docs for f in files), sum(f.docs for f in files)
    if got < min_docs and rate < 1.0 and full:
        rate = min(1.0, 1.2 * min_docs / full)
        files = _draw_at(config, rate, sample_dir)
    return rate, files


def _draw_at(config: PipelineConfig, rate: float, sample_dir: Path) -> list[FileSample]:
    from curation.io.inputs import expand_inputs

    shutil.rmtree(sample_dir, ignore_errors=True)
    sample_dir.mkdir(parents=True)
    files = [sample_file(t.path, t.source, config, rate, sample_dir) for t in expand_inputs(config.input.paths)]
    merge_small(files, config.input.batch_size)
    probe = split_probe(files, sample_dir, config.input.text_field)
    return files + ([probe] if probe else [])


def merge_small(files: list[FileSample], batch_docs: int) -> None:
    """When the sample's files hold less than one input batch each on average, append them to one
    another (in input order) until each holds at least a batch: the sample's tasks then work in
    the regime of the full run's, whose files hold many batches. Measured at 100k documents in 20
    files, a 1% sample gives 50-document tasks, which cost 2-3x more per byte than the full run's
    5,000-document tasks, and the time predicted was +60-80%. JSONL samples only (Parquet files
    may differ in schema); merged-away files keep their full-input figures and no sample path."""
    live = [f for f in files if f.sample_path.endswith(".jsonl")]
    if not live or sum(f.sample_docs for f in live) >= batch_docs * len(live):
        return
    groups: list[list[FileSample]] = [[]]
    for f in live:  # a new group once the current one holds a batch
        if sum(g.sample_docs for g in groups[-1]) >= batch_docs:
            groups.append([])
        groups[-1].append(f)
    for head, *rest in groups:
        with open(head.sample_path, "ab") as fh:
            for g in rest:
                fh.write(Path(g.sample_path).read_bytes())
                Path(g.sample_path).unlink()
                head.sample_docs += g.sample_docs
                head.sample_bytes += g.sample_bytes
                g.sample_docs, g.sample_bytes, g.sample_path = 0, 0, ""


def split_probe(files: list[FileSample], sample_dir: Path, text_field: str) -> FileSample | None:
    """Move ``PROBE_DOCS`` documents of the sample file holding the most into a file of their own,
    the probe task (``task_cost_model``): the first ones, which are as random as any (the sample
    is drawn by a hash). The sample's documents are unchanged, only one more task runs; ``None``
    when no file has three documents."""
    fs = max(files, key=lambda f: f.sample_docs, default=None)
    if fs is None or fs.sample_docs < 3:
        return None
    k = min(PROBE_DOCS, fs.sample_docs // 3)
    src = Path(fs.sample_path)
    if src.suffix in (".warc", ".wet"):
        from curation.io.web import split_web_sample

        target = sample_dir / f"probe{src.suffix}"
        nbytes = split_web_sample(src, k, target)
    elif src.suffix == ".parquet":
        table = pq.read_table(src)
        target = sample_dir / "probe.parquet"
        pq.write_table(table.slice(0, k), target)
        pq.write_table(table.slice(k), src)
        # sized as sample_file sizes Parquet rows: the text's UTF-8 bytes
        nbytes = sum(len(t.encode()) for t in table.column(text_field).slice(0, k).to_pylist() if isinstance(t, str))
    else:
        lines = src.read_bytes().split(b"\n")[:-1]
        target = sample_dir / "probe.jsonl"
        target.write_bytes(b"".join(line + b"\n" for line in lines[:k]))
        src.write_bytes(b"".join(line + b"\n" for line in lines[k:]))
        nbytes = sum(len(line) for line in lines[:k])
    fs.sample_docs -= k
    fs.sample_bytes -= nbytes
    return FileSample(fs.source, sample_docs=k, sample_bytes=nbytes, sample_path=str(target), probe=True)
