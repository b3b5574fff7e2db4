"""Ray executor: shard tasks as plain Ray tasks, global stages in the driver or as a Ray Data shuffle.

Each shard task is one ``ray.remote`` call of the same ``run_shard`` as the local executor, so a
crashed worker's task is simply rerun by Ray (task outputs are deterministic and published by
rename). The driver keeps at most the pass's concurrency of them in flight, largest input first.
A global stage whose keys are small is resolved in the driver; otherwise it reads the keyed work
files with ``read_parquet`` and runs its ``run_global`` on a ``RayFrame``, whose ``group`` is a Ray
Data shuffle (no single process holds every key); the resolved rows are written partitioned by
task.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any


from curation.errors import ConfigError, ShardError
from curation.executors.base import Executor
from curation.executors.local import key_read_columns, resolve_in_process
from curation.executors.plan import Plan, Segment
from curation.executors.ray_frame import RayFrame
from curation.executors.shard import run_shard
from curation.faults import fault_injection_env
from curation.io.storage import arrow_source, forward_env, is_remote, remove_tree
from curation.pipeline import PipelineConfig
from curation.stages.global_stage import GlobalStage

log = logging.getLogger(__name__)


def _cast(t: Any, schema: Any) -> Any:
    return t.select(schema.names).cast(schema)


def hide_unassigned_gpus() -> None:
    """Hide every GPU from this Ray task when Ray assigned it none.

    Ray sets ``CUDA_VISIBLE_DEVICES`` for a task that asks for GPUs, but since 2.x no longer
    blanks it for one that asks for none, which would then see (and load its model onto) GPU 0
    like every other such task. Blanked before any stage is set up, ``device: auto`` means CPU
    there. Ray's worker pool keeps a worker that ran a GPU task for GPU tasks only (and the
    other way round), so blanking it for the rest of this CPU worker's life is safe.
    """
    import ray

    if not ray.get_runtime_context().get_accelerator_ids().get("GPU"):
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def task_remote_args(resources: dict[str, Any], retries: int) -> dict[str, Any]:
    """Ray options of every shard task of a pass: its resources and retries for crashed workers.

    A GPU task gets a fresh worker process (``max_calls=1``, which ``.options()`` cannot set, so the
    remote function is built with it). That matters because torch binds a process to the GPU it first
    initialised CUDA on, and the per-process model cache keys models by ``"cuda"``: a reused worker that
    Ray later assigned another GPU would keep computing on its first one. The cost is one model load per
    input file, small next to scoring or rewriting a file.
    """
    opts: dict[str, Any] = {"max_retries": retries, **resources}
    if resources.get("num_gpus", 0.0) > 0:
        opts["max_calls"] = 1
    return opts


def _shard_task(plan: Plan, seg: int, task: int) -> dict[str, Any]:
    hide_unassigned_gpus()
    return run_shard(plan, seg, task)


def largest_first(plan: Plan, tasks: list[int]) -> list[int]:
    """Tasks in the order to start them: largest input first, so no big file starts last and leaves
    the other workers idle while it finishes (a later pass's work file scales with its input)."""
    return sorted(tasks, key=lambda t: (-plan.tasks[t].size, t))


class RayExecutor(Executor):
    """Runs tasks on a local in-process Ray cluster or on ``executor.address``."""

    def __init__(self, config: PipelineConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._owns_ray = False

    def _ray(self) -> Any:
        import ray

        if not ray.is_initialized():
            ex = self.config.executor
            # Hub look-ups hang without this on machines with no network.
            env = {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "CURATION_LID_MODEL") if k in os.environ}
            env.update(forward_env())  # object-store endpoint/region (never credentials)
            # Not the fault-injection variables: only shard tasks fire faults, and run_tasks gives
            # them those variables (the one place they are forwarded, whoever started Ray).
            # A cluster started here runs its workers with this process's environment already. A job
            # runtime_env would make Ray set up an environment for it and start other workers than
            # the ones it prestarted: 0.7 s more before the first task on a 2-CPU machine.
            starts_cluster = ex.address is None and not os.environ.get("RAY_ADDRESS")
            ray.init(
                address=ex.address,
                num_cpus=ex.num_cpus if ex.address is None else None,
                include_dashboard=False,
                logging_level=logging.WARNING,
                runtime_env={"env_vars": env} if env and not starts_cluster else None,
            )
            self._owns_ray = True
        return ray

    def _ray_data(self) -> Any:
        """Ray, with Ray Data imported and set up: only a global stage resolved as a shuffle uses it."""
        ray = self._ray()
        import ray.data

        logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset INFO lines
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        # The sort-based shuffle starts no aggregator actors: measured 6.9 s vs 8-16 s for the
        # hash shuffle on a small run with 2 CPUs; at scale both are bandwidth-bound.
        from ray.data.context import ShuffleStrategy

        ctx.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
        return ray

    def _concurrency(self, ray: Any, n_tasks: int, seg: Segment | None = None) -> int:
        wanted = self.config.executor.concurrency or int(ray.cluster_resources().get("CPU", 1))
        # A stage's resources.concurrency caps its pass (e.g. as many model copies as GPUs or memory allow).
        caps = [spec.concurrency for _, spec in (seg.task_specs() if seg else []) if spec.concurrency is not None]
        return max(1, min([wanted, n_tasks, *caps]))

    def _check_gpus(self, ray: Any, seg: Segment, num_gpus: float) -> None:
        """A pass that asks for GPUs on a fixed cluster with none would wait forever: say so."""
        have = float(ray.cluster_resources().get("GPU", 0.0))
        if num_gpus <= have:
            return
        names = ", ".join(f"stages[{i}] ({spec.stage})" for i, spec in seg.task_specs()
                          if spec.task_resources().get("num_gpus", 0.0) > have)
        msg = (f"{names}: each task asks for {num_gpus:g} GPU(s) but the Ray cluster has {have:g}; "
               f"set num_gpus: 0 (or resources: {{num_gpus: 0}}) to run on CPU, or use a cluster with GPUs")
        if self.config.executor.address is None:  # a local cluster never grows
            raise ConfigError(msg)
        log.warning("%s (waiting, in case the cluster autoscales)", msg)

    def run_tasks(self, plan: Plan, seg: Segment, tasks: list[int]) -> None:
        ray = self._ray()
        retries = self.config.executor.max_task_retries
        # The fault-injection variables (empty unless a test enabled injection) go to the shard tasks
        # here and nowhere else: a task's runtime_env reaches the workers of any cluster, also one
        # started before the test set them (a session's Ray) or one this process only connects to.
        fault_env = fault_injection_env()
        # A pass asks for the most any of its stages needs (a GPU for LM scoring, say).
        resources = seg.task_resources()
        self._check_gpus(ray, seg, resources.get("num_gpus", 0.0))
        # Retries cover worker crashes only; exceptions fail fast (retry_exceptions is False).
        opts = task_remote_args(resources, retries)
        if fault_env:
            opts["runtime_env"] = {"env_vars": fault_env}
        remote = ray.remote(**opts)(_shard_task)
        # Plain tasks rather than a Ray Data map: its resource budget ran one shard task at a time
        # on a 2-CPU machine, and each pass paid for starting a streaming executor.
        plan_ref = ray.put(plan)  # once per pass, not pickled again with every task
        order = iter(largest_first(plan, tasks))
        in_flight: dict[Any, int] = {}

        def submit() -> None:
            t = next(order, None)
            if t is not None:
                in_flight[remote.remote(plan_ref, seg.index, t)] = t

        for _ in range(self._concurrency(ray, len(tasks), seg)):
            submit()
        try:
            while in_flight:
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in done:
                    del in_flight[ref]
                    stats = ray.get(ref)
                    submit()  # before the bookkeeping, so the worker is not left idle meanwhile
                    self.progress(stats)
        except Exception as exc:
            for ref in in_flight:  # fail fast: the run stops at the first failed task
                ray.cancel(ref)
            cause: BaseException = exc
            if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, BaseException):
                cause = exc.cause
            raise ShardError(f"pass {seg.index} failed: {cause}") from exc

    def run_global(self, plan: Plan, seg: Segment, stage: GlobalStage, stage_index: int) -> None:
        works = [plan.layout.work(seg.index, t.index) for t in plan.tasks]
        size_mb = sum(w.stat().st_size for w in works) / 1e6
        if size_mb < self.config.executor.global_in_driver_mb:
            log.info("global stage %s: %.1f MB of keys, resolved in the driver", stage.name, size_mb)
            resolve_in_process(plan, seg, stage, stage_index)
            return
        ray = self._ray_data()
        fs = arrow_source(works[0])[1]  # every work file lives in the same run directory
        files = [arrow_source(w)[0] for w in works]
        ds = ray.data.read_parquet(files, filesystem=fs).select_columns(key_read_columns(stage))
        # Few shuffle partitions: Ray's default (hundreds) costs seconds of overhead on small runs.
        partitions = max(1, min(stage.num_buckets, 2 * int(ray.cluster_resources().get("CPU", 1))))
        result = stage.run_global(RayFrame(ds, stage.num_buckets, partitions))
        schema = stage.result_schema
        out = result.ds.map_batches(_cast, fn_kwargs={"schema": schema}, batch_format="pyarrow", batch_size=None)
        final = plan.layout.dups_dir(stage_index)
        # Locally the folder appears by one rename; an object store has no folder rename, and
        # needs none: the global marker written after this is the commit point either way.
        tmp = final if is_remote(final) else final.with_name(final.name + ".partial")
        remove_tree(tmp)
        path, fs = arrow_source(tmp)
        out.write_parquet(path, partition_cols=["_task"], filesystem=fs)
        if tmp != final and tmp.exists():
            tmp.rename(final)

    def close(self) -> None:
        if self._owns_ray:
            import ray

            ray.shutdown()
            self._owns_ray = False
