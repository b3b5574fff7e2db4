"""The fixed cost of a local Ray cluster on this machine: start, first tasks, shutdown, daemons' CPU.

    .venv/bin/python benchmarks/ray_overhead.py --num-cpus 2 --repeats 3

Starts Ray as ``RayExecutor`` does (``include_dashboard=False``), runs one trivial task per CPU,
reads the CPU-seconds of every process the cluster started, and shuts it down; prints each
phase's seconds per repeat. These are the seconds a Ray run pays beyond its tasks, which weigh
most on short runs (see docs/benchmarks.md, "Full pipeline at scale").
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.pipeline_scale import _proc_table  # noqa: E402


def descendants_cpu_s() -> tuple[int, float]:
    """How many processes descend from this one, and their own CPU-seconds."""
    table = _proc_table()
    mine, frontier = set(), [os.getpid()]
    while frontier:
        kids = [p for p, (pp, _, _) in table.items() if pp in frontier and p not in mine]
        mine.update(kids)
        frontier = kids
    return len(mine), sum(table[p][2] for p in mine)


def once(num_cpus: int) -> dict[str, float]:
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    t1 = time.perf_counter()

    @ray.remote
    def noop() -> int:
        return 1

    ray.get([noop.remote() for _ in range(num_cpus)])
    t2 = time.perf_counter()
    n, cpu = descendants_cpu_s()
    ray.shutdown()
    t3 = time.perf_counter()
    return {"init_s": t1 - t0, "first_tasks_s": t2 - t1, "shutdown_s": t3 - t2, "processes": n, "their_cpu_s": cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    for i in range(args.repeats):
        r = once(args.num_cpus)
        print(f"repeat {i}: init {r['init_s']:.2f} s, first {args.num_cpus} tasks {r['first_tasks_s']:.2f} s, "
              f"shutdown {r['shutdown_s']:.2f} s; {r['processes']} processes started, "
              f"{r['their_cpu_s']:.2f} CPU-s", flush=True)


if __name__ == "__main__":
    main()
