"""Skills from embedding k-means: spherical k-means (k-means++ init) over sentence embeddings of a
sample of documents, saved as a centroids JSON that ``skill_tag_v1`` (``source: embedding``) reads.

    curate fit-skills 'data/*.jsonl.zst' --k 8 --out runs/skills/centroids.json

The JSON holds ``centroids`` (k unit vectors), ``names`` (``cluster_00``...; edit them to name the
skills, repeat a name to merge clusters), the model, seed, sample size, inertia, cluster sizes and,
per cluster, the sampled documents nearest its centroid.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np

from curation.errors import ConfigError
from curation.io.inputs import expand_inputs
from curation.io.atomic import atomic_open
from curation.io.readers import InputConfig, read_documents
from curation.scoring.embed import BUNDLED, Embedder

FORMAT = "skill_centroids_v1"


@dataclass
class KMeansResult:
    """``centroids`` (k, dim) unit rows; ``labels`` per point; ``inertia`` = sum of 1 - cosine."""

    centroids: np.ndarray
    labels: np.ndarray
    inertia: float
    iterations: int


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeds for unit rows: each next seed drawn with probability proportional to its
    squared distance to the nearest seed so far (2 - 2 cos); uniformly once all distances are 0."""
    idx = [int(rng.integers(len(x)))]
    d2 = np.maximum(2.0 - 2.0 * (x @ x[idx[0]]), 0.0)
    for _ in range(1, k):
        total = d2.sum()
        if total > 0:
            nxt = int(rng.choice(len(x), p=d2 / total))
        else:
            nxt = int(rng.choice(np.setdiff1d(np.arange(len(x)), idx)))
        idx.append(nxt)
        d2 = np.minimum(d2, np.maximum(2.0 - 2.0 * (x @ x[nxt]), 0.0))
    return x[idx].copy()


def spherical_kmeans(x: np.ndarray, k: int, seed: int = 0, n_init: int = 4, max_iter: int = 100) -> KMeansResult:
    """Cosine k-means of unit rows ``x``: the best (lowest inertia) of ``n_init`` seeded runs.

    Lloyd steps assign each point to its most similar centroid and set each centroid to the
    normalised mean of its points; an emptied cluster takes the point least similar to its own
    centroid. Deterministic for a seed (ties go to the lower cluster index).
    """
    x = _unit(np.asarray(x, dtype=np.float64))
    if not 1 <= k <= len(x):
        raise ValueError(f"k must be in [1, {len(x)}] (the number of points), got {k}")
    best: KMeansResult | None = None
    for rng in (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n_init)):
        c = kmeans_pp(x, k, rng)
        labels = np.full(len(x), -1)
        it = 0
        for it in range(1, max_iter + 1):
            sims = x @ c.T
            new = sims.argmax(1)
            for j in np.setdiff1d(np.arange(k), new):  # empty cluster: take the worst-fitting point
                own = sims[np.arange(len(x)), new]
                counts = np.bincount(new, minlength=k)
                own[counts[new] <= 1] = np.inf  # never empty another cluster
                new[int(own.argmin())] = j
            if np.array_equal(new, labels):
                break
            labels = new
            c = _unit(np.stack([x[labels == j].sum(0) for j in range(k)]))
        inertia = float((1.0 - (x @ c.T)[np.arange(len(x)), labels]).sum())
        if best is None or inertia < best.inertia:
            best = KMeansResult(centroids=c, labels=labels, inertia=inertia, iterations=it)
    assert best is not None
    return best


def sample_documents(patterns: list[str], sample: int, seed: int = 0,
                     text_field: str = "text") -> tuple[list[str], list[str]]:
    """(ids, texts) of a seeded uniform sample of at most ``sample`` non-blank documents from
    JSONL/Parquet files or globs, in input order (reservoir sampling: memory is O(sample))."""
    cfg = InputConfig(paths=patterns, text_field=text_field)
    rng = np.random.default_rng(seed)
    keep: list[tuple[int, str, str]] = []
    seen = 0
    for task in expand_inputs(patterns):
        for rb in read_documents(task.path, task.source, cfg):
            for doc_id, text in zip(rb.table.column("id").to_pylist(), rb.table.column("text").to_pylist()):
                if not text or not text.strip():
                    continue
                if len(keep) < sample:
                    keep.append((seen, doc_id, text))
                else:
                    j = int(rng.integers(seen + 1))
                    if j < sample:
                        keep[j] = (seen, doc_id, text)
                seen += 1
    keep.sort()
    return [d for _, d, _ in keep], [t for _, _, t in keep]


def fit_skills(patterns: list[str], out: str | Path, k: int, sample: int = 5000, seed: int = 0,
               model: str = BUNDLED, batch_size: int = 64, max_tokens: int | None = None, text_field: str = "text",
               examples: int = 5, n_init: int = 4) -> dict[str, Any]:
    """Embed a document sample, cluster it and write the centroids JSON to ``out``; returns it."""
    if sample < 1:
        raise ValueError("sample must be >= 1")
    ids, texts = sample_documents(patterns, sample, seed, text_field)
    if len(texts) < k:
        raise ConfigError(f"{len(texts)} non-blank documents in {patterns}: fewer than k={k}")
    emb = Embedder(model=model, batch_size=batch_size, max_tokens=max_tokens)
    x = emb.embed(texts)
    res = spherical_kmeans(x, k, seed=seed, n_init=n_init)
    sims = x.astype(np.float64) @ res.centroids.T
    names = [f"cluster_{j:02d}" for j in range(k)]
    clusters = []
    for j in range(k):
        members = np.flatnonzero(res.labels == j)
        near = members[np.argsort(-sims[members, j], kind="stable")][:examples]
        clusters.append({"name": names[j], "size": len(members), "examples": [
            {"id": ids[i], "cosine": round(float(sims[i, j]), 4), "text": re.sub(r"\s+", " ", texts[i])[:200]}
            for i in near]})
    data = {"format": FORMAT, "names": names, "sizes": [c["size"] for c in clusters], "k": k, "model": model,
            "dim": int(x.shape[1]), "max_tokens": emb.max_tokens, "seed": seed, "sample": sample,
            "n_docs": len(texts), "inputs": patterns, "inertia": round(res.inertia, 6), "iterations": res.iterations,
            "clusters": clusters, "centroids": res.centroids.astype(np.float32).tolist()}
    with atomic_open(out) as fh:
        fh.write(_dumps(data).encode())
    return data


def _dumps(data: dict[str, Any]) -> str:
    """Indented JSON, ``names`` near the top for editing, one centroid per line (8 significant
    digits: float32 round-trips) at the end."""
    head = json.dumps({k: v for k, v in data.items() if k != "centroids"}, indent=2, ensure_ascii=False)
    rows = ",\n    ".join("[" + ", ".join(f"{v:.8g}" for v in row) + "]" for row in data["centroids"])
    return head[:-2] + ',\n  "centroids": [\n    ' + rows + "\n  ]\n}\n"


@dataclass
class SkillCentroids:
    """A centroids JSON as ``skill_tag_v1`` uses it: one name per centroid, unit rows."""

    names: list[str]
    centroids: np.ndarray
    model: str
    max_tokens: int | None = None

    @classmethod
    def load(cls, path: str) -> "SkillCentroids":
        """Read and check ``path`` (local or fsspec URL); errors name the file."""
        try:
            with fsspec.open(path, "rt") as fh:
                data = json.load(fh)
        except FileNotFoundError as exc:
            raise ConfigError(f"centroids file {path} does not exist (make one with `curate fit-skills`)") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"centroids file {path}: invalid JSON: {exc}") from exc
        try:
            c = np.asarray(data["centroids"], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"centroids file {path}: 'centroids' must be a list of equal-length number lists") \
                from exc
        if c.ndim != 2 or len(c) == 0 or not np.isfinite(c).all() or (np.linalg.norm(c, axis=1) == 0).any():
            raise ConfigError(f"centroids file {path}: 'centroids' must be a non-empty list of non-zero vectors")
        names = data.get("names") or [f"cluster_{j:02d}" for j in range(len(c))]
        if len(names) != len(c) or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"centroids file {path}: 'names' must be {len(c)} non-empty strings, one per centroid")
        return cls(names=list(names), centroids=_unit(c), model=str(data.get("model") or BUNDLED),
                   max_tokens=data.get("max_tokens"))
