"""``run_shard``: one task of one shard pass (a ``ShardRun``), shared by the local and the Ray executor.

It reads the task's input (the input file, or the previous pass's work file minus the rows a
global stage marked as duplicates), runs the pass's stages batch by batch, writes outputs to
temp files published by rename, then writes the completion marker last. Rerunning a task first
deletes whatever a crashed attempt left, so the outputs are the same as a clean run's.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.errors import CurationError, ShardError
from curation.executors.plan import Plan, Segment
from curation.faults import shard_point
from curation.io.atomic import write_json
from curation.io.inputs import Task
from curation.io.manifest import DomainCount, ShardEntry, StageCount, TaskMarker
from curation.io.readers import read_documents
from curation.io.storage import TMP_SUFFIX, arrow_source, is_remote
from curation.io.writers import RollingParquetWriter
from curation.schema import DECISION_SCHEMA, QUARANTINE_SCHEMA
from curation.stages.base import Stage, StageResult, is_per_document, run_chain, split
from curation.stages.dedup.index import TaskIndex, params_for
from curation.stages.global_stage import GlobalStage
from curation.tokens import token_counter


class _Counts:
    """Per-stage funnel counters of one task: {stage_index: StageCount}."""

    def __init__(self) -> None:
        self.stages: dict[int, StageCount] = {}

    def add(self, index: int, name: str, n_in: int, n_out: int, reasons: list[str]) -> None:
        s = self.stages.setdefault(index, StageCount(index, name))
        s.docs_in += n_in
        s.docs_out += n_out
        for r in reasons:
            s.dropped[r] = s.dropped.get(r, 0) + 1


def _groups(seg: Segment, stages: list[Stage]) -> list[list[tuple[tuple[int, Any], Stage]]]:
    """Consecutive per-document filters form one fused group; every other stage is alone."""
    groups: list[list[tuple[tuple[int, Any], Stage]]] = []
    for item in zip(seg.stages, stages):
        if groups and is_per_document(item[1]) and is_per_document(groups[-1][-1][1]):
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def _cleanup(plan: Plan, seg: Segment, task: Task) -> None:
    """Remove every output a crashed attempt of this task may have left (published or temp)."""
    lay = plan.layout
    victims = [lay.work(seg.index, task.index), lay.decisions(seg.index, task.index), lay.marker(seg.index, task.index)]
    if seg.index == 0:
        victims.append(lay.quarantine(task.index))
    if seg.final:
        victims.append(lay.index_part(task.index))
    remote = is_remote(lay.root)  # object stores hold no temp files (storage.local_temp)
    for path in victims:
        path.unlink(missing_ok=True)
        if not remote:
            path.with_name(path.name + TMP_SUFFIX).unlink(missing_ok=True)
    if seg.final and lay.shards_dir.exists():
        for path in lay.shards_dir.glob(lay.shard_prefix(task.index) + "*"):
            path.unlink()


def _with_position(table: pa.Table, task: int, start: int) -> pa.Table:
    n = len(table)
    return table.append_column("_task", pa.array(np.full(n, task, np.int32))).append_column(
        "_row", pa.array(np.arange(start, start + n, dtype=np.int64)))


def _input_guard(batch: pa.Table, max_chars: int) -> tuple[np.ndarray, list[str | None]]:
    """Drops every stage must be spared: empty/whitespace text and documents over ``max_chars``."""
    stripped_len = pc.utf8_length(pc.utf8_trim_whitespace(batch.column("text"))).to_numpy(zero_copy_only=False)
    n = batch.column("n_chars").to_numpy()
    empty = stripped_len == 0
    long = n > max_chars
    reasons = ["empty" if e else "too_long" if lg else None for e, lg in zip(empty, long)]
    return ~(empty | long), reasons


def run_shard(plan: Plan, seg_index: int, task_index: int) -> dict[str, Any]:
    """Run one task of one pass to completion and return its stats (also saved in its marker).

    Errors other than our own come back as ``ShardError`` naming the pass, task and input file.
    """
    try:
        return ShardRun(plan, seg_index, task_index).run()
    except CurationError:
        raise
    except Exception as exc:
        task = plan.tasks[task_index]
        raise ShardError(f"pass {seg_index} task {task_index} ({task.source}): {type(exc).__name__}: {exc}") from exc


class ShardRun:
    """One attempt at one task of one pass: clean, open, read, apply stages, write, mark.

    The steps share the task's counters and writers, which is why they are methods of one object
    rather than functions passing a dozen arguments.
    """

    # Set by ``open``, after the cleanup and the "start" fault point, as the steps run in that order.
    stages: list[Stage]
    dec_writer: RollingParquetWriter
    data_writer: RollingParquetWriter
    gstage: GlobalStage | None  # the next global stage, whose keys this pass adds
    count_tokens: Callable[[list[str]], list[int]] | None  # the final pass only
    index: TaskIndex | None  # the final pass only: this task's rows of the run's dedup index

    def __init__(self, plan: Plan, seg_index: int, task_index: int) -> None:
        self.plan = plan
        self.seg, self.task = plan.segments[seg_index], plan.tasks[task_index]
        self.lay, self.out = plan.layout, plan.config.output
        self.counts = _Counts()
        self.marker = TaskMarker(self.seg.index, self.task.index, self.task.source,
                                 bytes_in=self.task.size if self.seg.index == 0 else 0)
        self.quarantine: list[dict[str, Any]] = []
        self.domains: dict[str, DomainCount] = defaultdict(DomainCount)
        self.stage_seconds: dict[int, float] = defaultdict(float)  # per stage index: time in its process/filter
        self.cpu_started = 0.0  # time.process_time() when ``run`` started

    def run(self) -> dict[str, Any]:
        started = time.time()
        self.cpu_started = time.process_time()
        _cleanup(self.plan, self.seg, self.task)
        self.fault("start")
        self.open()
        try:
            first = True
            for batch in self.read():
                batch = self.apply_stages(batch)
                if len(batch) == 0:
                    continue  # everything dropped: later stages never saw it, so it has none of their columns
                self.write(batch)
                if first:
                    first = False
                    self.fault("after_first_batch")
            files = self.data_writer.close(write_empty=not self.seg.final)
            dec_files = self.dec_writer.close()
            if self.index is not None:
                self.index.close()
        except BaseException:
            self.data_writer.abort()
            self.dec_writer.abort()
            if self.index is not None:
                self.index.abort()
            raise
        self.write_quarantine()
        self.summarize(files, dec_files, started)
        self.fault("before_marker")
        stats = self.marker.to_json()
        write_json(self.lay.marker(self.seg.index, self.task.index), stats)  # the commit point of this task
        return stats

    def fault(self, point: str) -> None:
        shard_point(self.seg.index, self.task.index, point)

    def open(self) -> None:
        """Set up the pass's stages and open the decision and output writers."""
        seg, task, lay, out = self.seg, self.task, self.lay, self.out
        self.stages = self.plan.set_up(seg)
        schema = self.plan.segment_schema(seg)
        decisions = lay.decisions(seg.index, task.index)
        self.dec_writer = RollingParquetWriter(decisions.parent, "", DECISION_SCHEMA, single_name=decisions.name)
        if seg.final:
            self.data_writer = RollingParquetWriter(lay.shards_dir, lay.shard_prefix(task.index), schema,
                                                    out.target_shard_bytes, out.compression)
        else:
            work = lay.work(seg.index, task.index)
            self.data_writer = RollingParquetWriter(work.parent, "", schema, compression="zstd",
                                                    single_name=work.name)
        self.gstage = self.plan.global_stage(seg.key_for[0]) if seg.key_for else None
        self.count_tokens = token_counter(out.token_counter) if seg.final else None
        # With no stage after the last global one, its keys (e.g. near-dedup's MinHash) are the index's.
        keyed_by = self.plan.stage(seg.drop_from[0]) if seg.drop_from is not None and not seg.stages else None
        self.index = TaskIndex(lay, task.index, params_for(self.plan.stages()), keyed_by) if seg.final else None

    def read(self) -> Iterator[pa.Table]:
        """The task's input batches: the input file (pass 0) or the previous pass's work file."""
        return self.read_input() if self.seg.index == 0 else self.read_work()

    def read_input(self) -> Iterator[pa.Table]:
        """Documents of the input file, less those no stage must see (empty, too long)."""
        cfg, task, stats = self.plan.config.input, self.task, self.marker
        row = bad_lines = 0
        for rb in read_documents(task.path, task.source, cfg):
            stats.lines += rb.lines
            bad_lines += rb.quarantined  # a file quarantined whole (no text column) counts all its rows
            stats.blank_lines += rb.blank
            self.quarantine.extend(rb.quarantine)
            table = _with_position(rb.table, task.index, row)
            row += len(table)
            stats.docs_read += len(table)
            keep, reasons = _input_guard(table, cfg.max_chars)
            res = split(table, keep, reasons)
            self.record(-1, "input", res, len(table))
            yield res.kept
        if stats.lines and bad_lines / stats.lines > cfg.max_malformed_fraction:
            raise ShardError(f"{task.source}: {bad_lines} of {stats.lines} lines are malformed, over "
                             f"input.max_malformed_fraction={cfg.max_malformed_fraction}; see the quarantine table")

    def read_work(self) -> Iterator[pa.Table]:
        """The previous pass's work file, less the rows its global stage marked as duplicates."""
        lay, task = self.lay, self.task
        stage_index, spec = self.seg.drop_from
        gstage = self.plan.global_stage(stage_index)
        dups_path = lay.dups_for_task(stage_index, task.index)
        schema = gstage.result_schema
        if dups_path.exists():
            src, fs = arrow_source(dups_path)
            marks = pq.ParquetDataset(src, filesystem=fs).read(columns=[n for n in schema.names if n != "_task"])
        else:
            marks = schema.remove(schema.get_field_index("_task")).empty_table()
        with lay.work(self.seg.index - 1, task.index).open("rb") as fh:
            for rb in pq.ParquetFile(fh).iter_batches(batch_size=self.plan.config.input.batch_size):
                table = pa.Table.from_batches([rb])
                res = gstage.apply(table, marks)
                self.record(stage_index, spec.stage, res, len(table))
                yield res.kept

    def apply_stages(self, batch: pa.Table) -> pa.Table:
        """Run the pass's stages over one batch, a fused group of per-document filters at a time."""
        for group in _groups(self.seg, self.stages):
            if len(batch) == 0:
                break
            names = "+".join(spec.stage for (_, spec), _ in group)
            t_group = time.perf_counter()
            try:
                if len(group) == 1 and not is_per_document(group[0][1]):
                    (index, spec), stage = group[0]
                    res = stage.process(batch)
                    self.record(index, spec.stage, res, len(batch), len(res.kept))
                    batch = res.kept
                    self.stage_seconds[index] += time.perf_counter() - t_group
                else:
                    batch, steps = run_chain([stage for _, stage in group], batch)
                    # A fused chain is timed as a whole; its time is shared by documents seen.
                    spent, seen = time.perf_counter() - t_group, sum(step.n_in for step in steps) or 1
                    for ((index, spec), _), step in zip(group, steps):
                        self.record(index, spec.stage, step.result, step.n_in)
                        self.stage_seconds[index] += spent * step.n_in / seen
            except CurationError:
                raise
            except Exception as exc:  # name the shard and stage; ValueError etc. are not retried
                raise ShardError(f"stage {names} failed on {self.task.source} (task {self.task.index}, "
                                 f"docs {batch.column('id')[0]}..): {type(exc).__name__}: {exc}") from exc
        return batch

    def record(self, index: int, name: str, res: StageResult, n_in: int, n_out: int | None = None) -> None:
        """Count a stage's verdicts on a batch and record its dropped rows in the decisions table."""
        # n_out: rows leaving the stage when it may add rows (rephrasing); chain steps leave it None.
        self.counts.add(index, name, n_in, n_in - len(res.dropped) if n_out is None else n_out, res.reasons)
        if len(res.dropped):
            d = res.dropped
            self.dec_writer.write(pa.table({
                "id": d.column("id"), "stage": pa.array([name] * len(d), pa.string()),
                "reason": pa.array(res.reasons, pa.string()), "details": pa.array(res.details, pa.string()),
                "source": d.column("source"), "domain": d.column("domain"), "url": d.column("url"),
                "n_chars": d.column("n_chars"),
                "text": d.column("text") if self.out.keep_rejected_text else pa.nulls(len(d), pa.large_string()),
            }))

    def write(self, batch: pa.Table) -> None:
        """Write one batch of kept documents: keyed for the next global stage, or counted per domain."""
        if self.gstage is not None and self.seg.key_for is not None:
            t_keys = time.perf_counter()
            batch = self.gstage.add_keys(batch)
            # Keying is the global stage's share of this pass (semantic dedup embeds here): timed as its own.
            self.stage_seconds[self.seg.key_for[0]] += time.perf_counter() - t_keys
        if self.count_tokens is not None and len(batch):  # the final pass
            toks = self.count_tokens(batch.column("text").to_pylist())
            for dom, n_chars, n_tok in zip(batch.column("domain").to_pylist(),
                                           batch.column("n_chars").to_pylist(), toks):
                d = self.domains[dom]
                d.docs += 1
                d.chars += n_chars
                d.tokens += n_tok
        if self.index is not None:
            self.index.write(batch)
        self.data_writer.write(batch)

    def write_quarantine(self) -> None:
        """The input lines that could not be read, when there are any."""
        if not self.quarantine:
            return
        path = self.lay.quarantine(self.task.index)
        qw = RollingParquetWriter(path.parent, "", QUARANTINE_SCHEMA, single_name=path.name)
        qw.write(pa.Table.from_pylist(self.quarantine, schema=QUARANTINE_SCHEMA))
        qw.close()

    def summarize(self, files: list[dict[str, Any]], dec_files: list[dict[str, Any]], started: float) -> None:
        """Complete the marker with what the task wrote and how long it took."""
        root, m = self.lay.root, self.marker
        m.quarantined = len(self.quarantine)
        m.stages = [self.counts.stages[k] for k in sorted(self.counts.stages)]
        m.docs_out = sum(f["rows"] for f in files)
        m.outputs = [ShardEntry(str(f["path"].relative_to(root)), f["rows"], f["bytes"], f["sha256"]) for f in files]
        m.decisions = [str(f["path"].relative_to(root)) for f in dec_files]
        m.domains = dict(self.domains)
        m.started_unix = round(started, 3)
        m.seconds = round(time.time() - started, 3)
        # This process's CPU time (all its threads): next to ``seconds`` it shows how much of
        # the task's wall time went to waiting for a core on a busy machine.
        m.cpu_seconds = round(time.process_time() - self.cpu_started, 3)
        m.stage_seconds = {str(k): round(v, 4) for k, v in sorted(self.stage_seconds.items())}
        m.index_seconds = round(self.index.seconds, 4) if self.index is not None else None
        m.node = _node_id()


def _node_id() -> str | None:
    """The Ray node running this task (None outside Ray): markers say where each task ran."""
    import sys

    ray = sys.modules.get("ray")  # never import Ray just to ask; the local executor has none
    if ray is None or not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()
