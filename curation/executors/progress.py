"""Live progress of a run: per pass tasks, documents, bytes, rates and a bytes-based ETA.

Input files differ in size by orders of magnitude (100 kB to GBs), so an ETA from "tasks left x
mean seconds per task" swings wildly with whichever file finished last. Here every task counts
the bytes of its input file (in later passes too: a pass-1 task re-reads what its file became),
and the ETA is the bytes left divided by the byte rate this pass has achieved so far.

The figures are written to ``progress.json`` in the run directory (atomically, at most every
``min_interval_s`` and at every pass end), which the service reads while a run is live.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.io.atomic import write_json
from curation.io.manifest import PROGRESS

#: Seconds between two writes of progress.json while a pass runs (pass ends always write).
WRITE_INTERVAL_S = 2.0


def eta_seconds(bytes_left: int, bytes_done_now: int, elapsed_s: float) -> float | None:
    """Seconds until ``bytes_left`` are processed at the rate ``bytes_done_now / elapsed_s``.

    ``bytes_done_now`` counts only what this attempt processed (tasks finished by an earlier,
    resumed attempt took no time now and would inflate the rate). None while there is no rate yet.
    """
    if bytes_left <= 0:
        return 0.0
    if bytes_done_now <= 0 or elapsed_s <= 0:
        return None
    return bytes_left / (bytes_done_now / elapsed_s)


@dataclass
class PassProgress:
    """Counters of one pass. ``bytes_*`` are input-file bytes of the pass's tasks."""

    index: int
    tasks_total: int
    bytes_total: int
    tasks_done: int = 0
    bytes_done: int = 0
    docs: int = 0
    bytes_done_now: int = 0  # finished by this attempt (the rate's numerator)
    docs_now: int = 0
    started_unix: float | None = None
    finished_unix: float | None = None

    def to_json(self, now: float) -> dict[str, Any]:
        end = self.finished_unix if self.finished_unix is not None else now
        elapsed = end - self.started_unix if self.started_unix is not None else 0.0
        eta = eta_seconds(self.bytes_total - self.bytes_done, self.bytes_done_now, elapsed)
        return {"pass": self.index, "tasks_done": self.tasks_done, "tasks_total": self.tasks_total,
                "docs": self.docs, "bytes_in": self.bytes_done, "bytes_total": self.bytes_total,
                "docs_per_s": round(self.docs_now / elapsed, 1) if elapsed > 0 and self.docs_now else None,
                "bytes_per_s": round(self.bytes_done_now / elapsed, 1) if elapsed > 0 and self.bytes_done_now
                else None,
                "eta_s": None if eta is None else round(eta, 1),
                "started_unix": self.started_unix, "finished_unix": self.finished_unix}


@dataclass
class ProgressTracker:
    """Counts finished tasks per pass and writes ``progress.json`` (see the module docstring).

    Args:
        path: where progress.json goes (``None``: keep the figures in memory only).
        task_bytes: input bytes of each task, by task index.
        n_passes: shard passes of the run.
        clock: seconds since the epoch (a fake one in tests).
        min_interval_s: least time between two writes while a pass runs.
    """

    path: Path | None
    task_bytes: list[int]
    n_passes: int
    clock: Callable[[], float] = time.time
    min_interval_s: float = WRITE_INTERVAL_S
    passes: list[PassProgress] = field(init=False)
    current: int = field(init=False, default=0)
    finished: bool = field(init=False, default=False)
    _last_write: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        total = sum(self.task_bytes)
        self.passes = [PassProgress(i, len(self.task_bytes), total) for i in range(self.n_passes)]

    def start_pass(self, index: int, already_done: list[int]) -> None:
        """A pass begins; ``already_done`` are tasks an earlier attempt finished (resume)."""
        p = self.passes[index]
        self.current = index
        p.started_unix = self.clock()
        p.tasks_done = len(already_done)
        p.bytes_done = sum(self.task_bytes[t] for t in already_done)
        self.write(force=True)

    def task_done(self, stats: dict[str, Any]) -> None:
        """One task finished (``stats``: its marker data); writes at most every ``min_interval_s``."""
        p = self.passes[int(stats["seg"])]
        n = self.task_bytes[int(stats["task"])]
        stages = stats.get("stages") or []
        docs = int(stats.get("docs_read", 0)) if p.index == 0 else int(stages[0]["in"]) if stages else 0
        p.tasks_done += 1
        p.bytes_done += n
        p.bytes_done_now += n
        p.docs += docs
        p.docs_now += docs
        self.write()

    def end_pass(self, index: int) -> None:
        self.passes[index].finished_unix = self.clock()
        self.write(force=True)

    def finish(self) -> None:
        self.finished = True
        self.write(force=True)

    def snapshot(self) -> dict[str, Any]:
        """The figures as written to progress.json (the same keys as ``curation.io.runs.progress``)."""
        now = self.clock()
        passes = [p.to_json(now) for p in self.passes]
        total = sum(self.task_bytes)
        # Run ETA: bytes left in this pass and in every later one, at this pass's byte rate (before
        # this pass has one, the last pass's). Later passes read smaller Parquet work files, so this
        # leans long, and shortens as they run.
        cur = self.passes[self.current]
        rated = [p for p in self.passes[: self.current + 1] if p.bytes_done_now and p.started_unix is not None]
        eta = None
        if rated:
            r = rated[-1]
            left = cur.bytes_total - cur.bytes_done + total * (self.n_passes - self.current - 1)
            eta = eta_seconds(left, r.bytes_done_now, (r.finished_unix or now) - r.started_unix)
            eta = None if eta is None else round(eta, 1)
        done_bytes = sum(p.bytes_done for p in self.passes)
        return {PROGRESS.key: PROGRESS.version, "updated_unix": round(now, 3), "finished": self.finished,
                "pass": self.current, "passes": passes,
                "tasks_done": sum(p.tasks_done for p in self.passes),
                "tasks_total": len(self.task_bytes) * self.n_passes,
                "input_bytes": total, "input_bytes_done": self.passes[0].bytes_done,
                "fraction": round(done_bytes / (total * self.n_passes), 4) if total else None,
                "eta_s": 0.0 if self.finished else eta}

    def write(self, force: bool = False) -> None:
        now = self.clock()
        if self.path is None or (not force and self._last_write is not None
                                 and now - self._last_write < self.min_interval_s):
            return
        write_json(self.path, self.snapshot())
        self._last_write = now
