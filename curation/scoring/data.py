"""Where scorer training data comes from: a finished run's documents, or input files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curation.errors import CurationError
from curation.io.inputs import expand_inputs
from curation.io.readers import InputConfig, read_documents
from curation.scoring.classifier import preselect_labels


def run_documents(run_dir: str | Path, columns: list[str]) -> dict[str, list]:
    """Columns of every kept document of a finished run (its ``docs`` view), in a stable order: by
    id, then text. Ids need not be unique (two methods of one name in a module), and DuckDB returns
    ties in whatever order its threads finished: the scorer trained on them then changed from run
    to run (same labels, a different fastText model and selection)."""
    from curation.query_sandbox import Limits
    from curation.stats import _ident, open_run

    # Trusted internal read of the whole run: no time budget (the memory cap and spill cap still hold).
    with open_run(run_dir, Limits(timeout_s=None)) as (con, _):
        cols = ", ".join(_ident(c) for c in columns)
        rows = con.execute(f"SELECT {cols} FROM docs ORDER BY id, text").fetchall()
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


@dataclass
class TrainingSet:
    """Texts a scorer is trained on, and how they were chosen (recorded in the model card)."""

    positives: list[str]
    negatives: list[str]
    data: dict[str, Any]


def parse_part(spec: str | None) -> tuple[int, int] | None:
    """``"K/N"`` -> (K, N) with 0 <= K < N: the K-th of N disjoint parts of the labelled documents."""
    if spec is None:
        return None
    try:
        k, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise CurationError(f"--part {spec!r}: give K/N, e.g. 0/3") from None
    if not 0 <= k < n:
        raise CurationError(f"--part {spec!r}: K must be in [0, N)")
    return k, n


def in_part(ids: list[str], part: tuple[int, int]) -> np.ndarray:
    """Whether each id falls in part K of N: a hash of the id alone, so the parts are disjoint, cover
    every document, and do not depend on the run's order or sharding."""
    from curation.stages.scoring.random_score import id_uniform

    k, n = part
    return np.floor(id_uniform(ids, seed=-1) * n).astype(np.int64) == k


def preselect_set(run: str, positive_min: float = 1.0, max_per_class: int | None = None,
                  part: tuple[int, int] | None = None) -> TrainingSet:
    """PreSelect labels from a run whose documents carry ``predictive_strength``: S >= positive_min
    is positive, as many lowest-S documents are negative (``preselect_labels``). With ``part``
    (K, N), only the documents of the K-th of N disjoint id-hash parts are used: N scorers trained on
    the N parts have no labelled document in common."""
    docs = run_documents(run, ["id", "text", "predictive_strength"])
    s = np.array([np.nan if v is None else v for v in docs["predictive_strength"]], dtype=np.float64)
    if part is not None:
        s = np.where(in_part(docs["id"], part), s, np.nan)
    pos, neg = preselect_labels(docs["id"], s, positive_min, max_per_class)
    data = {"method": "preselect", "run": str(Path(run).resolve()), "positive_min": positive_min,
            "scored_docs": int((~np.isnan(s)).sum()), **({"part": f"{part[0]}/{part[1]}"} if part else {})}
    return TrainingSet([docs["text"][i] for i in pos], [docs["text"][i] for i in neg], data)


def reference_set(positive: list[str], negative: list[str], max_per_class: int | None = None,
                  seed: int = 0) -> TrainingSet:
    """Reference corpus as positives, a seeded random sample of as many pool documents as negatives."""
    positives = file_texts(positive, limit=max_per_class, seed=seed)
    negatives = file_texts(negative, limit=max_per_class if max_per_class else len(positives), seed=seed)
    return TrainingSet(positives, negatives, {"method": "reference_vs_random", "positive": positive,
                                              "negative": negative})


def training_set(run: str | None, positive: list[str], negative: list[str], positive_min: float = 1.0,
                 max_per_class: int | None = None, seed: int = 0, part: str | None = None) -> TrainingSet:
    """The set ``curate train-scorer`` trains on: PreSelect (``run``) or reference-vs-random."""
    if run and (positive or negative):
        raise CurationError("give either --run (PreSelect) or --positive/--negative, not both")
    if part is not None and not run:
        raise CurationError("--part splits PreSelect labels: use it with --run")
    if run:
        return preselect_set(run, positive_min, max_per_class, parse_part(part))
    if positive and negative:
        return reference_set(positive, negative, max_per_class, seed)
    raise CurationError("give --run RUN, or both --positive and --negative")
