"""Step 3 of ``curate plan``: the cost model, pure arithmetic from a ``Measurement`` to a ``Prediction``.

The model (fixed cost per task plus seconds per byte, n log n global steps, wall time on a cluster, the
95% ranges) is described in the package docstring (``curation/planner/__init__.py``).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from curation.errors import ConfigError

if TYPE_CHECKING:
    from curation.planner.measurement import Measurement

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
#: Least relative half-width of a time range (see the package docstring).
TIME_NOISE_FLOOR = 0.25


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
    """Scale the sample's measurements to the full input on ``cluster`` (model: the package docstring)."""
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


def budget_refusal(pred: Prediction, budget_cpu_hours: float) -> str | None:
    """The one-line refusal when the predicted CPU-hours exceed the budget, else None."""
    if pred.cpu_hours <= budget_cpu_hours:
        return None
    lo, hi = pred.cpu_hours_range
    return (f"refused: predicted {pred.cpu_hours:.3g} CPU-hours (95% range {lo:.3g}-{hi:.3g}) exceeds "
            f"--budget-cpu-hours {budget_cpu_hours:g}; nothing was run")
