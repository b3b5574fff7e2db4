"""``run_shard``: one task of one shard pass, shared by the local and the Ray executor.

It reads the task's input (the input file, or the previous pass's work file minus the rows a
global stage marked as duplicates), runs the pass's stages batch by batch, writes outputs to
temp files published by rename, then writes the completion marker last. Rerunning a task first
deletes whatever a crashed attempt left, so the outputs are the same as a clean run's.
"""

from __future__ import annotations

import os
import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.errors import CurationError, ShardError
from curation.executors.plan import Plan, Segment
from curation.io.atomic import write_json
from curation.io.inputs import Task
from curation.io.readers import read_documents
from curation.io.storage import TMP_SUFFIX, arrow_source, is_remote
from curation.io.writers import RollingParquetWriter
from curation.schema import DECISION_SCHEMA, QUARANTINE_SCHEMA, base_schema
from curation.stages.base import Stage, is_per_document, run_chain, split
from curation.stages.global_stage import GlobalStage
from curation.tokens import token_counter

#: Fault-injection hook for the crash tests: "kill:SEG:TASK" SIGKILLs the worker after the task's
#: first batch is written, "hang:SEG:TASK" sleeps there, "sleep:SEG:TASK" (TASK may be *) waits 1 s
#: there, "raise:SEG:TASK" raises ValueError at the start, "raise_before_marker:SEG:TASK" after the
#: outputs are published but before the marker. With CURATION_FAULT_ONCE=PATH it fires once.
FAULT_ENV = "CURATION_FAULT"
#: The hook is inert unless this is also "1". A stray CURATION_FAULT in a production environment
#: (a copied shell profile, a leaked CI variable) must never kill or stall a real run, so only the
#: tests that exercise crashes set both. A second variable rather than "are we under pytest?",
#: because the hook must also fire in Ray workers and in `curate run` subprocesses started by tests.
FAULT_ENABLE_ENV = "CURATION_ENABLE_FAULT_INJECTION"
#: What the Ray executor forwards to its workers, and only when injection is enabled.
FAULT_VARS = (FAULT_ENV, "CURATION_FAULT_ONCE", FAULT_ENABLE_ENV)


def fault_injection_env() -> dict[str, str]:
    """The fault-injection variables of this process when injection is enabled; else nothing."""
    if os.environ.get(FAULT_ENABLE_ENV) != "1":
        return {}
    return {k: os.environ[k] for k in FAULT_VARS if k in os.environ}

_STAGE_CACHE: dict[tuple[str, int], list[Stage]] = {}


def build_stages(plan: Plan, seg: Segment) -> list[Stage]:
    """Build and set up the pass's stages once per process (models load once per worker)."""
    key = (plan.root, seg.index)
    if key not in _STAGE_CACHE:
        stages = [spec.build() for _, spec in seg.stages]
        for stage in stages:
            stage.setup()
        _STAGE_CACHE[key] = stages
    return _STAGE_CACHE[key]


def segment_schema(plan: Plan, seg: Segment) -> pa.Schema:
    """Schema of a pass's output: base columns, every stage column so far, internal keys."""
    extra: dict[str, pa.DataType] = {}
    for s in plan.segments[: seg.index + 1]:
        if s.drop_from is not None:
            extra.update(s.drop_from[1].build().output_columns())
        for _, spec in s.stages:
            extra.update(spec.build().output_columns())
    if seg.final:
        return base_schema(extra)
    gstage = seg.key_for[1].build()
    schema = base_schema(extra, internal=True)
    for name, dtype in gstage.key_columns().items():
        schema = schema.append(pa.field(name, dtype))
    return schema


class _Counts:
    """Per-stage funnel counters of one task: {stage_index: {in, out, dropped{reason: n}}}."""

    def __init__(self) -> None:
        self.stages: dict[int, dict[str, Any]] = {}

    def add(self, index: int, name: str, n_in: int, n_out: int, reasons: list[str]) -> None:
        s = self.stages.setdefault(index, {"index": index, "name": name, "in": 0, "out": 0, "dropped": {}})
        s["in"] += n_in
        s["out"] += n_out
        for r in reasons:
            s["dropped"][r] = s["dropped"].get(r, 0) + 1


def _fault(seg: int, task: int, point: str) -> None:
    if os.environ.get(FAULT_ENABLE_ENV) != "1":
        return
    spec = os.environ.get(FAULT_ENV, "")
    parts = spec.split(":")
    if not spec or len(parts) != 3 or parts[1] != str(seg) or parts[2] not in (str(task), "*"):
        return
    kind = parts[0]
    fires = {"kill": "after_first_batch", "hang": "after_first_batch", "raise": "start",
             "raise_before_marker": "before_marker", "sleep": "after_first_batch"}.get(kind) == point
    if fires and kind == "sleep":  # a slow task (concurrency tests): every matching task, every time
        time.sleep(1.0)
        return
    once = os.environ.get("CURATION_FAULT_ONCE")
    if not fires or (once and os.path.exists(once)):
        return
    if once:
        Path(once).touch()
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "hang":  # lets a test SIGKILL the driver while this task's temp file is open
        time.sleep(3600)
    raise ValueError(f"injected failure in seg {seg} task {task} at {point}")


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


def _source_batches(plan: Plan, seg: Segment, task: Task, counts: _Counts, decide: Any,
                    stats: dict[str, Any], quarantine: list[dict[str, Any]]) -> Iterator[pa.Table]:
    cfg = plan.config.input
    if seg.index == 0:
        row = bad_lines = 0
        for rb in read_documents(task.path, task.source, cfg):
            stats["lines"] += rb.lines
            bad_lines += rb.quarantined  # a file quarantined whole (no text column) counts all its rows
            stats["blank_lines"] += rb.blank
            quarantine.extend(rb.quarantine)
            table = _with_position(rb.table, task.index, row)
            row += len(table)
            stats["docs_read"] += len(table)
            keep, reasons = _input_guard(table, cfg.max_chars)
            res = split(table, keep, reasons)
            decide(-1, "input", res, len(table))
            yield res.kept
        if stats["lines"] and bad_lines / stats["lines"] > cfg.max_malformed_fraction:
            raise ShardError(f"{task.source}: {bad_lines} of {stats['lines']} lines are malformed, over "
                             f"input.max_malformed_fraction={cfg.max_malformed_fraction}; see the quarantine table")
        return
    lay = plan.layout
    stage_index, spec = seg.drop_from
    gstage = spec.build()
    assert isinstance(gstage, GlobalStage)
    dups_path = lay.dups_for_task(stage_index, task.index)
    schema = gstage.result_schema
    if dups_path.exists():
        src, fs = arrow_source(dups_path)
        marks = pq.ParquetDataset(src, filesystem=fs).read(columns=[n for n in schema.names if n != "_task"])
    else:
        marks = schema.remove(schema.get_field_index("_task")).empty_table()
    with lay.work(seg.index - 1, task.index).open("rb") as fh:
        for rb in pq.ParquetFile(fh).iter_batches(batch_size=cfg.batch_size):
            table = pa.Table.from_batches([rb])
            res = gstage.apply(table, marks)
            decide(stage_index, spec.stage, res, len(table))
            yield res.kept


def run_shard(plan: Plan, seg_index: int, task_index: int) -> dict[str, Any]:
    """Run one task of one pass to completion and return its stats (also saved in its marker).

    Errors other than our own come back as ``ShardError`` naming the pass, task and input file.
    """
    try:
        return _run_shard(plan, seg_index, task_index)
    except CurationError:
        raise
    except Exception as exc:
        task = plan.tasks[task_index]
        raise ShardError(f"pass {seg_index} task {task_index} ({task.source}): {type(exc).__name__}: {exc}") from exc


def _run_shard(plan: Plan, seg_index: int, task_index: int) -> dict[str, Any]:
    seg, task, lay, out = plan.segments[seg_index], plan.tasks[task_index], plan.layout, plan.config.output
    started = time.time()
    _cleanup(plan, seg, task)
    _fault(seg.index, task.index, "start")
    stages = build_stages(plan, seg)
    schema = segment_schema(plan, seg)
    counts = _Counts()
    stats: dict[str, Any] = {"seg": seg.index, "task": task.index, "source": task.source, "lines": 0,
                             "blank_lines": 0, "docs_read": 0, "bytes_in": task.size if seg.index == 0 else 0}
    quarantine: list[dict[str, Any]] = []
    dec_writer = RollingParquetWriter(lay.decisions(seg.index, task.index).parent, "", DECISION_SCHEMA,
                                      single_name=lay.decisions(seg.index, task.index).name)
    if seg.final:
        data_writer = RollingParquetWriter(lay.shards_dir, lay.shard_prefix(task.index), schema,
                                           out.target_shard_bytes, out.compression)
    else:
        work = lay.work(seg.index, task.index)
        data_writer = RollingParquetWriter(work.parent, "", schema, compression="zstd", single_name=work.name)
    gstage = seg.key_for[1].build() if seg.key_for else None
    domains: dict[str, dict[str, int]] = defaultdict(lambda: {"docs": 0, "chars": 0, "tokens": 0})
    count_tokens = token_counter(out.token_counter) if seg.final else None
    stage_seconds: dict[int, float] = defaultdict(float)  # per stage index: time in its process/filter

    def decide(index: int, name: str, res: Any, n_in: int, n_out: int | None = None) -> None:
        # n_out: rows leaving the stage when it may add rows (rephrasing); chain steps leave it None.
        counts.add(index, name, n_in, n_in - len(res.dropped) if n_out is None else n_out, res.reasons)
        if len(res.dropped):
            d = res.dropped
            dec_writer.write(pa.table({
                "id": d.column("id"), "stage": pa.array([name] * len(d), pa.string()),
                "reason": pa.array(res.reasons, pa.string()), "details": pa.array(res.details, pa.string()),
                "source": d.column("source"), "domain": d.column("domain"), "url": d.column("url"),
                "n_chars": d.column("n_chars"),
                "text": d.column("text") if out.keep_rejected_text else pa.nulls(len(d), pa.large_string()),
            }))

    try:
        first = True
        for batch in _source_batches(plan, seg, task, counts, decide, stats, quarantine):
            for group in _groups(seg, stages):
                if len(batch) == 0:
                    break
                names = "+".join(spec.stage for (_, spec), _ in group)
                t_group = time.perf_counter()
                try:
                    if len(group) == 1 and not is_per_document(group[0][1]):
                        (index, spec), stage = group[0]
                        res = stage.process(batch)
                        decide(index, spec.stage, res, len(batch), len(res.kept))
                        batch = res.kept
                        stage_seconds[index] += time.perf_counter() - t_group
                    else:
                        batch, steps = run_chain([stage for _, stage in group], batch)
                        # A fused chain is timed as a whole; its time is shared by documents seen.
                        spent, seen = time.perf_counter() - t_group, sum(step.n_in for step in steps) or 1
                        for ((index, spec), _), step in zip(group, steps):
                            decide(index, spec.stage, step.result, step.n_in)
                            stage_seconds[index] += spent * step.n_in / seen
                except CurationError:
                    raise
                except Exception as exc:  # name the shard and stage; ValueError etc. are not retried
                    raise ShardError(f"stage {names} failed on {task.source} (task {task.index}, "
                                     f"docs {batch.column('id')[0]}..): {type(exc).__name__}: {exc}") from exc
            if len(batch) == 0:
                continue  # everything dropped: later stages never saw it, so it has none of their columns
            if gstage is not None:
                batch = gstage.add_keys(batch)
            if seg.final and len(batch):
                toks = count_tokens(batch.column("text").to_pylist())
                for dom, n_chars, n_tok in zip(batch.column("domain").to_pylist(), batch.column("n_chars").to_pylist(), toks):
                    d = domains[dom]
                    d["docs"] += 1
                    d["chars"] += n_chars
                    d["tokens"] += n_tok
            data_writer.write(batch)
            if first:
                first = False
                _fault(seg.index, task.index, "after_first_batch")
        files = data_writer.close(write_empty=not seg.final)
        dec_files = dec_writer.close()
    except BaseException:
        data_writer.abort()
        dec_writer.abort()
        raise
    if quarantine:
        qw = RollingParquetWriter(lay.quarantine(task.index).parent, "", QUARANTINE_SCHEMA,
                                  single_name=lay.quarantine(task.index).name)
        qw.write(pa.Table.from_pylist(quarantine, schema=QUARANTINE_SCHEMA))
        qw.close()
    stats.update(
        quarantined=len(quarantine),
        stages=[counts.stages[k] for k in sorted(counts.stages)],
        docs_out=sum(f["rows"] for f in files),
        outputs=[{"path": str(f["path"].relative_to(lay.root)), "rows": f["rows"], "bytes": f["bytes"],
                  "sha256": f["sha256"]} for f in files],
        decisions=[str(f["path"].relative_to(lay.root)) for f in dec_files],
        domains=dict(domains),
        started_unix=round(started, 3),
        seconds=round(time.time() - started, 3),
        stage_seconds={str(k): round(v, 4) for k, v in sorted(stage_seconds.items())},
        node=_node_id(),
    )
    _fault(seg.index, task.index, "before_marker")
    write_json(lay.marker(seg.index, task.index), stats)  # the commit point of this task
    return stats


def _node_id() -> str | None:
    """The Ray node running this task (None outside Ray): markers say where each task ran."""
    import sys

    ray = sys.modules.get("ray")  # never import Ray just to ask; the local executor has none
    if ray is None or not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()
