"""Train fastText quality scorers: PreSelect labels (predictive strength) or reference-vs-random.

The same ``normalise`` runs at training and at inference (``fasttext_score_v1``): every line
break becomes a space, nothing else changes (PreSelect's training script). Datatrove's filter
uses a different replacement by default, which silently shifts scores (docs/methods.md,
PreSelect: labels and classifier).
"""

from __future__ import annotations

import hashlib

import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curation.io.atomic import write_json

POSITIVE = "__label__1"
NEGATIVE = "__label__0"


def normalise(text: str) -> str:
    """fastText input for a document: one line (CR/LF -> space)."""
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")


@dataclass(kw_only=True)
class FastTextSettings:
    """PreSelect's settings (train_fasttext.py): epoch 3, lr 0.1, wordNgrams 2; the rest fastText's
    defaults. ``bucket`` (hash buckets of word n-grams) sets the model size: 2M x dim x 4 bytes."""

    epoch: int = 3
    lr: float = 0.1
    wordNgrams: int = 2  # noqa: N815 (fastText's own name)
    dim: int = 100
    minCount: int = 1  # noqa: N815
    loss: str = "softmax"
    bucket: int = 2_000_000
    minn: int = 0
    maxn: int = 0
    ws: int = 5
    thread: int = 1  # fixed thread count: fastText training is only reproducible single-threaded
    seed: int = 0


def preselect_labels(ids: Sequence[str], strength: np.ndarray, positive_min: float = 1.0,
                     max_per_class: int | None = None) -> tuple[list[int], list[int]]:
    """Indices of positives (S >= positive_min) and of as many lowest-S negatives (ties by id).
    Classes are balanced as in the paper: when fewer negatives than positives exist, positives
    are cut to match. The cut keeps a pseudo-random subset (ordered by a hash of the id, so the
    same labels give the same subset): ids often start with their source (``changelog:...``), and
    the first ids in sort order would make the positive class one source, which a classifier then
    learns instead of S. Documents with a null S are never used. Both lists come back in id order."""
    s = np.asarray(strength, dtype=np.float64)
    valid = ~np.isnan(s)
    pos = [i for i in np.flatnonzero(valid & (s >= positive_min))]
    pos.sort(key=lambda i: (hashlib.blake2b(ids[i].encode(), digest_size=8).digest(), ids[i]))
    if max_per_class is not None:
        pos = pos[:max_per_class]
    rest = [i for i in np.flatnonzero(valid & (s < positive_min))]
    rest.sort(key=lambda i: (s[i], ids[i]))
    n = min(len(pos), len(rest))
    return sorted((int(i) for i in pos[:n]), key=lambda i: ids[i]), [int(i) for i in rest[:n]]


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum formula (ties get average ranks)."""
    n_pos, n_neg = int(labels.sum()), int((1 - labels).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i: j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def positive_probability(model: Any, texts: Sequence[str]) -> np.ndarray:
    """P(__label__1) for each text, through fastText's batch predict (labels come sorted by
    probability, so the positive one is first or second)."""
    if not texts:
        return np.zeros(0, dtype=np.float64)
    labels, probs = model.predict([normalise(t) for t in texts], k=-1)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 2 and probs.shape[1] == 2:
        first = np.fromiter((ls[0] == POSITIVE for ls in labels), dtype=bool, count=len(texts))
        return np.clip(np.where(first, probs[:, 0], probs[:, 1]), 0.0, 1.0)
    out = np.array([next((float(p) for lab, p in zip(ls, ps) if lab == POSITIVE), 0.0) for ls, ps in zip(labels, probs)])
    return np.clip(out, 0.0, 1.0)


def train_classifier(out_dir: Path, positives: Sequence[str], negatives: Sequence[str], settings: FastTextSettings,
                     data: dict[str, Any], valid_fraction: float = 0.1,
                     valid_set: tuple[Sequence[str], Sequence[str]] | None = None) -> dict[str, Any]:
    """Train on a seeded split, evaluate on the held-out part, write ``model.bin`` and ``card.json``.
    With ``valid_set`` (positives, negatives), train on every document given and evaluate on those instead
    (``valid_fraction`` is then unused)."""
    import fasttext

    if not positives or not negatives:
        raise ValueError(f"need positives and negatives, got {len(positives)} and {len(negatives)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(settings.seed)
    rows = [(POSITIVE, t) for t in positives] + [(NEGATIVE, t) for t in negatives]
    order = rng.permutation(len(rows))
    if valid_set is not None:
        valid_fraction = 0.0
        valid = [(POSITIVE, t) for t in valid_set[0]] + [(NEGATIVE, t) for t in valid_set[1]]
        train = [rows[i] for i in order]
        n_valid = len(valid)
    else:
        n_valid = max(2, int(round(len(rows) * valid_fraction))) if valid_fraction > 0 else 0
        valid = [rows[i] for i in order[:n_valid]]
        train = [rows[i] for i in order[n_valid:]]
    n_pos = sum(1 for label, _ in train if label == POSITIVE)
    if n_pos == 0 or n_pos == len(train):
        # fastText would fail with "Empty vocabulary" or train a one-class model that scores
        # everything alike; say what is short instead
        raise ValueError(f"the training split has {n_pos} positives and {len(train) - n_pos} negatives after "
                         f"holding out {n_valid} of {len(rows)} documents for validation; it needs both classes "
                         f"(label more documents, or lower --valid-fraction)")
    train_file = out_dir / "train.txt"
    with open(train_file, "w", encoding="utf-8") as fh:
        for label, text in train:
            fh.write(f"{label} {normalise(text)}\n")
    t0 = time.time()
    model = fasttext.train_supervised(input=str(train_file), verbose=0, **asdict(settings))
    seconds = time.time() - t0
    tmp = out_dir / "model.bin.tmp"
    model.save_model(str(tmp))
    os.replace(tmp, out_dir / "model.bin")
    train_file.unlink()
    metrics: dict[str, Any] = {"train_docs": len(train), "valid_docs": len(valid), "train_seconds": round(seconds, 3)}
    if valid:
        y = np.array([1 if lab == POSITIVE else 0 for lab, _ in valid])
        p = positive_probability(model, [t for _, t in valid])
        metrics.update(valid_accuracy=float(((p >= 0.5) == (y == 1)).mean()), valid_auc=_auc(y, p),
                       valid_positives=int(y.sum()))
    card = {
        "model": "model.bin",
        "labels": {"positive": POSITIVE, "negative": NEGATIVE},
        "normalisation": "line breaks (\\r\\n, \\n, \\r) replaced by one space; nothing else",
        "data": {**data, "positives": len(positives), "negatives": len(negatives), "valid_fraction": valid_fraction},
        "settings": asdict(settings),
        "metrics": metrics,
        "fasttext": _fasttext_version(),
        "python": platform.python_version(),
        "created_unix": round(time.time(), 3),
    }
    write_json(out_dir / "card.json", card)
    return card


def _fasttext_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("fasttext-numpy2-wheel", "fasttext", "fasttext-wheel"):
        try:
            return f"{dist}=={version(dist)}"
        except PackageNotFoundError:
            continue
    return "unknown"
