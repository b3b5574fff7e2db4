"""``curate plan``: predict what a pipeline will keep and cost before running it on the full input.

1. **Sample.** Every input line is read once; a line is kept when a hash of its document falls
   under the sample rate. The hash is *coordinated*: it is a keyed hash of the document's three
   smallest word 5-grams (smallest under a second hash, over its first 256 words), so exact
   duplicates always land in the sample together and near-duplicates (Jaccard J) together with
   probability about J³ (0.6 at J = 0.85), while unrelated pages that share a stock phrase do not
   (with the single smallest 5-gram they did, and a sample drew whole clusters of them).
   A plain per-line hash would keep both copies of a pair with probability rate², and a 1% sample
   would show almost none of the duplicates that dedup removes from the full input. Every document
   is still kept with probability ``rate``, and a per-file prefix would bias toward file heads.
2. **Measure.** The real pipeline runs on the sample with the in-process executor (a temp run
   directory); model setup is timed apart from the tasks (it is paid once per worker, not per
   byte); task markers give per-task seconds and per-stage seconds, global markers the seconds of
   each global step (dedup, select). The sample runs twice (once with a rephrasing stage, which
   would pay its backend again) and each task counts with the lesser of its two times.
3. **Extrapolate** (``extrapolate``, pure arithmetic):

   - map work (every shard pass): a fixed cost per task plus CPU-seconds that scale linearly
     with uncompressed input bytes: ``cpu_full = a x tasks_full + b x bytes_full``. A 1% sample
     of equal files gives tasks of about one size, from which a regression cannot tell ``a``
     from ``b`` (at 1M documents it put 40% of the tasks' time into ``a``). So the sample holds
     one small task by design, the *probe*: ``PROBE_DOCS`` of its documents moved into a file of
     their own. Probe and ordinary tasks are two sizes: ``b`` from their difference, ``a`` what
     the probe took beyond ``b`` times its bytes. (A one-document probe measured nothing: the
     document was often filtered out at once, so its later passes wrote no shard at all);
   - global steps: ``n log n`` in the documents reaching them
     (``sec_full = sec_sample x (N log N) / (n log n)``): they sort/shuffle keys; a stage whose
     work grows otherwise declares ``global_seconds_at(seconds, N)`` and scales its own parts
     (``semantic_dedup_v1``: k-means fit, assignment n x k, pairs n^2 / k);
   - kept documents scale with the input documents, tokens with the input bytes;
   - wall time on a cluster of C CPUs (``cpus x nodes``): each pass runs its T file tasks on
     ``P = min(C / cpus_per_task, T)`` workers, so it lasts ``max(cpu / P, largest task)`` plus
     model setup, plus a fixed overhead (Ray start, pass scheduling); a global step under
     ``executor.global_in_driver_mb`` of keys runs in the driver on one core, else shuffles on C
     at ``RAY_SHUFFLE_CPU_FACTOR`` times the CPU the same step takes in one process.
     GPU passes are bounded by ``gpus x nodes / gpus_per_task`` too.

Uncertainty: the kept fraction is a proportion over the sample's n documents: its 95% range is
``p +- 1.96 sqrt(p(1-p)/n)``. Time per byte varies with the documents a task holds: the range is a
bootstrap over the sample's tasks (resampled with replacement) of seconds per byte, never narrower
than ``TIME_NOISE_FLOOR`` either side (repeat runs of the same work on a shared machine differ by
about 15%, and a 1% sample's cost per byte differs from the full run's by up to 10-15% more).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import os
import shutil
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.errors import ConfigError
from curation.io.linestream import Oversize, iter_lines, open_chunks
from curation.io.readers import detect_format
from curation.pipeline import PipelineConfig
from curation.stages.frame import LocalFrame

#: Seconds to start a local Ray cluster, and to schedule one pass or global step on it.
RAY_START_S = 6.0  # measured: start 3.1-4.3 s plus shutdown 1.4-1.7 s (2 CPUs, the executor's own cluster)
RAY_PASS_OVERHEAD_S = 0.5  # measured: a pass of plain tasks spans 0.1-0.6 s more than its task-seconds / 2
RAY_DATA_STEP_S = 2.0  # a global step on Ray Data: reading its key files as a dataset, writing its result
#: A global step resolved with Ray Data costs this many seconds of wall time per execution (a
#: shuffle or a materialisation: a dataset's start and its tasks' scheduling; measured on
#: exact_dedup_v1 and select_v1, one execution each, forced to Ray at 100k documents: 0.4-0.9 s
#: each beyond RAY_DATA_STEP_S), plus this many times the step's in-process CPU, spread over
#: the cluster (partitioning and object transfers). Calibrated on a 2-CPU machine; see
#: docs/benchmarks.md, which also says which figure each was fitted on.
RAY_SHUFFLE_OP_S = 0.7
RAY_SHUFFLE_CPU_FACTOR = 5.0
#: Least relative half-width of a time range (see the module docstring).
TIME_NOISE_FLOOR = 0.25
#: Words of a document the sampling key looks at (bounds its cost on long documents).
KEY_WORDS = 256
SHINGLE = 5
KEY_SHINGLES = 3  # shingles in a document's sampling key (see doc_key)


# -- the sample ----------------------------------------------------------------------------------


def doc_key(text: str, seed: int = 0) -> float:
    """The coordinated sampling key of a document, uniform in [0, 1) (see the module docstring)."""
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


# -- measurement ---------------------------------------------------------------------------------


@dataclass
class PassMeasure:
    """One shard pass of the sample run."""

    index: int
    task_seconds: list[float]  # per sample task, setup excluded
    task_bytes: list[int]  # uncompressed input bytes of each sample task
    setup_seconds: float  # model loading etc., once per worker
    stage_seconds: dict[str, float]  # stage name -> seconds over all sample tasks
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    probe_seconds: float | None = None  # the probe task's seconds (see task_cost_model)
    probe_bytes: int = 0


@dataclass
class IndexJoin:
    """A dedup step's join against the indexes of earlier runs (``against``). The full run is priced
    as reading every bucket file of the kinds it joins: a new snapshot of realistic size holds some
    duplicate of nearly every bucket, so bucketing bounds what a group holds, not what is read."""

    runs: int
    read_bytes: int  # every bucket file, times the reads the stage needs (``corpus_reads``)
    bytes_by_kind: dict[str, int]
    largest_file: int  # what one group holds per run at a time
    seconds_per_byte: float  # read + sha256 + Parquet parse, timed here on the largest files

    def seconds(self) -> float:
        return self.read_bytes * self.seconds_per_byte


@dataclass
class GlobalMeasure:
    stage: str
    seconds: float
    docs_in: int  # documents that reached it in the sample
    key_bytes: int  # bytes of its keyed work files in the sample
    fixed_seconds: float = 0.0  # the same step over one document: its cost that does not grow with n
    ray_ops: int = 1  # its Frame executions on the sample (group, materialize, count, collect, checksum)
    #: Its predicted in-process seconds over the full input when the stage has a cost model of its own
    #: (``global_seconds_at``: semantic dedup's pairwise work grows as n^2 / k, not n log n); None: n log n.
    full_seconds: float | None = None
    join: IndexJoin | None = None  # what its join against earlier runs' dedup indexes reads (``against``)


@dataclass
class Measurement:
    """What the sample run measured plus the full input's sizes: everything ``extrapolate`` needs."""

    rate: float
    full_docs: int
    full_bytes: int
    file_bytes: list[int]  # uncompressed bytes of each full input file
    sample_docs: int
    sample_bytes: int
    docs_out: int
    tokens_out: int
    passes: list[PassMeasure]
    globals: list[GlobalMeasure]
    stage_kept: list[tuple[str, int, int]]  # (stage, in, out) of the sample funnel
    executor: str = "ray"
    global_in_driver_mb: float = 256.0
    rephrase_tokens_per_s: float | None = None
    sample_wall_seconds: float = 0.0


@dataclass(frozen=True)
class Cluster:
    """Where the full run would go: ``cpus`` and ``gpus`` per node, ``nodes`` of them."""

    cpus: int
    gpus: int = 0
    nodes: int = 1

    @property
    def total_cpus(self) -> int:
        return self.cpus * self.nodes

    @property
    def total_gpus(self) -> int:
        return self.gpus * self.nodes


def parse_cluster(spec: str | None) -> Cluster:
    """``cpus=64,gpus=8,nodes=4`` (any subset; default: this machine's CPUs, no GPU, one node)."""
    vals: dict[str, int] = {"cpus": os.cpu_count() or 1, "gpus": 0, "nodes": 1}
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in vals:
            raise ConfigError(f"--cluster: unknown key {key!r} in {spec!r}; valid: cpus, gpus, nodes")
        try:
            vals[key] = int(value)
        except ValueError:
            raise ConfigError(f"--cluster: {key}={value!r} is not an integer") from None
        if vals[key] < 0 or (key != "gpus" and vals[key] < 1):
            raise ConfigError(f"--cluster: {key}={value} must be {'>= 0' if key == 'gpus' else '>= 1'}")
    return Cluster(**vals)


def parse_rate(text: str) -> float:
    """``1%`` or ``0.01`` -> 0.01; must lie in (0, 1]."""
    try:
        rate = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ConfigError(f"--sample: {text!r} is not a fraction (0.01) or a percentage (1%)") from None
    if not 0 < rate <= 1:
        raise ConfigError(f"--sample: {text!r} must be in (0, 1]")
    return rate


# -- extrapolation (pure) -------------------------------------------------------------------------


@dataclass
class Prediction:
    """Predicted figures of the full run, each with a 95% range ``(low, high)``."""

    input_docs: int
    input_bytes: int
    kept_docs: float
    kept_docs_range: tuple[float, float]
    kept_tokens: float
    kept_tokens_range: tuple[float, float]
    cpu_hours: float
    cpu_hours_range: tuple[float, float]
    gpu_hours: float
    wall_seconds: float
    wall_seconds_range: tuple[float, float]
    cluster: Cluster
    steps: list[dict[str, Any]] = field(default_factory=list)  # per pass / global step: cpu_s, wall_s
    stage_kept: list[dict[str, Any]] = field(default_factory=list)
    rephrase_tokens_per_s: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def task_cost_model(seconds: list[float], nbytes: list[int], probe: float | None = None,
                    probe_bytes: int = 0) -> tuple[float, float]:
    """``(fixed seconds per task, seconds per byte)`` of ``seconds = a + b x bytes``. A sample task
    holds little data, so its fixed cost (opening files and writers, a Parquet footer, a marker, a
    stage's first batch) is a large part of its time and must not be scaled with the bytes.

    With a ``probe`` (a task of ``probe_bytes``, much smaller than the others): ``b`` from the
    difference between the ordinary tasks and ``n`` probes, ``a = probe - b x probe_bytes``.
    Without one: a least-squares fit when the task sizes spread enough to tell ``a`` from ``b``
    (the largest at least twice the smallest), else ``a = 0``. ``a`` is kept within
    ``[0, min(seconds)]``."""
    s, b = np.asarray(seconds, float), np.asarray(nbytes, float)
    total_b = b.sum()
    if total_b <= 0:
        return (float(s.mean()) if len(s) else 0.0, 0.0)
    plain = (0.0, float(s.sum() / total_b))
    if probe is not None and total_b > 2 * len(s) * probe_bytes:
        per_byte = (s.sum() - len(s) * probe) / (total_b - len(s) * probe_bytes)
        a = float(np.clip(probe - per_byte * probe_bytes, 0.0, s.min()))
    elif len(s) >= 3 and b.min() > 0 and b.max() >= 2 * b.min():
        slope, intercept = np.polyfit(b, s, 1)
        a = float(np.clip(intercept, 0.0, s.min()))
    else:
        return plain
    per_byte = float((s.sum() - a * len(s)) / total_b)
    return (a, per_byte) if per_byte > 0 else plain


def nlogn_factor(n_sample: float, n_full: float) -> float:
    """``(N log N) / (n log n)``, with ``log`` floored at 1 so tiny samples do not blow it up."""
    if n_sample <= 0:
        return 0.0
    return (n_full * max(math.log(n_full), 1.0)) / (n_sample * max(math.log(n_sample), 1.0))


def proportion_range(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Normal-approximation 95% range of a proportion ``p`` observed over ``n`` documents."""
    if n <= 0:
        return (0.0, 1.0)
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n)
    return (max(0.0, p - half), min(1.0, p + half))


def bootstrap_rel_range(seconds: list[float], nbytes: list[int], reps: int = 2000,
                        seed: int = 0) -> tuple[float, float]:
    """95% range of ``sum(seconds) / sum(bytes)`` relative to its point value, by resampling tasks;
    never narrower than ``TIME_NOISE_FLOOR`` on either side."""
    s, b = np.asarray(seconds, float), np.asarray(nbytes, float)
    lo, hi = 1 - TIME_NOISE_FLOOR, 1 + TIME_NOISE_FLOOR
    if len(s) >= 2 and b.sum() > 0 and s.sum() > 0:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(s), size=(reps, len(s)))
        ratios = s[idx].sum(1) / np.maximum(b[idx].sum(1), 1.0)
        point = s.sum() / b.sum()
        q_lo, q_hi = np.percentile(ratios, [2.5, 97.5]) / point
        lo, hi = min(lo, float(q_lo)), max(hi, float(q_hi))
    return (lo, hi)


def extrapolate(m: Measurement, cluster: Cluster) -> Prediction:
    """Scale the sample's measurements to the full input on ``cluster`` (model: module docstring)."""
    if m.sample_docs == 0 or m.sample_bytes == 0:
        raise ConfigError("the sample holds no document: raise --sample (or the input is empty)")
    byte_scale = m.full_bytes / m.sample_bytes
    n_tasks = max(len(m.file_bytes), 1)
    largest = max(m.file_bytes, default=0)
    ray = m.executor == "ray"
    steps: list[dict[str, Any]] = []
    notes: list[str] = []
    cpu_s = gpu_s = wall_s = 0.0
    all_sec: list[float] = []
    all_bytes: list[int] = []
    for p in m.passes:
        fixed, per_byte = task_cost_model(p.task_seconds, p.task_bytes, p.probe_seconds, p.probe_bytes)
        cpu = (per_byte * m.full_bytes + fixed * n_tasks) * p.cpus_per_task
        workers = max(1, min(int(cluster.total_cpus / max(p.cpus_per_task, 1e-9)), n_tasks))
        if p.gpus_per_task > 0:
            if cluster.total_gpus == 0:
                notes.append(f"pass {p.index} asks {p.gpus_per_task:g} GPU per task but the cluster has none")
            else:
                workers = max(1, min(workers, int(cluster.total_gpus / p.gpus_per_task)))
        workers = workers if ray else 1  # the in-process executor runs one task at a time
        setup = p.setup_seconds
        wall = max(cpu / p.cpus_per_task / workers, fixed + per_byte * largest) + setup
        gpu = (cpu / p.cpus_per_task + setup * workers) * p.gpus_per_task
        cpu += setup * workers * p.cpus_per_task
        wall += RAY_PASS_OVERHEAD_S if ray else 0.0
        steps.append({"step": f"pass {p.index}", "cpu_s": round(cpu, 2), "gpu_s": round(gpu, 2),
                      "wall_s": round(wall, 2), "workers": workers,
                      "stages": {k: round(v * byte_scale, 2) for k, v in p.stage_seconds.items()}})
        cpu_s, gpu_s, wall_s = cpu_s + cpu, gpu_s + gpu, wall_s + wall
        all_sec += p.task_seconds
        all_bytes += p.task_bytes
    for g in m.globals:
        full_in = g.docs_in * m.full_docs / m.sample_docs
        fixed = min(g.fixed_seconds, g.seconds)
        sec = fixed + (g.seconds - fixed) * nlogn_factor(g.docs_in, full_in) if g.full_seconds is None \
            else g.full_seconds
        key_mb = g.key_bytes * byte_scale / 1e6
        in_driver = not ray or key_mb < m.global_in_driver_mb
        if in_driver:
            wall = sec
        else:  # a fixed cost per Ray Data execution, then the work spread over the cluster
            sec *= RAY_SHUFFLE_CPU_FACTOR
            wall = g.ray_ops * RAY_SHUFFLE_OP_S + sec / max(cluster.total_cpus, 1) + RAY_DATA_STEP_S
        step = {"step": f"global {g.stage}", "cpu_s": round(sec, 2), "gpu_s": 0.0, "wall_s": round(wall, 2),
                "workers": 1 if in_driver else cluster.total_cpus, "key_mb": round(key_mb, 1)}
        if g.join is not None:
            j = g.join
            read_s = j.seconds()
            # in the driver one process reads every file; on the cluster the groups read in parallel
            read_wall = read_s if in_driver else read_s / max(cluster.total_cpus, 1)
            sec, wall = sec + read_s, wall + read_wall
            step.update(cpu_s=round(sec, 2), wall_s=round(wall, 2), index_read_bytes=j.read_bytes,
                        index_read_s=round(read_s, 4))
            rate = f"{1 / j.seconds_per_byte / 1e6:,.0f} MB/s measured here" if j.seconds_per_byte else "no file to time"
            notes.append(f"global {g.stage}: joins the dedup indexes of {j.runs} earlier run(s): "
                         f"{j.read_bytes / 1e6:,.1f} MB read and verified ({read_s:,.1f} CPU-s at {rate}; "
                         + ", ".join(f"{k} {b / 1e6:,.1f} MB" for k, b in j.bytes_by_kind.items())
                         + f"); a group holds at most one bucket file per run, the largest {j.largest_file / 1e6:,.1f} MB")
        steps.append(step)
        cpu_s, wall_s = cpu_s + sec, wall_s + wall
    wall_s += RAY_START_S if ray else 0.0
    t_lo, t_hi = bootstrap_rel_range(all_sec, all_bytes)
    p_kept = m.docs_out / m.sample_docs
    k_lo, k_hi = proportion_range(p_kept, m.sample_docs)
    rel_lo, rel_hi = (k_lo / p_kept, k_hi / p_kept) if p_kept > 0 else (0.0, 0.0)
    kept = p_kept * m.full_docs
    tokens = m.tokens_out * byte_scale
    stage_kept = [{"stage": s, "in": i, "out": o, "kept": round(o / i, 4) if i else None} for s, i, o in m.stage_kept]
    if m.sample_docs < 300:
        notes.append(f"the sample holds only {m.sample_docs} documents: ranges are wide; raise --sample")
    return Prediction(
        input_docs=m.full_docs, input_bytes=m.full_bytes,
        kept_docs=round(kept), kept_docs_range=(round(k_lo * m.full_docs), round(k_hi * m.full_docs)),
        kept_tokens=round(tokens), kept_tokens_range=(round(tokens * rel_lo), round(tokens * rel_hi)),
        cpu_hours=cpu_s / 3600, cpu_hours_range=(cpu_s * t_lo / 3600, cpu_s * t_hi / 3600),
        gpu_hours=gpu_s / 3600, wall_seconds=wall_s, wall_seconds_range=(wall_s * t_lo, wall_s * t_hi),
        cluster=cluster, steps=steps, stage_kept=stage_kept, rephrase_tokens_per_s=m.rephrase_tokens_per_s,
        notes=notes)


# -- running the sample --------------------------------------------------------------------------


#: A sample with fewer documents is drawn again at a higher rate (small inputs: a 1% sample of
#: 5,000 documents would say little).
MIN_SAMPLE_DOCS = 200


def _draw(config: PipelineConfig, rate: float, sample_dir: Path) -> list[FileSample]:
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


#: Documents moved into the probe task (fewer when the sample is small: at most a third of a file's).
PROBE_DOCS = 16


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


def measure(config: PipelineConfig, rate: float, workdir: Path | None = None,
            min_docs: int = MIN_SAMPLE_DOCS) -> Measurement:
    """Sample the inputs of ``config``, run the pipeline on the sample in process, and measure it.

    When the sample holds fewer than ``min_docs`` documents it is drawn once more at the rate that
    gives about that many (all of a small input).
    """
    from curation.executors.local import LocalExecutor
    from curation.executors.plan import make_plan

    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="curate-plan-")) if own else workdir
    try:
        sample_dir = work / "sample"
        files = _draw(config, rate, sample_dir)
        got, full = sum(f.sample_docs for f in files), sum(f.docs for f in files)
        if got < min_docs and rate < 1.0 and full:
            rate = min(1.0, 1.2 * min_docs / full)
            files = _draw(config, rate, sample_dir)
        data = config.to_mapping()
        data["input"]["paths"] = [f.sample_path for f in files if f.sample_path]
        data["output"]["dir"] = str(work / "run")
        data["executor"]["kind"] = "local"
        sample_cfg = PipelineConfig.from_mapping(data, where="plan sample")
        plan = make_plan(sample_cfg)
        setups = []
        for seg in plan.segments:  # timed apart: setup is paid once per worker, not per byte
            t0 = time.perf_counter()
            plan.set_up(seg)
            setups.append(time.perf_counter() - t0)
        # Each task's time is the least of SAMPLE_REPEATS runs: a sample task lasts tens of
        # milliseconds, and one pause (a collection, another process) in one of a pass's two
        # tasks at 100k documents doubled that pass's prediction.
        repeats = 1 if _rephrases(config) else SAMPLE_REPEATS
        walls, timings = [], []
        try:
            for _ in range(repeats):
                t0 = time.time()
                ex = LocalExecutor(sample_cfg, overwrite=True)
                try:
                    result = ex.run(plan)
                finally:
                    ex.close()
                walls.append(time.time() - t0)
                timings.append(_task_timings(plan))
        finally:
            plan.forget()
        return _measurement(config, rate, plan, files, result.manifest, setups, walls[0], least_time(timings))
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


#: Times the sample runs when it has no rephrasing stage (which would pay its backend each time).
SAMPLE_REPEATS = 2

Timing = dict[tuple[int, int], tuple[float, dict[str, float]]]  # (pass, task) -> (seconds, stage seconds)


def _task_timings(plan: Any) -> Timing:
    from curation.io.manifest import TaskMarker

    out: Timing = {}
    for seg in plan.segments:
        for t in plan.tasks:
            mk = TaskMarker.read(plan.layout.marker(seg.index, t.index))
            out[(seg.index, t.index)] = (float(mk.seconds), {k: float(v) for k, v in mk.stage_seconds.items()})
    return out


def least_time(runs: list[Timing]) -> Timing:
    """Per task, the timing of the run in which it took least (its stage seconds from that run)."""
    return {key: min((r[key] for r in runs), key=lambda v: v[0]) for key in runs[0]}


def _measurement(config: PipelineConfig, rate: float, plan: Any, files: list[FileSample],
                 manifest: dict[str, Any], setups: list[float], wall: float, timing: Timing) -> Measurement:
    from curation.io.manifest import GlobalMarker

    lay = plan.layout
    by_path = {f.sample_path: f for f in files}
    probe_path = next((f.sample_path for f in files if f.probe), None)
    tasks = [t for t in plan.tasks if t.path != probe_path]
    probe_task = next((t for t in plan.tasks if t.path == probe_path), None)
    task_bytes = [by_path[t.path].sample_bytes if t.path in by_path else t.size for t in tasks]
    names = {i: s.stage for i, s in enumerate(config.stages)}
    passes, globals_ = [], []
    for seg in plan.segments:
        secs, stage_secs = [], {}
        for t in plan.tasks:
            seconds, by_stage = timing[(seg.index, t.index)]
            if t is not probe_task:
                secs.append(seconds)
            for idx, v in by_stage.items():
                stage_secs[names[int(idx)]] = stage_secs.get(names[int(idx)], 0.0) + v
        probe = timing[(seg.index, probe_task.index)][0] if probe_task else None
        probe_bytes = by_path[probe_path].sample_bytes if probe_path else 0
        res = seg.task_resources()
        passes.append(PassMeasure(seg.index, secs, task_bytes, setups[seg.index], stage_secs,
                                  cpus_per_task=max(float(res.get("num_cpus", 1.0)), 1e-3),
                                  gpus_per_task=float(res.get("num_gpus", 0.0)), probe_seconds=probe,
                                  probe_bytes=probe_bytes))
        if seg.key_for is not None:
            stage_index, spec = seg.key_for
            gm = GlobalMarker.read(lay.global_marker(stage_index))
            kb = sum(lay.work(seg.index, t.index).stat().st_size for t in plan.tasks)
            docs_in = next((s["in"] for s in manifest["stages"] if s["index"] == stage_index), 0)
            # Timed again here, warm: the run's first global step also pays one-off imports and
            # initialisation, which at sample size outweigh the work and must not be scaled.
            again, ops = _global_seconds(plan, seg, None)
            seconds = min(float(gm.seconds), again)
            # A stage's own cost model reads the figures of the run just timed (before the one-row run below).
            model = getattr(plan.global_stage(stage_index), "global_seconds_at", None)
            full_in = docs_in * sum(f.docs for f in files) / max(sum(f.sample_docs for f in files), 1)
            full_seconds = model(seconds, full_in) if model is not None else None
            globals_.append(GlobalMeasure(spec.stage, seconds, int(docs_in), int(kb),
                                          _global_seconds(plan, seg, 1)[0], ray_ops=ops, full_seconds=full_seconds,
                                          join=_index_join(plan.global_stage(stage_index))))
    tokens = sum(int(d["tokens"]) for d in manifest["domains"].values())
    return Measurement(
        rate=rate, full_docs=sum(f.docs for f in files), full_bytes=sum(f.bytes for f in files),
        file_bytes=[f.bytes for f in files if not f.probe], sample_docs=sum(f.sample_docs for f in files),
        sample_bytes=sum(f.sample_bytes for f in files), docs_out=int(manifest["totals"]["docs_out"]),
        tokens_out=tokens, passes=passes, globals=globals_,
        stage_kept=[(s["name"], int(s["in"]), int(s["out"])) for s in manifest["stages"]],
        executor=config.executor.kind, global_in_driver_mb=config.executor.global_in_driver_mb,
        rephrase_tokens_per_s=_rephrase_rate(lay.root, config), sample_wall_seconds=round(wall, 3))


def _index_join(stage: Any) -> IndexJoin | None:
    """The join a dedup stage with ``against`` runs: the named runs' index sizes (from their
    manifests) and a timed read of their largest files. The warm re-timing of the global step reads
    the index from this process's cache, so the reads are priced here and not scaled with n."""
    from curation.io.dedup_index import CACHE_BYTES

    corpus = getattr(stage, "corpus", None)
    if corpus is None:
        return None
    reads: dict[str, int] = stage.corpus_reads
    cost = corpus.read_cost(tuple(reads))
    total = 0
    for kind, n in reads.items():
        b = cost["bytes_by_kind"][kind]
        # a kind read by several joins is read again only when the cache cannot hold it
        total += b * (n if b > CACHE_BYTES or cost["largest_file"] > CACHE_BYTES // 4 else 1)
    per_byte = corpus.read_seconds_per_byte(tuple(reads)) or 0.0
    return IndexJoin(runs=len(corpus.runs), read_bytes=total, bytes_by_kind=cost["bytes_by_kind"],
                     largest_file=cost["largest_file"], seconds_per_byte=per_byte)


class _CountingFrame(LocalFrame):
    """A ``LocalFrame`` that counts the calls that are a Ray Data execution on Ray: a shuffle
    (``group``) or a materialisation (``materialize``, ``count``, ``collect``, ``checksum``)."""

    def __init__(self, table: pa.Table, num_buckets: int, counter: list[int]) -> None:
        super().__init__(table, num_buckets)
        self.counter = counter

    def _new(self, table: pa.Table) -> LocalFrame:
        return _CountingFrame(table, self.num_buckets, self.counter)

    def group(self, key: str, fn: Any) -> LocalFrame:
        self.counter[0] += 1
        return super().group(key, fn)

    def materialize(self) -> LocalFrame:
        self.counter[0] += 1
        return super().materialize()

    def count(self) -> int:
        self.counter[0] += 1
        return super().count()

    def collect(self) -> pa.Table:
        self.counter[0] += 1
        return super().collect()

    def checksum(self) -> tuple[int, int]:
        self.counter[0] += 1
        return super().checksum()


def _global_seconds(plan: Any, seg: Any, rows: int | None) -> tuple[float, int]:
    """Seconds of a global step over the sample's keys (``rows``: only the first so many), its key
    files read as in the run, and its shuffles; with one row, the part of its time that does not
    grow with n."""
    from curation.executors.local import key_read_columns
    from curation.io.storage import read_parquet

    stage = plan.global_stage(seg.key_for[0])  # the plan's, as the run's own global step
    t0 = time.perf_counter()
    cols = key_read_columns(stage)
    tables = [read_parquet(str(plan.layout.work(seg.index, t.index)), columns=cols) for t in plan.tasks]
    table = pa.concat_tables(tables)
    table = table if rows is None else table.slice(0, rows)
    counter = [0]
    try:
        if len(table):
            stage.run_global(_CountingFrame(table, stage.num_buckets, counter))
    except Exception:  # noqa: BLE001 - a step that cannot resolve so few documents: count only the
        # reads, the rest of its time then scales with n log n (leans long).
        pass
    return time.perf_counter() - t0, max(counter[0], 1)


def _rephrases(config: PipelineConfig) -> bool:
    return any(s.stage.startswith("rephrase") for s in config.stages)


def _rephrase_rate(root: Path, config: PipelineConfig) -> float | None:
    """Output tokens per second of the configured rephrasing backend on the sample (None: no rephrasing)."""
    if not _rephrases(config):
        return None
    from curation.stats import summary

    rows = summary(str(root)).get("rephrase") or []
    tokens, secs = sum(r[4] or 0 for r in rows), sum(r[5] or 0 for r in rows)
    return round(tokens / secs, 1) if secs else None


def predict(config: PipelineConfig, rate: float, cluster: Cluster) -> Prediction:
    """Measure a ``rate`` sample of ``config``'s inputs and predict the full run on ``cluster``."""
    return extrapolate(measure(config, rate), cluster)


def budget_refusal(pred: Prediction, budget_cpu_hours: float) -> str | None:
    """The one-line refusal when the predicted CPU-hours exceed the budget, else None."""
    if pred.cpu_hours <= budget_cpu_hours:
        return None
    lo, hi = pred.cpu_hours_range
    return (f"refused: predicted {pred.cpu_hours:.3g} CPU-hours (95% range {lo:.3g}-{hi:.3g}) exceeds "
            f"--budget-cpu-hours {budget_cpu_hours:g}; nothing was run")
