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
    #: (positives, negatives) to measure the scorer on instead of a share of the training documents
    valid: tuple[list[str], list[str]] | None = None


def parse_part(spec: str | None, option: str = "--part", min_parts: int = 1) -> tuple[int, int] | None:
    """``"K/N"`` -> (K, N) with 0 <= K < N and N >= ``min_parts``: the K-th of N disjoint parts of the labelled
    documents; errors name ``option``."""
    if spec is None:
        return None
    try:
        k, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise CurationError(f"{option} {spec!r}: give K/N, e.g. 0/3") from None
    if not 0 <= k < n:
        raise CurationError(f"{option} {spec!r}: K must be in [0, N)")
    if n < min_parts:
        raise CurationError(f"{option} {spec!r}: N must be at least {min_parts}")
    return k, n


def in_part(ids: list[str], part: tuple[int, int]) -> np.ndarray:
    """Whether each id falls in part K of N: a hash of the id alone, so the parts are disjoint, cover
    every document, and do not depend on the run's order or sharding."""
    from curation.stages.scoring.random_score import id_uniform

    k, n = part
    return np.floor(id_uniform(ids, seed=-1) * n).astype(np.int64) == k


def _class_cap(max_per_class: int | None, max_class_share: float | None, n_scored: int) -> int | None:
    caps = [c for c in (max_per_class, None if max_class_share is None else int(max_class_share * n_scored))
            if c is not None]
    return min(caps) if caps else None


def preselect_set(run: str, positive_min: float = 1.0, max_per_class: int | None = None,
                  part: tuple[int, int] | None = None, holdout: bool = False,
                  max_class_share: float | None = None) -> TrainingSet:
    """PreSelect labels from a run whose documents carry ``predictive_strength``: S >= positive_min
    is positive, as many lowest-S documents are negative (``preselect_labels``). With ``part``
    (K, N), only the documents of the K-th of N disjoint id-hash parts are used: N scorers trained on
    the N parts have no labelled document in common. With ``holdout`` too, the scorer trains on every
    part but K and is measured on part K's labels (cross-fitting: N scorers, each measured on labels it
    never saw, each trained on (N-1)/N of them). ``max_class_share`` caps each class at that share of the
    scored documents the labels are drawn from: with many documents at S = 1, the lowest-S negatives
    otherwise reach up to S values next to 1, and the classes differ by less than a scorer can learn."""
    if max_class_share is not None and not 0.0 < max_class_share <= 0.5:
        raise CurationError(f"--max-class-share {max_class_share}: give a share in (0, 0.5]")
    if holdout and part is None:
        raise CurationError("a held-out part needs K/N")
    docs = run_documents(run, ["id", "text", "predictive_strength"])
    s_all = np.array([np.nan if v is None else v for v in docs["predictive_strength"]], dtype=np.float64)
    inside = np.ones(len(s_all), dtype=bool) if part is None else in_part(docs["id"], part)

    def labels(mask: np.ndarray) -> tuple[list[str], list[str], int]:
        s = np.where(mask, s_all, np.nan)
        n = int((~np.isnan(s)).sum())
        cap = _class_cap(max_per_class, max_class_share, n)
        if cap == 0:
            raise CurationError(f"a class cap of 0 documents ({n} scored documents; --max-class-share "
                                f"{max_class_share}, --max-per-class {max_per_class}): raise the cap or label more")
        pos, neg = preselect_labels(docs["id"], s, positive_min, cap)
        return [docs["text"][i] for i in pos], [docs["text"][i] for i in neg], n

    data: dict[str, Any] = {"method": "preselect", "run": str(Path(run).resolve()), "positive_min": positive_min,
                            **({"max_class_share": max_class_share} if max_class_share is not None else {})}
    if holdout:
        assert part is not None
        pos, neg, n = labels(~inside)
        vpos, vneg, vn = labels(inside)
        if not vpos or not vneg:
            raise CurationError(f"part {part[0]}/{part[1]} has {len(vpos)} positives and {len(vneg)} negatives: "
                                f"nothing to measure the scorer on (fewer parts, or more labelled documents)")
        data.update(scored_docs=n, holdout_part=f"{part[0]}/{part[1]}", holdout_scored_docs=vn)
        return TrainingSet(pos, neg, data, valid=(vpos, vneg))
    pos, neg, n = labels(inside)
    data.update(scored_docs=n, **({"part": f"{part[0]}/{part[1]}"} if part else {}))
    return TrainingSet(pos, neg, data)


def reference_set(positive: list[str], negative: list[str], max_per_class: int | None = None,
                  seed: int = 0) -> TrainingSet:
    """Reference corpus as positives, a seeded random sample of as many pool documents as negatives."""
    positives = file_texts(positive, limit=max_per_class, seed=seed)
    negatives = file_texts(negative, limit=max_per_class if max_per_class else len(positives), seed=seed)
    return TrainingSet(positives, negatives, {"method": "reference_vs_random", "positive": positive,
                                              "negative": negative})


def training_set(run: str | None, positive: list[str], negative: list[str], positive_min: float = 1.0,
                 max_per_class: int | None = None, seed: int = 0, part: str | None = None,
                 holdout_part: str | None = None, max_class_share: float | None = None) -> TrainingSet:
    """The set ``curate train-scorer`` trains on: PreSelect (``run``) or reference-vs-random."""
    if run and (positive or negative):
        raise CurationError("give either --run (PreSelect) or --positive/--negative, not both")
    if part is not None and holdout_part is not None:
        raise CurationError("give --part (train on part K) or --holdout-part (train on every other part), not both")
    if (part is not None or holdout_part is not None or max_class_share is not None) and not run:
        raise CurationError("--part, --holdout-part and --max-class-share shape PreSelect labels: use them with --run")
    if run:
        if holdout_part is not None:
            return preselect_set(run, positive_min, max_per_class, parse_part(holdout_part, "--holdout-part", 2), True,
                                 max_class_share)
        return preselect_set(run, positive_min, max_per_class, parse_part(part), False, max_class_share)
    if positive and negative:
        return reference_set(positive, negative, max_per_class, seed)
    raise CurationError("give --run RUN, or both --positive and --negative")
