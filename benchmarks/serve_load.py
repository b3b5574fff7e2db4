"""python benchmarks/serve_load.py --run-dir runs/serve-load --clients 50 --duration 60

Load test of ``curate serve``: builds (or reuses) a run of >= 100k documents, starts the real server (uvicorn on
127.0.0.1, open access), and runs ``--clients`` concurrent clients (asyncio + httpx) for ``--duration`` seconds,
each looping over a weighted mix of page loads (``/``, ``/runs/ID``), API reads (run detail, runs list, drops,
mixture), SQL queries and what-if requests. By default a client sends its next request as soon as the last one
is answered (a stress model); ``--think-ms N`` makes each client pause N ms (drawn uniformly from 0.5N..1.5N)
between requests, as a person reading the page would (a user model). Prints p50/p95/max per kind, errors,
requests/s, the server's peak RSS (from /proc, the server and its children), the CPU seconds the server and
the clients used, and the machine's load average (at the start and end, and its range during the run: the
machine may be shared), and writes the same as JSON with ``--out``.

The run: the bundled sample corpus (1,265 documents) replicated ``--copies`` times with new ids, each copy's
text perturbed (the words of every line but the last word shuffled with a per-copy seed, so exact and
near-dedup keep most copies apart), run through pipelines/quickstart.yaml on the local executor. It is cached in
``--run-dir`` (reused when its manifest says it read the same number of documents).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "curation" / "data" / "sample"

#: (kind, weight): what one client request is, drawn with these weights.
MIX = [("page_index", 1), ("page_run", 2), ("api_run", 2), ("api_runs", 1), ("drops", 2), ("mixture", 1),
       ("sql", 3), ("whatif", 3)]
SQL = ["SELECT domain, count(*) AS n, sum(n_chars) AS chars FROM docs GROUP BY ALL ORDER BY n DESC",
       "SELECT stage, reason, count(*) FROM decisions GROUP BY ALL ORDER BY 3 DESC",
       "SELECT id, n_chars, lang_score FROM docs WHERE lang_score > 0.9 ORDER BY n_chars DESC LIMIT 50",
       "SELECT round(lang_score, 1) AS b, count(*) FROM docs GROUP BY ALL ORDER BY b"]


def _perturb(text: str, rng: random.Random) -> str:
    out = []
    for line in text.split("\n"):
        words = line.split(" ")
        if len(words) > 2:
            head = words[:-1]
            rng.shuffle(head)
            words = head + words[-1:]
        out.append(" ".join(words))
    return "\n".join(out)


def build_corpus(out: Path, copies: int) -> int:
    """The sample corpus ``copies`` times with new ids and perturbed text; returns the number of documents."""
    out.mkdir(parents=True, exist_ok=True)
    docs = []
    for f in sorted(SAMPLE.glob("*.jsonl.gz")):
        with gzip.open(f, "rt") as fh:
            docs += [json.loads(line) for line in fh if line.strip()]
    n = 0
    for k in range(copies):
        rng = random.Random(k)
        with gzip.open(out / f"copy-{k:04d}.jsonl.gz", "wt", compresslevel=1) as fh:
            for d in docs:
                rec = {**d, "id": f"{d['id']}#c{k}", "text": d["text"] if k == 0 else _perturb(d["text"], rng)}
                fh.write(json.dumps(rec) + "\n")
                n += 1
    return n


def build_run(run_dir: Path, copies: int) -> dict[str, Any]:
    """Build (or reuse) the run; returns its manifest."""
    manifest = run_dir / "manifest.json"
    want = copies * sum(1 for f in SAMPLE.glob("*.jsonl.gz") for _ in gzip.open(f, "rt"))
    if manifest.exists():
        m = json.loads(manifest.read_text())
        if m["totals"]["docs_read"] == want:
            print(f"reusing {run_dir} ({want:,} documents read)", flush=True)
            return m
        raise SystemExit(f"{run_dir} holds another run ({m['totals']['docs_read']:,} documents, want {want:,}): "
                         "pass another --run-dir")
    corpus = run_dir.parent / f"{run_dir.name}-corpus"
    t0 = time.time()
    n = build_corpus(corpus, copies)
    print(f"corpus: {n:,} documents in {time.time() - t0:.0f} s; running the quickstart pipeline", flush=True)
    t0 = time.time()
    cmd = [sys.executable, "-m", "curation.cli", "run", "pipelines/quickstart.yaml", "-o", "executor.kind=local",
           "-o", f"input.paths=[{corpus}/*.jsonl.gz]", "-o", f"output.dir={run_dir}"]
    subprocess.run(cmd, cwd=REPO, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    print(f"run built in {time.time() - t0:.0f} s", flush=True)
    return json.loads(manifest.read_text())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_tree(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants (from /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for t in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (t / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) ``pid`` has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """``curate serve`` over the run's parent folder, as a child process; samples its RSS."""

    def __init__(self, root: Path, state: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
        for k in ("CURATE_SERVE_READ_TOKENS", "CURATE_SERVE_SUBMIT_TOKENS"):
            env.pop(k, None)
        self.proc = subprocess.Popen([sys.executable, "-m", "curation.cli", "serve", "--runs-root", str(root),
                                      "--port", str(self.port), "--state-dir", str(state)], cwd=REPO, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.peak_rss, self._stop = 0, threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, _rss_tree(self.proc.pid))
            time.sleep(0.2)

    def wait_ready(self) -> None:
        import httpx

        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/api/runs", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise SystemExit(f"the server did not start: {self.proc.stderr.read().decode()[-2000:]}")

    def stop(self) -> None:
        self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def _client(url: str, run_id: str, deadline: float, seed: int, lat: dict[str, list[float]],
                  errors: dict[str, list[str]], columns: list[str], think_s: float = 0.0) -> None:
    import httpx

    rng = random.Random(seed)
    kinds, weights = zip(*MIX)
    async with httpx.AsyncClient(base_url=url, timeout=120) as c:
        if think_s:  # clients start spread over one pause, not all at once
            await asyncio.sleep(rng.uniform(0, think_s))
        while time.time() < deadline:
            kind = rng.choices(kinds, weights)[0]
            t0 = time.perf_counter()
            try:
                if kind == "page_index":
                    r = await c.get("/")
                elif kind == "page_run":
                    r = await c.get(f"/runs/{run_id}")
                elif kind == "api_run":
                    r = await c.get(f"/api/runs/{run_id}")
                elif kind == "api_runs":
                    r = await c.get("/api/runs")
                elif kind == "drops":
                    # One of the first 100 pages, as the UI links them (20 per page).
                    r = await c.get(f"/api/runs/{run_id}/drops",
                                    params={"offset": 20 * rng.randrange(0, 100), "limit": 20})
                elif kind == "mixture":
                    r = await c.get(f"/api/runs/{run_id}/mixture")
                elif kind == "sql":
                    r = await c.post(f"/api/runs/{run_id}/query", json={"sql": rng.choice(SQL), "limit": 100})
                else:
                    r = await c.post(f"/api/runs/{run_id}/whatif", json={
                        "column": rng.choice(columns), "threshold": round(rng.uniform(0.3, 0.95), 3),
                        "direction": "keep_above"})
                ok = r.status_code == 200
                detail = f"{r.status_code} {r.text[:200]}"
            except httpx.HTTPError as exc:
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            dt = time.perf_counter() - t0
            if time.time() <= deadline + 120:
                lat.setdefault(kind, []).append(dt)
                if not ok:
                    errors.setdefault(kind, []).append(detail)
            if think_s:
                await asyncio.sleep(think_s * rng.uniform(0.5, 1.5))


def _sample_load(out: list[float], done: threading.Event) -> None:
    """The 1-minute load average once a second until ``done`` (the machine may be shared: report it)."""
    while True:
        out.append(os.getloadavg()[0])
        if done.wait(1.0):
            return


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


async def load(url: str, run_id: str, clients: int, duration: float, columns: list[str],
               think_ms: float = 0.0) -> dict[str, Any]:
    lat: dict[str, list[float]] = {}
    errors: dict[str, list[str]] = {}
    t0 = time.time()
    await asyncio.gather(*(_client(url, run_id, t0 + duration, i, lat, errors, columns, think_ms / 1000)
                           for i in range(clients)))
    wall = time.time() - t0
    rows = {k: {"n": len(v), "p50_ms": 1000 * statistics.median(v), "p95_ms": 1000 * _pct(v, 0.95),
                "max_ms": 1000 * max(v), "errors": len(errors.get(k, []))} for k, v in sorted(lat.items())}
    total = sum(len(v) for v in lat.values())
    return {"clients": clients, "think_ms": think_ms, "duration_s": duration, "wall_s": wall, "requests": total,
            "requests_per_s": total / wall, "errors": sum(len(v) for v in errors.values()), "kinds": rows,
            "error_samples": {k: v[:3] for k, v in errors.items()},
            "all_p95_ms": 1000 * _pct([x for v in lat.values() for x in v], 0.95)}


def table(res: dict[str, Any]) -> str:
    lines = ["| kind | requests | p50 ms | p95 ms | max ms | errors |", "|---|---:|---:|---:|---:|---:|"]
    for k, r in res["kinds"].items():
        lines.append(f"| {k} | {r['n']:,} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['max_ms']:.0f} | "
                     f"{r['errors']} |")
    lines.append(f"| **all** | {res['requests']:,} | | {res['all_p95_ms']:.0f} | | {res['errors']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--run-dir", type=Path, default=REPO / "runs" / "serve-load")
    ap.add_argument("--copies", type=int, default=80, help="copies of the 1,265-document sample (80: 101,200)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--think-ms", type=float, default=0.0,
                    help="mean pause of each client between requests (0: none, the stress model)")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()
    if not 1 <= args.clients <= 500 or not 1 <= args.duration <= 600 or not 0 <= args.think_ms <= 60_000:
        raise SystemExit("--clients must be 1..500, --duration 1..600 s and --think-ms 0..60000")
    run_dir = args.run_dir.resolve()
    m = build_run(run_dir, args.copies)
    columns = [f["name"] for f in m["schema"] if f["name"] in ("lang_score",) or f["name"].startswith("score_")]
    server = Server(run_dir.parent, run_dir.parent / f".{run_dir.name}-serve-state")
    try:
        server.wait_ready()
        load_before, loads, done = os.getloadavg(), [], threading.Event()
        cpu_server, cpu_clients = _cpu_s(server.proc.pid), time.process_time()
        sampler = threading.Thread(target=_sample_load, args=(loads, done), daemon=True)
        sampler.start()
        res = asyncio.run(load(server.url, run_dir.name, args.clients, args.duration, columns, args.think_ms))
        cpu_server, cpu_clients = _cpu_s(server.proc.pid) - cpu_server, time.process_time() - cpu_clients
        done.set()
        sampler.join()
        load_after = os.getloadavg()
    finally:
        server.stop()
    res.update(loadavg_start=load_before, loadavg_end=load_after, loadavg_1min_min=min(loads),
               loadavg_1min_max=max(loads), cpu_s_server=cpu_server, cpu_s_clients=cpu_clients,
               peak_rss_bytes=server.peak_rss, run=str(run_dir), docs_read=m["totals"]["docs_read"],
               docs_kept=m["totals"]["docs_out"], decisions=sum(sum(s["dropped"].values()) for s in m["stages"]))
    print(table(res))
    print(f"{args.clients} clients, think {args.think_ms:g} ms; load average (1/5/15 min) at start "
          f"{'/'.join(f'{x:.1f}' for x in load_before)}, at end {'/'.join(f'{x:.1f}' for x in load_after)}; "
          f"1-min load average during the run {min(loads):.1f}-{max(loads):.1f} (the load test's own processes "
          "count in it)")
    print(f"CPU used during the load: server {cpu_server:.1f} s, clients {cpu_clients:.1f} s, of "
          f"{(os.cpu_count() or 1) * res['wall_s']:.0f} core-seconds on {os.cpu_count()} cores")
    print(f"{res['requests']:,} requests in {res['wall_s']:.1f} s = {res['requests_per_s']:.1f}/s; "
          f"{res['errors']} errors; server peak RSS {res['peak_rss_bytes'] / 2**20:.0f} MiB; run: "
          f"{res['docs_read']:,} documents read, {res['docs_kept']:,} kept, {res['decisions']:,} dropped")
    if res["error_samples"]:
        print("error samples:", json.dumps(res["error_samples"], indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
