"""Mixtures of an export's prefixes: weights, Megatron's blend string, and Megatron's blending order.

* **Natural** weights are each domain's token count (end-of-document ids included): every token once.
* **From a file** (``--weights FILE``): the ``ratios`` mapping of a YAML/JSON file, domain -> token share, the
  format the training loader's ``ratios_file`` reads (``training.data.loader.read_ratios_file``). A domain the
  export lacks is refused; a domain the file leaves out (or gives 0) is not in the blend.
* The **blend string** is ``w1 prefix1 w2 prefix2 ...`` for Megatron's ``--data-path`` (prefixes relative to the
  export directory). Megatron samples have one length, so token shares are sample shares.
* ``blending_indices`` is Megatron-Core's ``build_blending_indices`` (``helpers.cpp``) in Python, same float64
  arithmetic: sample ``i`` goes to the prefix with the largest ``w_p * max(i, 1) - c_p`` (first on ties), where
  ``c_p`` counts the samples it got so far. ``megatron_normalize`` is ``megatron.core.datasets.utils.normalize``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from curation.export.source import ExportError


def natural_weights(domains: dict[str, dict[str, int]]) -> dict[str, float]:
    return {d: float(v["tokens"]) for d, v in sorted(domains.items())}


def file_weights(path: str, domains: list[str]) -> dict[str, float]:
    """The ratios of ``path`` over ``domains`` (ExportError naming the file for a bad file or unknown domain)."""
    from training.data.loader import read_ratios_file

    if not Path(path).is_file():
        raise ExportError(f"weights file {path}: no such file")
    try:
        ratios = read_ratios_file(path)
    except ValueError as exc:
        raise ExportError(str(exc)) from exc
    unknown = sorted(set(ratios) - set(domains))
    if unknown:
        raise ExportError(f"weights file {path}: domains {unknown} are not in the run (it has {sorted(domains)})")
    kept = {d: w for d, w in sorted(ratios.items()) if w > 0}
    return kept


def mixture(domains: dict[str, dict[str, int]], weights_file: str | None) -> dict[str, Any]:
    """The export's mixture record: kind, source file, and weights normalized to sum 1 (sorted by domain)."""
    raw = natural_weights(domains) if weights_file is None else file_weights(weights_file, list(domains))
    total = sum(raw.values())
    if total <= 0:
        raise ExportError("the mixture has no positive weight")
    return {"kind": "natural" if weights_file is None else "file",
            "file": None if weights_file is None else str(Path(weights_file).resolve()),
            "weights": {d: w / total for d, w in raw.items()}}


def blend_string(weights: dict[str, float], prefixes: dict[str, str]) -> str:
    """``w1 prefix1 w2 prefix2 ...`` (weights with 17 significant digits: they parse back to the same floats)."""
    return " ".join(f"{w:.17g} {prefixes[d]}" for d, w in weights.items())


def parse_blend(blend: str) -> list[tuple[float, str]]:
    """``[(weight, prefix), ...]`` of a blend string, or a single prefix (weight 1)."""
    parts = blend.split()
    if len(parts) == 1:
        return [(1.0, parts[0])]
    if len(parts) % 2:
        raise ExportError(f"blend {blend!r}: expected 'w1 prefix1 w2 prefix2 ...' or one prefix")
    try:
        out = [(float(parts[i]), parts[i + 1]) for i in range(0, len(parts), 2)]
    except ValueError as exc:
        raise ExportError(f"blend {blend!r}: {exc}") from exc
    if any(w < 0 for w, _ in out) or sum(w for w, _ in out) <= 0:
        raise ExportError(f"blend {blend!r}: weights must be non-negative with a positive sum")
    return out


def megatron_normalize(weights: list[float]) -> list[float]:
    w = np.array(weights, dtype=np.float64)
    return (w / np.sum(w)).tolist()


def blending_indices(weights: list[float], start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """For global samples ``start..stop-1``: the dataset each comes from and its sample index in that dataset.

    ``weights`` must be normalized (``megatron_normalize``). The order depends on every earlier sample, so this
    walks from 0: about 0.3 s per million samples with 3 prefixes, 0.5 s with 8 (CPython 3.11, 2-core machine)."""
    n = len(weights)
    counts = [0] * n
    w = [float(x) for x in weights]
    out_d = np.zeros(stop - start, dtype=np.int16)
    out_s = np.zeros(stop - start, dtype=np.int64)
    for i in range(stop):
        s = float(max(i, 1))
        best, best_err = 0, w[0] * s - counts[0]
        for d in range(1, n):
            err = w[d] * s - counts[d]
            if err > best_err:
                best, best_err = d, err
        if i >= start:
            out_d[i - start], out_s[i - start] = best, counts[best]
        counts[best] += 1
    return out_d, out_s
