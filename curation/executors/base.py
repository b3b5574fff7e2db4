"""Executor base: run-directory checks, pass/task scheduling, global steps, the manifest.

Subclasses only say how a list of tasks runs (``run_tasks``) and how a global stage's
per-bucket resolve runs (``run_global``). Everything that decides correctness (what is pending,
what is refused, when the run is committed) lives here, shared by local and Ray execution.
"""

from __future__ import annotations

import hashlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.config import fingerprint
from curation.errors import FatalError
from curation.executors.plan import Plan, Segment, make_plan
from curation.executors.progress import ProgressTracker
from curation.io.atomic import read_json, write_json
from curation.io.manifest import RUN_JSON, GlobalMarker, RunManifest, RunTotals, TaskMarker, check_schema
from curation.io.storage import is_remote, remove_tree
from curation.io.digest import file_digest
from curation.pipeline import PipelineConfig
from curation.schema import SCHEMA_VERSION
from curation.stages.base import Stage
from curation.stages.dedup.index import params_for, write_run_index
from curation.stages.global_stage import GlobalStage

log = logging.getLogger(__name__)

ProgressFn = Callable[[dict[str, Any]], None]


@dataclass
class RunResult:
    """What a run did: the run directory, its manifest, and whether anything had to be done."""

    root: Path
    manifest: dict[str, Any]
    nothing_to_do: bool
    tasks_run: int


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(data, list):
        out = {}
        for i, v in enumerate(data):
            out.update(_flatten(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): data}


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _artifact_digest(path: Path) -> str:
    """sha256 of a file's bytes; for a folder (a Hugging Face model dir), of its files' names and sizes
    and modification times (hashing gigabytes of weights on every launch would cost minutes)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        if path.is_file():
            _DIGESTS[key] = file_digest(path)
        else:
            h = hashlib.sha256()
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                fst = f.stat()
                h.update(f"{f.relative_to(path)}\0{fst.st_size}\0{fst.st_mtime_ns}\n".encode())
            _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def artifact_digests(config: PipelineConfig, stages: Sequence[Stage] | None = None) -> dict[str, str]:
    """Digests of the local files and folders each stage declares in ``Stage.artifacts()`` (fastText
    models, centroids, model dirs, eval sets): a changed model behind the same path must not resume
    into the old run's outputs. A path that does not exist here (a hub id) has no digest.
    ``stages``: ``config.stages`` already built (a plan's); built here when not given."""
    out: dict[str, str] = {}
    built = stages if stages is not None else [spec.built() for spec in config.stages]
    for i, stage in enumerate(built):
        for key, value in stage.artifacts().items():
            path = Path(value)
            if path.exists():
                out[f"stages.{i}.{key}"] = _artifact_digest(path)
    return out


class Executor(ABC):
    """Runs a pipeline into its run directory, resuming whatever a previous attempt finished."""

    def __init__(self, config: PipelineConfig, overwrite: bool = False, progress: ProgressFn | None = None) -> None:
        self.config = config
        self.overwrite = overwrite
        self._on_task = progress or (lambda stats: None)
        self.tracker: ProgressTracker | None = None

    def progress(self, stats: dict[str, Any]) -> None:
        """Subclasses call this with each finished task's stats: counts it in progress.json, then
        passes it to the caller's callback."""
        if self.tracker is not None:
            self.tracker.task_done(stats)
        self._on_task(stats)

    @abstractmethod
    def run_tasks(self, plan: Plan, seg: Segment, tasks: list[int]) -> None:
        """Run ``run_shard(plan, seg.index, t)`` for every ``t`` (calling ``self.progress``)."""

    @abstractmethod
    def run_global(self, plan: Plan, seg: Segment, stage: GlobalStage, stage_index: int) -> None:
        """Run ``stage.run_global`` over the keyed work files of ``seg`` and write its resolved
        rows under ``layout.dups_dir(stage_index)/_task=K/``."""

    def close(self) -> None:
        """Release execution resources."""

    # -- shared logic ---------------------------------------------------------------------------

    def _identity(self, plan: Plan) -> dict[str, Any]:
        inputs = [{"source": t.source, "bytes": t.size} for t in plan.tasks]
        data = {"config": self.config.fingerprint_data(), "inputs": inputs, "schema_version": SCHEMA_VERSION}
        artifacts = artifact_digests(self.config, plan.stages())
        if artifacts:  # only then, so runs that name no model file keep their fingerprints
            data["artifacts"] = artifacts
        return {**data, "fingerprint": fingerprint(data)}

    def _check_run_dir(self, plan: Plan, identity: dict[str, Any]) -> None:
        lay = plan.layout
        if self.overwrite and lay.root.exists():
            remove_tree(lay.root)
        if lay.run_json.exists():
            old = check_schema(read_json(lay.run_json), RUN_JSON, lay.run_json)
            if old["fingerprint"] != identity["fingerprint"]:
                keys = ("config", "inputs", "artifacts")
                a, b = _flatten({k: old.get(k) for k in keys}), _flatten({k: identity.get(k) for k in keys})
                changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                raise FatalError(
                    f"{lay.root} holds a run with a different config or inputs (fingerprint "
                    f"{old['fingerprint'][:12]} != {identity['fingerprint'][:12]}); changed: "
                    f"{', '.join(changed[:10])}. Use a new output dir, or --overwrite to delete the old run."
                )
        elif lay.root.exists() and any(lay.root.iterdir()):
            raise FatalError(f"{lay.root} is not empty and holds no run.json; refusing to write into it")
        else:
            # The global stages' indices say how many passes the run has, so readers of the run (progress,
            # verify) need not import the stage registry to know.
            write_json(lay.run_json, {**identity, "name": self.config.name, "full_config": self.config.to_mapping(),
                                      "global_stages": global_stage_indices(plan)})
        # Temp files are only ever left by a killed attempt; none of them is live now (an object
        # store holds none: its writers stage them locally).
        if not is_remote(lay.root):
            for tmp in lay.root.rglob("*.tmp"):
                tmp.unlink()

    def run(self, plan: Plan | None = None) -> RunResult:
        """``plan``: made from this executor's config already (the CLI makes it to describe the
        stages before the run); made here when not given."""
        plan = plan if plan is not None else make_plan(self.config)
        identity = self._identity(plan)
        self._check_run_dir(plan, identity)
        lay = plan.layout
        if lay.manifest.exists():
            log.info("run %s is complete: nothing to do", lay.root)
            # As a fresh run returns it (``to_json``), and refused naming the file unless this version wrote it whole.
            return RunResult(lay.root, RunManifest.read(lay.root).to_json(), nothing_to_do=True, tasks_run=0)
        tasks_run = 0
        started = time.time()
        self.tracker = ProgressTracker(lay.progress, [t.size for t in plan.tasks], len(plan.segments))
        for seg in plan.segments:
            pending = [t.index for t in plan.tasks if not lay.marker(seg.index, t.index).exists()]
            pending_set = set(pending)
            self.tracker.start_pass(seg.index, [t.index for t in plan.tasks if t.index not in pending_set])
            if pending:
                log.info("pass %d: %d of %d tasks to run", seg.index, len(pending), len(plan.tasks))
                self.run_tasks(plan, seg, pending)
                tasks_run += len(pending)
            if seg.key_for is not None:
                stage_index, spec = seg.key_for
                marker = lay.global_marker(stage_index)
                if not marker.exists() or pending:
                    remove_tree(lay.dups_dir(stage_index))
                    t0 = time.time()
                    stage = plan.global_stage(stage_index)
                    if work_rows(plan, seg) == 0:
                        # Every document was dropped before this stage: there is nothing to resolve,
                        # and the next pass reads "no duplicates" from the absent dups folder.
                        log.info("global stage %s: no documents reached it", spec.stage)
                    else:
                        self.run_global(plan, seg, stage, stage_index)
                    # Warnings live in the marker so that a resumed run's manifest still has them.
                    write_json(marker, GlobalMarker(spec.stage, round(time.time() - t0, 3), stage.warnings,
                                                    stage.report).to_json())
            self.tracker.end_pass(seg.index)
        manifest = run_manifest(plan, identity)
        # The index of the kept documents, from the final pass's parts (curation/stages/dedup/index.py):
        # later runs deduplicate against it (``against``) without reading this run's shards.
        manifest.dedup_index = write_run_index(lay, len(plan.tasks), manifest.totals.docs_out,
                                               params_for(plan.stages()), manifest)
        manifest.wall_seconds = round(time.time() - started, 3)
        self.tracker.finish()  # before the manifest: a finished run's progress.json says so
        data = manifest.to_json()
        write_json(lay.manifest, data)  # the commit point of the run
        remove_tree(lay.index_part(0).parent)  # the parts are in dedup_index/ now
        return RunResult(lay.root, data, nothing_to_do=False, tasks_run=tasks_run)


def work_rows(plan: Plan, seg: Segment) -> int:
    """Rows in the keyed work files of a pass (read from the Parquet footers only)."""
    total = 0
    for t in plan.tasks:
        with plan.layout.work(seg.index, t.index).open("rb") as fh:
            total += pq.ParquetFile(fh).metadata.num_rows
    return total


def global_stage_indices(plan: Plan) -> list[int]:
    """Indices (in ``config.stages``) of the global stages: each ends a shard pass, so a run has one pass more."""
    return [seg.key_for[0] for seg in plan.segments if seg.key_for is not None]


def run_manifest(plan: Plan, identity: dict[str, Any]) -> RunManifest:
    """The run's manifest: ``RunManifest.aggregate`` of every task marker and global-stage marker, with what the
    plan says of the run (config, inputs, final schema)."""
    lay = plan.layout
    markers = (TaskMarker.read(lay.marker(seg.index, t.index)) for seg in plan.segments for t in plan.tasks)
    global_markers = ((seg.key_for[0], GlobalMarker.read(lay.global_marker(seg.key_for[0])))
                      for seg in plan.segments if seg.key_for is not None)
    final_schema: pa.Schema = plan.segment_schema(plan.segments[-1])
    return RunManifest.aggregate(
        markers, len(plan.segments), global_markers, name=plan.config.name, fingerprint=identity["fingerprint"],
        created_unix=round(time.time(), 3), config=plan.config.to_mapping(), global_stages=global_stage_indices(plan),
        inputs=identity["inputs"],
        totals=RunTotals(input_files=len(plan.tasks), input_bytes=sum(t.size for t in plan.tasks)),
        token_counter=plan.config.output.token_counter,
        schema=[{"name": f.name, "type": str(f.type)} for f in final_schema])
