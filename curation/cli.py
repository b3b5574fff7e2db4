"""``curate``: run pipelines, print stats, query runs with SQL.

    curate run pipelines/quickstart.yaml                 # local Ray, in process
    curate run pipelines/quickstart.yaml --ray-address auto -o output.dir=/data/run1
    curate stats runs/quickstart
    curate query runs/quickstart "SELECT reason, count(*) FROM decisions GROUP BY 1"
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from curation.errors import CurationError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Curate LLM pretraining data on Ray.")
console = Console()


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(2)


@app.command()
def run(
    config: str = typer.Argument(..., help="Pipeline YAML (pipelines/*.yaml)."),
    override: list[str] = typer.Option([], "--set", "-o", help="Dotted override KEY=VALUE, repeatable."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Run on this Ray cluster."),
    executor: Optional[str] = typer.Option(None, "--executor", help="ray (default) or local."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an existing run dir first."),
) -> None:
    """Run a pipeline; a finished run is a no-op, a crashed one resumes."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from curation.executors import make_executor
    from curation.pipeline import load_pipeline

    overrides = list(override)
    if ray_address:
        overrides.append(f"executor.address={ray_address}")
    if executor:
        overrides.append(f"executor.kind={executor}")
    try:
        cfg = load_pipeline(config, overrides)
    except CurationError as exc:
        _fail(exc)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console)
    state: dict[str, Any] = {}

    def on_task(stats: dict[str, Any]) -> None:
        key = stats["seg"]
        if key not in state:
            state[key] = {"docs": 0, "t0": time.time(),
                          "bar": progress.add_task(f"pass {key}", total=state.get("n_tasks"), rate="")}
        st = state[key]
        st["docs"] += stats["docs_read"] if key == 0 else sum(s["in"] for s in stats["stages"][:1])
        rate = st["docs"] / max(time.time() - st["t0"], 1e-6)
        progress.update(st["bar"], advance=1, rate=f"{rate:,.0f} docs/s")

    ex = make_executor(cfg, overwrite=overwrite, progress=on_task)
    try:
        from curation.executors.plan import expand_inputs

        state["n_tasks"] = len(expand_inputs(cfg.input.paths))
        with progress:
            result = ex.run()
    except CurationError as exc:
        _fail(exc)
    finally:
        ex.close()
    if result.nothing_to_do:
        console.print(f"[green]nothing to do:[/] {result.root} is complete")
    else:
        console.print(f"[green]done[/] in {result.manifest['wall_seconds']:.1f} s: {result.root}")
    _print_stats(str(result.root))


def _print_stats(run_dir: str) -> None:
    from curation.stats import summary

    s = summary(run_dir)
    t = s["totals"]
    console.print(f"input: {t['input_files']} files, {t['input_bytes'] / 1e6:.2f} MB, {t['lines']} lines, "
                  f"{t['quarantined']} quarantined, {t['blank_lines']} blank; output: {t['docs_out']} docs "
                  f"in {s['shards']} shards")
    funnel = Table(title="Funnel (documents per stage)")
    for col in ("stage", "in", "out", "dropped", "kept %"):
        funnel.add_column(col, justify="left" if col == "stage" else "right")
    for name, n_in, n_out, dropped in s["funnel"]:
        funnel.add_row(name, str(n_in), str(n_out), str(dropped), f"{100 * n_out / n_in:.1f}" if n_in else "-")
    console.print(funnel)
    reasons = Table(title="Drop reasons")
    for col in ("stage", "reason", "docs", "chars"):
        reasons.add_column(col)
    for row in s["reasons"]:
        reasons.add_row(*map(str, row))
    console.print(reasons)
    domains = Table(title=f"Kept documents per domain (tokens: {s['token_counter']})")
    for col in ("domain", "docs", "chars", "mean chars", "tokens"):
        domains.add_column(col)
    for d, n, c, m, tok in s["domains"]:
        domains.add_row(d, str(n), str(c), str(int(m)), str(tok))
    console.print(domains)
    if s["quarantine"]:
        q = Table(title="Quarantined input lines")
        for col in ("file", "lines", "first error"):
            q.add_column(col)
        for row in s["quarantine"]:
            q.add_row(*map(str, row))
        console.print(q)


@app.command()
def stats(run_dir: str = typer.Argument(..., help="A run directory."),
          as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables.")) -> None:
    """Print the funnel, drop reasons and per-domain sizes of a finished run."""
    try:
        if as_json:
            from curation.stats import summary

            print(json.dumps(summary(run_dir), default=str, indent=1))
        else:
            _print_stats(run_dir)
    except CurationError as exc:
        _fail(exc)


@app.command()
def query(run_dir: str = typer.Argument(..., help="A run directory."),
          sql: str = typer.Argument(..., help="One SELECT over docs, decisions, quarantine, shards, stages."),
          limit: int = typer.Option(50, help="Print at most this many rows."),
          fmt: str = typer.Option("table", "--format", help="table, csv or json.")) -> None:
    """Run a read-only SQL query over a run (DuckDB; files outside the run are refused)."""
    from curation.stats import query as run_query

    try:
        cols, rows = run_query(run_dir, sql, limit=limit)
    except CurationError as exc:
        _fail(exc)
    if fmt == "json":
        print(json.dumps([dict(zip(cols, r)) for r in rows], default=str))
    elif fmt == "csv":
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(cols)
        w.writerows(rows)
    else:
        t = Table()
        for c in cols:
            t.add_column(c)
        for r in rows:
            t.add_row(*("" if v is None else str(v)[:200] for v in r))
        console.print(t)


@app.command("stages")
def list_stages() -> None:
    """List the registered stage names."""
    from curation.registry import stage_names

    for name in stage_names():
        print(name)


if __name__ == "__main__":
    app()
