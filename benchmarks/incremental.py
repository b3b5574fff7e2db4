""".venv/bin/python benchmarks/incremental.py --sizes 20000,100000 --work /tmp/incremental-bench
.venv/bin/python benchmarks/incremental.py --sizes 100000,1000000 --new 10000 --skip-full --reuse-base  # memory vs corpus size

Incremental curation (``against``): N existing + N/10 new documents of the pipeline_scale corpus
(``benchmarks/_synthetic.py``: ~2.2 kB per document, 10% exact and 10% near copies of earlier
documents, so the new tenth holds copies of the existing documents as well as of its own). Per size:

1. ``base``: a run over the N existing documents (it writes its dedup index);
2. ``incremental``: a run over the N/10 new documents ``against`` the base run;
3. ``full``: one run over all N + N/10 documents, the rerun incremental curation avoids.

The pipeline is ``text_length_v1`` + ``exact_dedup_v1`` + ``near_dedup_v1`` (``keep: first``, so that
a cluster spanning both snapshots keeps its existing document in the full run too). Checked: the
kept sets of base + incremental and of full are identical, or each difference is named (a new
document that links two existing clusters: a full run merges them, a finished run is never
rewritten; see docs/methods.md). Measured per run, each in its own process with the in-process
executor: CPU-seconds (``getrusage``, self and children), wall seconds, peak RSS, and for the
incremental run the peak RSS while its global steps (the joins with the index) ran and the bytes
of index files they read; for the base run the index's size on disk by kind, per million indexed
(kept) documents, and the time the index cost (key computation in the final pass plus writing).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks._synthetic import make_corpus  # noqa: E402

DOCS_PER_FILE = 5000


def pipeline(inputs: list[str], out: Path, against: list[str], executor: str = "local") -> dict[str, Any]:
    dedup = {"against": against} if against else {}
    return {
        "name": "incremental",
        "input": {"paths": inputs, "batch_size": 1000},
        "stages": [
            {"stage": "text_length_v1", "min_chars": 200},
            {"stage": "exact_dedup_v1", **dedup},
            # The audit is off: re-crawled copies are the point of this corpus, not a broken source.
            {"stage": "near_dedup_v1", "threshold": 0.8, "keep": "first", "max_source_removal_fraction": None,
             **dedup},
        ],
        "output": {"dir": str(out), "token_counter": "whitespace", "keep_rejected_text": False},
        # On Ray every global step is a Ray Data shuffle, so the joins with the index run in Ray workers.
        "executor": {"kind": "local"} if executor == "local" else {"kind": "ray", "num_cpus": 2,
                                                                    "global_in_driver_mb": 0},
    }


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(cfg_path: Path) -> dict[str, Any]:
    """One run in this process; prints its figures as JSON."""
    from curation.executors import local as local_executor
    from curation.executors import make_executor
    from curation.executors import ray as ray_executor
    from curation.io.dedup_index import read_stats
    from curation.pipeline import PipelineConfig

    cfg = PipelineConfig.from_mapping(json.loads(cfg_path.read_text()))
    # The RSS of this process sampled every 20 ms while a global step runs (in process: the joins).
    state = {"in_global": False, "global_peak": 0.0, "before_global": 0.0, "stop": False}

    def sample() -> None:
        while not state["stop"]:
            if state["in_global"]:
                state["global_peak"] = max(state["global_peak"], _rss_mb())
            time.sleep(0.02)

    original_global = local_executor.resolve_in_process

    def timed_global(*args: Any) -> None:
        state["before_global"] = max(state["before_global"], _rss_mb())
        state["in_global"] = True
        try:
            original_global(*args)
        finally:
            state["in_global"] = False

    # Both executors resolve a global step in process through this function (Ray: when its keys are small).
    local_executor.resolve_in_process = timed_global  # type: ignore[assignment]
    ray_executor.resolve_in_process = timed_global  # type: ignore[assignment]
    threading.Thread(target=sample, daemon=True).start()
    tracker = None
    if cfg.executor.kind == "ray":  # Ray's workers and daemons are this process's descendants
        from benchmarks.pipeline_scale import CpuTracker

        tracker = CpuTracker()
    t0, c0 = time.time(), time.process_time()
    ex = make_executor(cfg)
    try:
        result = ex.run()
    finally:
        ex.close()
    state["stop"] = True
    wall = time.time() - t0
    ru_self, ru_kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ru_self.ru_utime + ru_self.ru_stime + ru_kids.ru_utime + ru_kids.ru_stime
    if tracker is not None:
        cpu = tracker.stop()
    run = result.root
    markers = sorted((run / "_markers").glob("seg*/*.json"))
    index_key_s = sum(json.loads(m.read_text()).get("index_seconds", 0.0) for m in markers)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "run_cpu_s": round(time.process_time() - c0, 2),
            "peak_rss_mb": round(ru_self.ru_maxrss / 1024, 1),
            "global_peak_rss_mb": round(state["global_peak"], 1), "rss_before_global_mb": round(state["before_global"], 1),
            "index_read_bytes": read_stats["bytes"], "docs_read": result.manifest["totals"]["docs_read"],
            "docs_out": result.manifest["totals"]["docs_out"], "dedup_index": result.manifest.get("dedup_index"),
            "index_key_s": round(index_key_s, 2), "corpus": result.manifest.get("corpus")}


def run_child(cfg: dict[str, Any], work: Path, name: str) -> dict[str, Any]:
    path = work / f"{name}.json"
    path.write_text(json.dumps(cfg))
    out = subprocess.run([sys.executable, __file__, "--child", str(path)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def kept_ids(run: Path) -> set[str]:
    import pyarrow.parquet as pq

    return {i for f in sorted((run / "shards").glob("*.parquet")) for i in pq.read_table(f, columns=["id"]).column("id").to_pylist()}


def new_data_accuracy(runs: list[Path], corpus: Path, n: int, new: int) -> dict[str, Any]:
    """Duplicate removal among the new documents (``d{n}`` .. ``d{n+new-1}``) against the generator's ground truth,
    over those that reached dedup, from the decisions of ``runs``. ``cross``: copies of an existing document
    (what only a run that sees the corpus can remove); ``within``: copies of another new document."""
    import pyarrow.parquet as pq

    from benchmarks._synthetic import read_truth

    truth = read_truth(corpus)
    fresh = {f"d{i}" for i in range(n, n + new)}
    dec = [d for r in runs for d in pq.read_table(r / "decisions", columns=["id", "stage"]).to_pylist()
           if d["id"] in fresh]
    before = {d["id"] for d in dec if d["stage"] in ("input", "text_length_v1")}
    removed = {d["id"] for d in dec if d["stage"] in ("exact_dedup_v1", "near_dedup_v1")}
    copies = {d for d in fresh - before if truth[d][1] is not None}
    cross = {d for d in copies if int(truth[d][1][1:]) < n}
    return {"new_reached_dedup": len(fresh - before), "copies": len(copies), "cross_copies": len(cross),
            "removed": len(removed), "precision": round(len(removed & copies) / len(removed), 4) if removed else None,
            "recall": round(len(removed & copies) / len(copies), 4) if copies else None,
            "cross_recall": round(len(removed & cross) / len(cross), 4) if cross else None}


def one_size(n: int, work: Path, executor: str = "local", new: int | None = None, skip_full: bool = False,
             reuse_base: bool = False) -> dict[str, Any]:
    """One size: ``n`` existing documents and ``new`` (default n/10, at most that) new ones, the documents
    that follow the existing ones in the same generated stream (so the corpus of a size serves any ``new``)."""
    new = n // 10 if new is None else new
    if n % DOCS_PER_FILE or new % DOCS_PER_FILE or not 0 < new <= n // 10:
        raise SystemExit(f"--sizes and --new must be multiples of {DOCS_PER_FILE}, with new <= size / 10")
    corpus = work / f"corpus-{n}"
    if not (corpus / "truth.jsonl").exists():
        make_corpus(n + n // 10, corpus, seed=0, docs_per_file=DOCS_PER_FILE)
    files = sorted(str(p) for p in corpus.glob("part-*.jsonl"))
    existing, fresh = files[: n // DOCS_PER_FILE], files[n // DOCS_PER_FILE:(n + new) // DOCS_PER_FILE]
    tag = "" if new == n // 10 else f"-new{new}"
    runs = {"base": work / f"run-{n}-{executor}-base", "incremental": work / f"run-{n}-{executor}-incremental{tag}",
            "full": work / f"run-{n}-{executor}-full{tag}"}
    # a base run is reused only when it finished (its manifest is written last) and --reuse-base asks for it
    keep_base = reuse_base and (runs["base"] / "manifest.json").exists() and (work / f"{n}-base.result.json").exists()
    for k, r in runs.items():
        if r.exists() and not (k == "base" and keep_base):
            import shutil

            shutil.rmtree(r)
    res = {"existing_docs": n, "new_docs": new,
           "existing_mb": round(sum(Path(f).stat().st_size for f in existing) / 1e6, 1),
           "new_mb": round(sum(Path(f).stat().st_size for f in fresh) / 1e6, 1)}
    base_result = work / f"{n}-base.result.json"
    if keep_base:
        res["base"] = {**json.loads(base_result.read_text()), "reused": True}
    else:
        res["base"] = run_child(pipeline(existing, runs["base"], [], executor), work, f"{n}-base")
        base_result.write_text(json.dumps(res["base"]))
    res["incremental"] = run_child(pipeline(fresh, runs["incremental"], [str(runs["base"])], executor), work,
                                   f"{n}-incremental{tag}")
    ix = res["base"]["dedup_index"]
    res["index_mb_per_million_docs"] = {k: round(v / ix["docs"], 1) for k, v in
                                        {**ix["bytes_by_kind"], "total": ix["bytes"]}.items()}
    if skip_full:
        return res
    res["full"] = run_child(pipeline(existing + fresh, runs["full"], [], executor), work, f"{n}-full{tag}")
    both = kept_ids(runs["base"]) | kept_ids(runs["incremental"])
    full = kept_ids(runs["full"])
    res["kept_incremental"], res["kept_full"] = len(both), len(full)
    res["identical_kept_sets"] = both == full
    res["only_incremental"], res["only_full"] = sorted(both - full)[:20], sorted(full - both)[:20]
    # the same new documents judged by the incremental run and by the full run, against the generator's truth
    res["accuracy_new"] = {"incremental": new_data_accuracy([runs["incremental"]], corpus, n, new),
                           "full": new_data_accuracy([runs["full"]], corpus, n, new)}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20000,100000", help="existing documents per size (multiples of 5000)")
    ap.add_argument("--work", default="/tmp/incremental-bench")
    ap.add_argument("--executor", default="local", choices=["local", "ray"])
    ap.add_argument("--new", type=int, default=None, help="new documents per size (default: a tenth of it)")
    ap.add_argument("--skip-full", action="store_true", help="no full rerun (a memory comparison across sizes)")
    ap.add_argument("--reuse-base", action="store_true", help="reuse a finished base run of the same size in --work")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(Path(a.child))))
        return
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    for n in (int(s) for s in a.sizes.split(",")):
        r = one_size(n, work, a.executor, a.new, a.skip_full, a.reuse_base)
        b, i, f = r["base"], r["incremental"], r.get("full")
        print(f"\n== {n:,} existing ({r['existing_mb']} MB) + {r['new_docs']:,} new ({r['new_mb']} MB), {a.executor}"
              + (" (base run reused)" if b.get("reused") else ""))
        print(f"{'run':12} {'docs read':>10} {'kept':>8} {'wall s':>8} {'CPU s':>8} {'run CPU s':>9} {'peak MB':>8} "
              f"{'global peak MB':>14} {'RSS before MB':>13} {'index read MB':>13}")
        local = a.executor == "local"  # under Ray the driver's figures are not the run's: shown as -
        for name, x in (("base", b), ("incremental", i), ("full", f)):
            if x is None:
                continue
            run_cpu, peak, before = ((x["run_cpu_s"], x["global_peak_rss_mb"], x["rss_before_global_mb"]) if local
                                     else ("-", "-", "-"))
            read = f"{x['index_read_bytes'] / 1e6:.1f}" if local else "-"
            print(f"{name:12} {x['docs_read']:>10,} {x['docs_out']:>8,} {x['wall_s']:>8} {x['cpu_s']:>8} "
                  f"{run_cpu:>9} {x['peak_rss_mb']:>8} {peak:>14} {before:>13} {read:>13}")
        if f is not None:
            alone = f", of the run alone {i['run_cpu_s'] / f['run_cpu_s']:.3f}" if local else ""
            print(f"incremental / full rerun: CPU-s {i['cpu_s'] / f['cpu_s']:.3f}{alone}; base + incremental "
                  f"{(b['cpu_s'] + i['cpu_s']) / f['cpu_s']:.2f} of full")
            print(f"kept: base + incremental {r['kept_incremental']:,}, full {r['kept_full']:,}; identical sets: "
                  f"{r['identical_kept_sets']}; only incremental {r['only_incremental']}, only full {r['only_full']}")
            for name, acc in r["accuracy_new"].items():
                print(f"new documents judged by the {name} run: {acc}")
        if local:
            print(f"the joins added {i['global_peak_rss_mb'] - i['rss_before_global_mb']:.1f} MB of RSS "
                  f"(global-step peak {i['global_peak_rss_mb']} MB over {i['rss_before_global_mb']} MB before)")
        ix = b["dedup_index"]
        print(f"base index: {ix['docs']:,} docs, {len(ix['files'])} files ({ix['buckets']} buckets per kind), "
              f"{ix['bytes'] / 1e6:.1f} MB; MB per million indexed docs {r['index_mb_per_million_docs']}; "
              f"key computation in the final pass {b['index_key_s']} s + writing {ix['seconds']} s")
        print(f"removed by the base run's documents: {i['corpus']}")
        tag = "" if a.new is None else f"-new{a.new}"
        (work / f"result-{n}-{a.executor}{tag}.json").write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
