"""``curate plan``: predict what a pipeline will keep and cost before running it on the full input.

1. **Sample** (``sample.py``). Every input line is read once; a line is kept when a hash of its document falls
   under the sample rate. The hash is *coordinated*: it is a keyed hash of the document's three
   smallest word 5-grams (smallest under a second hash, over its first 256 words), so exact
   duplicates always land in the sample together and near-duplicates (Jaccard J) together with
   probability about J³ (0.6 at J = 0.85), while unrelated pages that share a stock phrase do not
   (with the single smallest 5-gram they did, and a sample drew whole clusters of them).
   A plain per-line hash would keep both copies of a pair with probability rate², and a 1% sample
   would show almost none of the duplicates that dedup removes from the full input. Every document
   is still kept with probability ``rate``, and a per-file prefix would bias toward file heads.
2. **Measure** (``measurement.py``). The real pipeline runs on the sample with the in-process executor (a temp run
   directory); model setup is timed apart from the tasks (it is paid once per worker, not per
   byte); task markers give per-task seconds and per-stage seconds, global markers the seconds of
   each global step (dedup, select). The sample runs twice (once with a rephrasing stage, which
   would pay its backend again) and each task counts with the lesser of its two times.
3. **Extrapolate** (``cost.py``: ``extrapolate``, pure arithmetic):

   - map work (every shard pass): a fixed cost per task plus CPU-seconds that scale linearly
     with uncompressed input bytes: ``cpu_full = a x tasks_full + b x bytes_full``. A 1% sample
     of equal files gives tasks of about one size, from which a regression cannot tell ``a``
     from ``b`` (at 1M documents it put 40% of the tasks' time into ``a``). So the sample holds
     one small task by design, the *probe*: ``PROBE_DOCS`` of its documents moved into a file of
     their own. Probe and ordinary tasks are two sizes: ``b`` from their difference, ``a`` what
     the probe took beyond ``b`` times its bytes. (A one-document probe measured nothing: the
     document was often filtered out at once, so its later passes wrote no shard at all);
   - global steps: ``n log n`` in the documents reaching them
     (``sec_full = sec_sample x (N log N) / (n log n)``): they sort/shuffle keys; a stage whose
     work grows otherwise declares ``global_seconds_at(seconds, N)`` and scales its own parts
     (``semantic_dedup_v1``: k-means fit, assignment n x k, pairs n^2 / k);
   - kept documents scale with the input documents, tokens with the input bytes;
   - wall time on a cluster of C CPUs (``cpus x nodes``): each pass runs its T file tasks on
     ``P = min(C / cpus_per_task, T)`` workers, so it lasts ``max(cpu / P, largest task)`` plus
     model setup, plus a fixed overhead (Ray start, pass scheduling); a global step under
     ``executor.global_in_driver_mb`` of keys runs in the driver on one core, else shuffles on C
     at ``RAY_SHUFFLE_CPU_FACTOR`` times the CPU the same step takes in one process.
     GPU passes are bounded by ``gpus x nodes / gpus_per_task`` too.

Uncertainty: the kept fraction is a proportion over the sample's n documents: its 95% range is
``p +- 1.96 sqrt(p(1-p)/n)``. Time per byte varies with the documents a task holds: the range is a
bootstrap over the sample's tasks (resampled with replacement) of seconds per byte, never narrower
than ``TIME_NOISE_FLOOR`` either side (repeat runs of the same work on a shared machine differ by
about 15%, and a 1% sample's cost per byte differs from the full run's by up to 10-15% more).
"""

from __future__ import annotations

from curation.pipeline import PipelineConfig
from curation.planner.cost import (RAY_DATA_STEP_S, RAY_PASS_OVERHEAD_S, RAY_SHUFFLE_CPU_FACTOR, RAY_SHUFFLE_OP_S,
                                   RAY_START_S, TIME_NOISE_FLOOR, Cluster, Prediction, bootstrap_rel_range,
                                   budget_refusal, extrapolate, nlogn_factor, parse_cluster, proportion_range,
                                   task_cost_model)
from curation.planner.measurement import (SAMPLE_REPEATS, GlobalMeasure, IndexJoin, Measurement, PassMeasure,
                                          least_time, measure)
from curation.planner.sample import (KEY_SHINGLES, KEY_WORDS, MIN_SAMPLE_DOCS, PROBE_DOCS, SHINGLE, FileSample,
                                     doc_key, draw, merge_small, parse_rate, sample_file, split_probe)

__all__ = [
    "KEY_SHINGLES", "KEY_WORDS", "MIN_SAMPLE_DOCS", "PROBE_DOCS", "RAY_DATA_STEP_S", "RAY_PASS_OVERHEAD_S",
    "RAY_SHUFFLE_CPU_FACTOR", "RAY_SHUFFLE_OP_S", "RAY_START_S", "SAMPLE_REPEATS", "SHINGLE", "TIME_NOISE_FLOOR",
    "Cluster", "FileSample", "GlobalMeasure", "IndexJoin", "Measurement", "PassMeasure", "Prediction",
    "bootstrap_rel_range", "budget_refusal", "doc_key", "draw", "extrapolate", "least_time", "measure",
    "merge_small", "nlogn_factor", "parse_cluster", "parse_rate", "predict", "proportion_range", "sample_file",
    "split_probe", "task_cost_model",
]


def predict(config: PipelineConfig, rate: float, cluster: Cluster) -> Prediction:
    """Measure a ``rate`` sample of ``config``'s inputs and predict the full run on ``cluster``."""
    return extrapolate(measure(config, rate), cluster)
