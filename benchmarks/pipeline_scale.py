"""Full-pipeline scale benchmark: the quickstart's stages + fastText scoring + select, at 10k/100k/1M docs.

    .venv/bin/python benchmarks/pipeline_scale.py --sizes 10000,100000 --executors local,ray --plan 0.01
    .venv/bin/python benchmarks/pipeline_scale.py --sizes 1000000 --executors ray --num-cpus 16

The corpus is ``benchmarks/_synthetic.py`` (seeded; ~2.2 kB per document, so 1M docs is ~2.2 GB, with
~10% exact and ~10% near duplicates of known origin). Each (size, executor) runs in its own
subprocess and reports: wall time, MB/s per core, per-stage time share (from the task markers'
``stage_seconds`` and the global markers), the seconds before the first task starts (``startup_s``:
``ray.init`` and worker start-up under Ray) and in ``close`` (``close_s``), the CPU-seconds all its
processes used (``process_cpu_s``: the run's process and every process it started while it ran, Ray's
daemons and workers included, polled every second so that workers replaced mid-run still count) and
the tasks' own (``task_cpu_s``, from the markers), the driver's and the largest Ray worker's peak RSS,
object-store spill, and duplicate removal scored against the
ground truth. With ``--plan RATE`` ``curate plan``'s prediction from a RATE sample is printed next
to each measured run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from benchmarks._synthetic import make_corpus, read_truth  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEDUP_STAGES = ("exact_dedup_v1", "near_dedup_v1")


def pipeline(corpus: Path, scorer: Path, out: Path, executor: str, num_cpus: int,
             global_in_driver_mb: float | None = None) -> dict[str, Any]:
    """The quickstart's stage list, then fastText scoring and a top-half select."""
    return {
        "name": "pipeline_scale",
        "input": {"paths": [str(corpus / "part-*.jsonl")], "batch_size": 500},
        "stages": [
            {"stage": "text_length_v1", "min_chars": 200},
            {"stage": "language_id_v1", "languages": ["en"], "min_score": 0.65},
            {"stage": "exact_dedup_v1"},
            {"stage": "near_dedup_v1", "threshold": 0.8},
            {"stage": "gopher_repetition_v1"},
            {"stage": "gopher_quality_v1"},
            {"stage": "c4_quality_v1"},
            {"stage": "fineweb_quality_v1"},
            {"stage": "fasttext_score_v1", "models": [{"name": "prose", "path": str(scorer)}]},
            {"stage": "select_v1", "column": "score_prose", "top_fraction": 0.5},
        ],
        "output": {"dir": str(out), "target_shard_bytes": 64_000_000, "token_counter": "whitespace"},
        "executor": {"kind": executor, "num_cpus": num_cpus,
                     **({} if global_in_driver_mb is None else {"global_in_driver_mb": global_in_driver_mb})},
    }


def train_scorer(out: Path) -> Path:
    import gzip

    from curation.scoring.classifier import FastTextSettings, train_classifier

    recs = []
    for f in sorted((REPO / "curation" / "data" / "sample").glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            recs += [json.loads(line) for line in fh]
    pos = [r["text"] for r in recs if r["domain"] == "python_docs"]
    neg = [r["text"] for r in recs if r["domain"] == "license"]
    train_classifier(out, pos, neg, FastTextSettings(epoch=25, lr=0.5, bucket=200_000), {"method": "bench"}, 0.0)
    return out


def _vm_hwm_mb(pid: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def ray_worker_peak_mb() -> float:
    """Largest peak RSS (VmHWM) among this machine's live Ray worker processes (``ray::...``)."""
    best = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read(64)
        except OSError:
            continue
        if cmd.startswith(b"ray::"):
            best = max(best, _vm_hwm_mb(pid))
    return best


def ray_spilled_mb() -> float | None:
    try:
        from ray._private.internal_api import memory_summary

        text = memory_summary(stats_only=True)
    except Exception:  # noqa: BLE001 - a Ray without this API: report no figure
        return None
    m = re.search(r"Spilled ([\d.]+) MiB", text)
    return float(m.group(1)) if m else 0.0


def _proc_table() -> dict[int, tuple[int, int, float]]:
    """pid -> (parent pid, start time in ticks, own CPU-seconds: utime + stime) of every process."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(pid)] = (int(fields[1]), int(fields[19]), (int(fields[11]) + int(fields[12])) / tick)
    return out


class CpuTracker:
    """CPU-seconds of this process and every descendant seen while the run goes (Ray's daemons and
    workers: the local cluster's processes descend from the driver).

    Polled every ``interval`` s, each process counted with its own last-seen CPU, never its reaped
    children's: Ray replaces workers during a run (the shuffle's), and a worker that has exited is
    gone from a single look at the end. Reading the tree once after a 1M run gave 666 CPU-s against
    731 CPU-s inside the tasks alone. A process that lives less than one interval can be missed."""

    def __init__(self, interval: float = 1.0) -> None:
        import threading

        self.seen: dict[tuple[int, int], float] = {}  # (pid, start ticks): a reused pid is another process
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval,), daemon=True)
        self.poll()
        self._thread.start()

    def poll(self) -> None:
        table = _proc_table()
        mine, frontier = {os.getpid()}, [os.getpid()]
        while frontier:
            kids = [p for p, (pp, _, _) in table.items() if pp in frontier and p not in mine]
            mine.update(kids)
            frontier = kids
        for pid in mine:
            if pid in table:
                _, start, cpu = table[pid]
                self.seen[(pid, start)] = max(cpu, self.seen.get((pid, start), 0.0))

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.poll()

    def stop(self) -> float:
        """Stop polling; the CPU-seconds of every process seen, after one last look."""
        self._stop.set()
        self._thread.join()
        self.poll()
        return sum(self.seen.values())


def child(cfg_path: Path) -> dict[str, Any]:
    """Run one pipeline in this process; return the figures the table needs."""
    from curation.executors import make_executor
    from curation.pipeline import PipelineConfig

    cfg = PipelineConfig.from_mapping(json.loads(cfg_path.read_text()))
    ex = make_executor(cfg, overwrite=True)
    t0 = time.time()
    worker_mb = spill = None
    cpu = CpuTracker()
    try:
        result = ex.run()
        run_s = time.time() - t0
        used = cpu.stop()  # before close: Ray's processes are gone after it
        if cfg.executor.kind == "ray":
            worker_mb, spill = ray_worker_peak_mb(), ray_spilled_mb()
    finally:
        t_close = time.time()
        ex.close()
    # The run and its close, without the time the figures above took to collect (Ray's memory
    # summary alone takes a second or more).
    wall = run_s + time.time() - t_close
    first = min(json.loads(f.read_text())["started_unix"] for f in (result.root / "_markers").glob("seg0/*.json"))
    return {"wall_s": round(wall, 2), "startup_s": round(first - t0, 2), "close_s": round(time.time() - t_close, 2),
            "process_cpu_s": round(used, 1),
            "driver_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "worker_peak_mb": None if worker_mb is None else round(worker_mb, 1), "spilled_mb": spill,
            "root": str(result.root)}


def stage_shares(run: Path, names: list[str]) -> tuple[dict[str, float], float]:
    """Seconds per stage over all tasks and global steps; 'read/write/other' is the rest of task time.
    Returns (shares, total CPU-seconds of tasks and global steps)."""
    secs: dict[str, float] = {}
    task_total = 0.0
    for f in (run / "_markers").rglob("*.json"):
        m = json.loads(f.read_text())
        if f.name.startswith("global-stage"):
            secs[m["stage"]] = secs.get(m["stage"], 0.0) + float(m["seconds"])
            continue
        task_total += float(m["seconds"])
        for idx, v in (m.get("stage_seconds") or {}).items():
            secs[names[int(idx)]] = secs.get(names[int(idx)], 0.0) + float(v)
    staged = sum(v for k, v in secs.items())
    global_s = sum(float(json.loads(f.read_text())["seconds"]) for f in (run / "_markers").glob("global-*.json"))
    secs["read/write/other"] = max(task_total - (staged - global_s), 0.0)
    total = task_total + global_s
    return {k: round(v / total, 4) for k, v in sorted(secs.items(), key=lambda kv: -kv[1])}, total


def dedup_accuracy(run: Path, corpus: Path) -> dict[str, Any]:
    """Duplicate removal against the generator's ground truth, over documents that reached dedup."""
    import pyarrow.parquet as pq

    truth = read_truth(corpus)
    dec = pq.read_table(run / "decisions", columns=["id", "stage"]).to_pylist()
    before = {d["id"] for d in dec if d["stage"] in ("input", "text_length_v1", "language_id_v1")}
    removed = {d["id"] for d in dec if d["stage"] in DEDUP_STAGES}
    clusters: dict[str, list[str]] = {}
    for doc, (_, of) in truth.items():
        if doc not in before:
            clusters.setdefault(of or doc, []).append(doc)
    removable = sum(len(c) - 1 for c in clusters.values() if len(c) > 1)
    in_cluster = {d for c in clusters.values() if len(c) > 1 for d in c}
    true_removed = len(removed & in_cluster)
    by_kind = {k: 0 for k in ("exact", "near")}
    for doc in removed:
        kind = truth[doc][0]
        if kind in by_kind:
            by_kind[kind] += 1
    return {"reached_dedup": len(truth) - len(before), "removable": removable, "removed": len(removed),
            "precision": round(true_removed / len(removed), 4) if removed else None,
            "recall": round(min(true_removed, removable) / removable, 4) if removable else None,
            "removed_exact_copies": by_kind["exact"], "removed_near_copies": by_kind["near"]}


def run_one(size: int, executor: str, corpus: Path, scorer: Path, work: Path, num_cpus: int,
            global_in_driver_mb: float | None = None) -> dict[str, Any]:
    out = work / f"run-{size}-{executor}"
    cfg = pipeline(corpus, scorer, out, executor, num_cpus, global_in_driver_mb)
    cfg_path = work / f"cfg-{size}-{executor}.json"
    cfg_path.write_text(json.dumps(cfg))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, __file__, "--child", str(cfg_path)], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"{executor} run at {size} failed:\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    manifest = json.loads((out / "manifest.json").read_text())
    names = [s["stage"] for s in cfg["stages"]]
    shares, cpu_s = stage_shares(out, names)
    mb = manifest["totals"]["input_bytes"] / 1e6
    cores = 1 if executor == "local" else num_cpus
    markers = [json.loads(f.read_text()) for f in (out / "_markers").glob("seg*/*.json")]
    task_cpu = sum(float(m.get("cpu_seconds", 0.0)) for m in markers)
    return {"size": size, "executor": executor, "input_mb": round(mb, 1), **res, "cpu_s": round(cpu_s, 2),
            "mb_per_s_per_core": round(mb / res["wall_s"] / cores, 3),
            "task_cpu_s": round(task_cpu, 1), "mb_per_cpu_s": round(mb / res["process_cpu_s"], 3),
            "docs_out": manifest["totals"]["docs_out"],
            "stage_share": shares, "dedup": dedup_accuracy(out, corpus)}


def predict(size: int, executor: str, corpus: Path, scorer: Path, work: Path, num_cpus: int, rate: float,
            global_in_driver_mb: float | None = None) -> dict[str, Any]:
    from curation.pipeline import PipelineConfig
    from curation.planner import Cluster, extrapolate, measure

    cfg = PipelineConfig.from_mapping(pipeline(corpus, scorer, work / "unused", executor, num_cpus,
                                               global_in_driver_mb))
    t0 = time.time()
    m = measure(cfg, rate, work / f"plan-{size}-{executor}")
    pred = extrapolate(m, Cluster(cpus=num_cpus if executor == "ray" else 1))
    return {"plan_s": round(time.time() - t0, 1), "sample_docs": m.sample_docs, "rate": m.rate,
            "cpu_s": round(pred.cpu_hours * 3600, 1), "cpu_s_range": [round(x * 3600, 1) for x in pred.cpu_hours_range],
            "wall_s": round(pred.wall_seconds, 1), "wall_s_range": [round(x, 1) for x in pred.wall_seconds_range],
            "kept_docs": pred.kept_docs, "kept_docs_range": list(pred.kept_docs_range),
            "steps": pred.steps, "measurement": asdict(m)}  # to extrapolate again under another model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--executors", default="local,ray")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1, help="CPUs of the local Ray cluster")
    ap.add_argument("--plan", type=float, default=0.0, help="also predict each run from this sample rate")
    ap.add_argument("--work", default=None, help="folder for corpora and runs (default: a temp dir)")
    ap.add_argument("--global-in-driver-mb", type=float, default=None,
                    help="executor.global_in_driver_mb (0: every global step as a Ray shuffle)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child))))
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    scorer = train_scorer(work / "scorer") if not (work / "scorer" / "model.bin").exists() else work / "scorer"
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        corpus = work / f"corpus-{size}"
        if not (corpus / "truth.jsonl").exists():
            t0 = time.time()
            info = make_corpus(size, corpus, seed=0, docs_per_file=max(1000, size // 20))
            print(f"corpus {size}: {info['bytes'] / 1e6:.1f} MB in {info['files']} files ({time.time() - t0:.0f} s)",
                  flush=True)
        for executor in args.executors.split(","):
            res = run_one(size, executor, corpus, scorer, work, args.num_cpus, args.global_in_driver_mb)
            if args.plan:
                res["predicted"] = predict(size, executor, corpus, scorer, work, args.num_cpus, args.plan,
                                           args.global_in_driver_mb)
            results.append(res)
            print(json.dumps(res), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
