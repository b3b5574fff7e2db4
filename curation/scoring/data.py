"""Where scorer training data comes from: a finished run's documents, or input files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from curation.executors.plan import expand_inputs
from curation.io.readers import InputConfig, read_documents


def run_documents(run_dir: str | Path, columns: list[str]) -> dict[str, list]:
    """Columns of every kept document of a finished run (its ``docs`` view), in a stable order."""
    from curation.query_sandbox import Limits
    from curation.stats import _ident, open_run

    # Trusted internal read of the whole run: no time budget (the memory cap and spill cap still hold).
    with open_run(run_dir, Limits(timeout_s=None)) as (con, _):
        cols = ", ".join(_ident(c) for c in columns)
        rows = con.execute(f"SELECT {cols} FROM docs ORDER BY id").fetchall()
    return {c: [r[i] for r in rows] for i, c in enumerate(columns)}


def file_texts(patterns: list[str], text_field: str = "text", limit: int | None = None,
               seed: int = 0) -> list[str]:
    """Texts from JSONL/Parquet files or globs (bad lines are skipped, as the quarantine would);
    with ``limit``, a seeded random subset of that size (the 'random' side of reference-vs-random)."""
    cfg = InputConfig(paths=patterns, text_field=text_field, id_field=None)
    texts: list[str] = []
    for task in expand_inputs(patterns):
        for rb in read_documents(task.path, task.source, cfg):
            texts += [t for t in rb.table.column("text").to_pylist() if t and t.strip()]
    if limit is not None and len(texts) > limit:
        idx = np.sort(np.random.default_rng(seed).choice(len(texts), size=limit, replace=False))
        texts = [texts[i] for i in idx]
    return texts
