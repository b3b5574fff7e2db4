"""pipeline_scale's CpuTracker: a process that exits during the run still counts, and once."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("pipeline_scale", REPO / "benchmarks" / "pipeline_scale.py")
assert spec and spec.loader
ps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ps)

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\ntime.sleep(0.3)\n"


def _own_cpu() -> float:
    return ps._proc_table()[os.getpid()][2]


def test_a_child_that_exited_before_the_end_still_counts_once() -> None:
    tracker = ps.CpuTracker(interval=0.05)
    child = subprocess.Popen([sys.executable, "-c", BURN])
    child.wait(timeout=30)  # reaped here: its CPU is also in this process's cutime, which must not count again
    total = tracker.stop()
    child_cpu = [cpu for (pid, _), cpu in tracker.seen.items() if pid == child.pid]
    assert len(child_cpu) == 1 and 0.5 <= child_cpu[0] <= 1.0  # seen alive, with the CPU it had burnt
    # this process (its own CPU only) plus the child, nothing counted twice
    assert abs(total - _own_cpu() - child_cpu[0]) < 0.1
