"""Run export tasks in this process or as Ray tasks, as ``curation.executors`` runs a pipeline's shard tasks.

On Ray each task is one ``ray.remote`` call of ``export_shard`` (retried by Ray when its worker dies; a raised
exception fails the export at once), at most as many in flight as the cluster has CPUs, largest source shard
first so no big shard starts last. The driver only collects markers: tasks write their own files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from curation.export.source import ExportError
from curation.export.task import ShardJob, export_shard

OnDone = Callable[[dict[str, Any]], None]


def run_local(jobs: list[ShardJob], on_done: OnDone) -> None:
    for job in jobs:
        on_done(export_shard(job))


def _remote_task(job: ShardJob) -> dict[str, Any]:
    from curation.executors.ray import hide_unassigned_gpus

    hide_unassigned_gpus()  # tokenizing needs no GPU: never let a CPU task see one
    return export_shard(job)


def _init_ray(address: str | None, num_cpus: int | None) -> bool:
    """Connect to (or start) Ray; True when this call started the connection (and so should end it)."""
    import ray

    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if k in os.environ}
    # A cluster started here runs its workers with this environment; one joined needs it in a runtime_env.
    joins = address is not None or bool(os.environ.get("RAY_ADDRESS"))
    ray.init(address=address, num_cpus=None if joins else num_cpus, include_dashboard=False,
             logging_level=logging.WARNING, runtime_env={"env_vars": env} if env and joins else None)
    return True


def run_ray(jobs: list[ShardJob], on_done: OnDone, address: str | None = None, num_cpus: int | None = None,
            retries: int = 2) -> None:
    import ray

    owns = _init_ray(address, num_cpus)
    try:
        remote = ray.remote(max_retries=retries, num_cpus=1)(_remote_task)
        order = iter(sorted(jobs, key=lambda j: (-j.shard.bytes, j.shard.index)))
        width = max(1, min(len(jobs), int(ray.cluster_resources().get("CPU", 1))))
        in_flight: dict[Any, ShardJob] = {}

        def submit() -> None:
            job = next(order, None)
            if job is not None:
                in_flight[remote.remote(job)] = job

        for _ in range(width):
            submit()
        while in_flight:
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                job = in_flight.pop(ref)
                try:
                    marker = ray.get(ref)
                except Exception as exc:
                    for other in in_flight:  # fail fast: the export stops at the first failed task
                        ray.cancel(other)
                    cause = getattr(exc, "cause", None) or exc
                    raise ExportError(f"export of {job.shard.rel} failed: {cause}") from exc
                submit()
                on_done(marker)
    finally:
        if owns:
            ray.shutdown()


def run_jobs(jobs: list[ShardJob], on_done: OnDone, executor: str = "local", address: str | None = None,
             num_cpus: int | None = None) -> None:
    """Run every job: ``local`` in this process, ``ray`` on a local Ray or the cluster at ``address``."""
    if executor not in ("local", "ray"):
        raise ExportError(f"executor {executor!r}: use local or ray")
    if not jobs:
        return
    if executor == "local":
        run_local(jobs, on_done)
    else:
        run_ray(jobs, on_done, address, num_cpus)
