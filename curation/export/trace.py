"""``trace``: the documents a training step read from an export, under the reference sampler below; ``sources``:
what the source run's tables say about them.

**The reference sampler** (what ``curate trace`` assumes; ``docs/export.md``). ``L`` is ``--seq-len``.

1. *Stream.* A prefix (domain) is its documents in index order, each as its token ids then one end-of-document
   id. For megatron this is the prefix's ``.bin`` itself; for mds and jsonl, a consumer that reads the domain in
   order (``StreamingDataset(shuffle=False)``, the JSON lines in file order) and appends the EOD id.
2. *Samples.* Sample ``k`` of a prefix is tokens ``[k*L, k*L + L + 1)``: ``L + 1`` tokens (inputs and shifted
   targets), consecutive samples sharing one token, as Megatron's GPTDataset and the training loader cut them.
   A prefix of ``T`` tokens has ``n = (T - 1) // L`` samples; the tail short of a sample is never read. After
   ``n`` the prefix starts over in the same order: its ``c``-th draw reads sample ``c % n`` (epoch ``c // n``).
3. *Blend.* Global sample ``i`` is the ``c``-th draw from the prefix Megatron's ``build_blending_indices`` picks
   for ``i`` from the normalized weights (``curation.export.blend``). With ``--prefix`` one prefix is read alone.
4. *Step.* Step ``N`` (0-based) with global batch ``B`` reads global samples ``N*B .. N*B + B - 1``, all
   data-parallel ranks together.

This is not the order Megatron's own ``GPTDataset`` reads (it shuffles documents and samples with its seed);
the trace answers for a trainer that reads the export in the order above.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curation.export.blend import blending_indices, megatron_normalize, parse_blend
from curation.export.index import read_index
from curation.export.layout import EXPORT_MANIFEST, ExportLayout
from curation.export.source import ExportError
from curation.io.manifest import RunManifest, safe_shard_path
from curation.io.regular import read_text

#: Kept-document columns reported as scores (written by scoring stages, language ID and dedup).
_SCORE_PREFIXES = ("score_", "nll_", "bpc_", "predictive_")
_SCORE_NAMES = ("lang", "lang_score", "dup_cluster_size")


@dataclass
class TracedDoc:
    """One document (part) inside a sample."""

    doc: int  # ordinal in its domain (index ``doc``)
    id: str
    tokens: int  # how many of the sample's tokens are this document's (its EOD included)
    token_start: int  # the document's range in the domain's stream
    token_end: int
    shard: str  # source Parquet shard (relative to the run) and row
    row: int
    run: str  # source run fingerprint


@dataclass
class TracedSample:
    sample: int  # global sample index
    domain: str
    prefix: str
    draw: int  # the how-many-th draw from this prefix (0-based)
    prefix_sample: int  # draw % samples of the prefix
    epoch: int
    token_start: int  # window [token_start, token_end) in the prefix's stream
    token_end: int
    docs: list[TracedDoc] = field(default_factory=list)


def read_export_manifest(export: str | os.PathLike[str]) -> dict[str, Any]:
    """An export's manifest (ExportError when ``export`` is not a finished export)."""
    import json

    path = ExportLayout(Path(export)).manifest
    if not path.exists():
        raise ExportError(f"{export} has no {EXPORT_MANIFEST}: not a finished export (rerun `curate export`)")
    try:
        manifest = json.loads(read_text(path))
    except (ValueError, OSError) as exc:
        raise ExportError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("kind") != "curation-export" or \
            not isinstance(manifest.get("domains"), dict):
        raise ExportError(f"{path}: not an export manifest")
    return manifest


def _domain_of(manifest: dict[str, Any], name: str) -> str:
    """The domain a blend or ``--prefix`` names: a domain, a prefix, or a path ending in one (megatron/web)."""
    domains = manifest["domains"]
    if name in domains:
        return name
    base = name.rstrip("/").rsplit("/", 1)[-1]
    for d, v in domains.items():
        if v.get("prefix") == base:
            return d
    raise ExportError(f"{name!r} is no prefix of this export (it has {', '.join(sorted(domains))})")


def resolve_blend(manifest: dict[str, Any], prefix: str | None = None,
                  blend: str | None = None) -> list[tuple[float, str]]:
    """``[(normalized weight, domain), ...]``: ``prefix`` alone, a ``blend`` string, or the export's mixture."""
    if prefix is not None and blend is not None:
        raise ExportError("give --prefix or --blend, not both")
    if prefix is not None:
        pairs = [(1.0, _domain_of(manifest, prefix))]
    elif blend is not None:
        pairs = [(w, _domain_of(manifest, p)) for w, p in parse_blend(blend)]
    else:
        pairs = [(float(w), d) for d, w in manifest["mixture"]["weights"].items()]
    pairs = [(w, d) for w, d in pairs if w > 0]
    weights = megatron_normalize([w for w, _ in pairs])
    return [(w, d) for w, (_, d) in zip(weights, pairs)]


def _windows(starts: np.ndarray, ends: np.ndarray, a: int, b: int) -> range:
    """Positions of the documents whose ``[start, end)`` overlaps ``[a, b)`` (both arrays ascending)."""
    lo = int(np.searchsorted(ends, a, side="right"))
    hi = int(np.searchsorted(starts, b, side="left"))
    return range(lo, hi)


def trace(export: str | os.PathLike[str], step: int, batch_size: int, seq_len: int, prefix: str | None = None,
          blend: str | None = None) -> list[TracedSample]:
    """The samples of training step ``step`` and the documents each read (see the module docstring)."""
    if step < 0 or batch_size < 1 or seq_len < 1:
        raise ExportError(f"step must be >= 0 and batch size, seq len >= 1 (got {step}, {batch_size}, {seq_len})")
    manifest = read_export_manifest(export)
    pairs = resolve_blend(manifest, prefix, blend)
    lay = ExportLayout(Path(export))
    start, stop = step * batch_size, (step + 1) * batch_size
    if len(pairs) == 1:
        which, draws = np.zeros(stop - start, np.int16), np.arange(start, stop, dtype=np.int64)
    else:
        which, draws = blending_indices([w for w, _ in pairs], start, stop)
    indexes: dict[str, Any] = {}
    out = []
    for i, (d, draw) in enumerate(zip(which.tolist(), draws.tolist())):
        domain = pairs[d][1]
        info = manifest["domains"][domain]
        if domain not in indexes:
            path = safe_shard_path(lay.root, info.get("index"))  # manifest paths stay inside the export
            indexes[domain] = read_index(Path(path)).to_pydict()
            for k in ("token_start", "token_end"):
                indexes[domain][k] = np.asarray(indexes[domain][k], dtype=np.int64)
        idx = indexes[domain]
        n = (int(info["tokens"]) - 1) // seq_len
        if n < 1:
            raise ExportError(f"prefix {info['prefix']} has {info['tokens']} tokens: fewer than seq_len + 1 = "
                              f"{seq_len + 1}, so not one sample")
        k = draw % n
        a, b = k * seq_len, k * seq_len + seq_len + 1
        sample = TracedSample(sample=start + i, domain=domain, prefix=info["prefix"], draw=draw, prefix_sample=k,
                              epoch=draw // n, token_start=a, token_end=b)
        for j in _windows(idx["token_start"], idx["token_end"], a, b):
            s, e = int(idx["token_start"][j]), int(idx["token_end"][j])
            sample.docs.append(TracedDoc(doc=int(idx["doc"][j]), id=idx["id"][j], tokens=min(e, b) - max(s, a),
                                         token_start=s, token_end=e, shard=idx["shard"][j], row=int(idx["row"][j]),
                                         run=idx["run"][j]))
        out.append(sample)
    return out


def _score_columns(schema: list[dict[str, Any]]) -> list[str]:
    names = [c.get("name") for c in schema if isinstance(c, dict)]
    return [n for n in names if isinstance(n, str) and (n.startswith(_SCORE_PREFIXES) or n in _SCORE_NAMES)]


def sources(export: str | os.PathLike[str], ids: list[str], run: str | None = None) -> dict[str, dict[str, Any]]:
    """Per document id, what the source run's tables hold: ``source`` (input file), ``domain``, ``url``, its score
    columns, and ``dropped_as_duplicates`` (documents the run dropped as duplicates of it: decisions ``dup_of``).

    ``run`` overrides where the run is (it moved); its fingerprint must be the export's source fingerprint."""
    from curation.query_sandbox import Limits
    from curation.stats import open_run

    manifest = read_export_manifest(export)
    run_dir = run or manifest["source"]["run"]
    wanted = sorted(set(ids))
    try:
        run_manifest = RunManifest.read(run_dir)  # checked before a sandbox starts for it
        if run_manifest.fingerprint != manifest["source"]["fingerprint"]:
            raise ExportError(f"run {run_dir} is not the export's source: fingerprint "
                              f"{run_manifest.fingerprint[:12]} != {manifest['source']['fingerprint'][:12]}")
        cols = ["id", "source", "domain", "url", *_score_columns(run_manifest.schema)]
        with open_run(run_dir, Limits(timeout_s=60)) as (con, _):
            sql = f"SELECT {', '.join(_quote(c) for c in cols)} FROM docs WHERE list_contains(?, id)"
            rows = con.execute(sql, [wanted]).fetchall()
            dups = dict(con.execute(
                "SELECT k, count(*) FROM (SELECT json_extract_string(details, '$.dup_of') AS k FROM decisions) "
                "WHERE list_contains(?, k) GROUP BY k", [wanted]).fetchall())
    except ExportError:
        raise
    except Exception as exc:  # no manifest, a moved run, a sandbox limit: one line for the CLI
        raise ExportError(f"run {run_dir}: {' '.join(str(exc).split())}") from exc
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        rec = dict(zip(cols, r))
        rec["dropped_as_duplicates"] = int(dups.get(rec["id"], 0))
        out.setdefault(rec["id"], rec)  # ids are unique in a run; a repeated one keeps its first row
    return out


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
