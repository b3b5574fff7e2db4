"""Step 2 of ``curate plan``: run the pipeline on the sample in process and measure it.

Model setup is timed apart from the tasks; task markers give per-task and per-stage seconds, global
markers the seconds of each global step, which is timed again warm (and over one document, its part
that does not grow with n); a dedup step's join against earlier runs' indexes is priced by reading
their files (``_index_join``). The result, a ``Measurement``, is everything ``cost.extrapolate`` needs.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from curation.io.manifest import GlobalMarker, RunManifest, TaskMarker
from curation.pipeline import PipelineConfig
from curation.planner.sample import MIN_SAMPLE_DOCS, FileSample, draw
from curation.stages.frame import LocalFrame

#: Times the sample runs when it has no rephrasing stage (which would pay its backend each time).
SAMPLE_REPEATS = 2


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


def measure(config: PipelineConfig, rate: float, workdir: Path | None = None,
            min_docs: int = MIN_SAMPLE_DOCS) -> Measurement:
    """Sample the inputs of ``config``, run the pipeline on the sample in process, and measure it.

    When the sample holds fewer than ``min_docs`` documents it is drawn once more at the rate that
    gives about that many (all of a small input: ``sample.draw``).
    """
    from curation.executors.local import LocalExecutor
    from curation.executors.plan import make_plan

    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="curate-plan-")) if own else workdir
    try:
        sample_dir = work / "sample"
        rate, files = draw(config, rate, sample_dir, min_docs)
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
        return _measurement(config, rate, plan, files, RunManifest.read(result.root), setups, walls[0],
                            least_time(timings))
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


Timing = dict[tuple[int, int], tuple[float, dict[str, float]]]  # (pass, task) -> (seconds, stage seconds)


def _task_timings(plan: Any) -> Timing:
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
                 manifest: RunManifest, setups: list[float], wall: float, timing: Timing) -> Measurement:
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
            docs_in = manifest.stages[stage_index].docs_in if stage_index in manifest.stages else 0
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
    tokens = sum(d.tokens for d in manifest.domains.values())
    return Measurement(
        rate=rate, full_docs=sum(f.docs for f in files), full_bytes=sum(f.bytes for f in files),
        file_bytes=[f.bytes for f in files if not f.probe], sample_docs=sum(f.sample_docs for f in files),
        sample_bytes=sum(f.sample_bytes for f in files), docs_out=manifest.totals.docs_out,
        tokens_out=tokens, passes=passes, globals=globals_,
        stage_kept=[(s.name, s.docs_in, s.docs_out) for s in manifest.stages.values()],
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
