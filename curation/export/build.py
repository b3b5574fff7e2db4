"""``export_run``: a finished run -> tokenized training data, resumable, committed by ``export_manifest.json``.

Order of work, and why it resumes:

1. Everything the user passed is checked before any file is written: the run (finished, some documents kept),
   the format, the tokenizer (loaded offline), the weights file (its domains exist).
2. ``export.json`` records the export's identity (source fingerprint, format, compression, tokenizer sha256). A
   rerun into the same folder with another identity is refused (``--overwrite`` deletes the old export).
3. One task per source shard (``curation.export.task``), skipped when its ``done.json`` marker exists.
4. Assembly, from the markers in source-shard order: per domain the sidecar index, the Megatron prefix (part
   ``.bin`` files concatenated, ``.idx`` written) or the merged MDS ``index.json``; then the mixture and blend.
5. ``export_manifest.json`` last (sha256 of every published file); then the scratch ``_parts/`` is removed.

A rerun of a finished export does nothing, unless ``--weights`` asks for another mixture: then only the blend and
the manifest are rewritten (no file is tokenized again).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from curation.config import fingerprint
from curation.export import blend as blending
from curation.export.index import assemble, write_index
from curation.export.layout import FORMATS, ExportLayout, prefix_names
from curation.export.mds import merged_index
from curation.export.megatron import write_prefix
from curation.export.runner import run_jobs
from curation.export.source import ExportError, SourceRun, open_source
from curation.export.task import ShardJob
from curation.export.tokenizer import normalize_spec, token_dtype, tokenizer_identity
from curation.io.atomic import atomic_open, read_json, write_json
from curation.io.digest import file_digest
from curation.io.storage import is_url, remove_tree

EXPORT_VERSION = 1
#: Allowed ``--compression`` per format, the first being the default.
COMPRESSIONS = {"megatron": ("none",), "mds": ("none", "zstd", "gzip"), "jsonl": ("zstd", "gzip")}

#: Called after each finished task with its marker, tasks done and tasks to do in this call.
Progress = Callable[[dict[str, Any], int, int], None]


@dataclass
class ExportResult:
    root: Path
    manifest: dict[str, Any]
    nothing_to_do: bool
    tasks_run: int
    reblended: bool = False


def _check_options(fmt: str, compression: str | None) -> str:
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")
    allowed = COMPRESSIONS[fmt]
    compression = compression or allowed[0]
    if compression not in allowed:
        raise ExportError(f"format {fmt}: compression {compression!r} is not one of {', '.join(allowed)}")
    return compression


def _check_dir(lay: ExportLayout, identity: dict[str, Any], overwrite: bool) -> None:
    if overwrite and lay.root.exists():
        remove_tree(lay.root)
    if lay.identity.exists():
        old = read_json(lay.identity)
        if old.get("fingerprint") != identity["fingerprint"]:
            changed = sorted(k for k in set(old) | set(identity) if k != "fingerprint" and old.get(k) != identity.get(k))
            raise ExportError(f"{lay.root} holds an export with another identity (changed: {', '.join(changed)}); "
                              "use a new output folder, or --overwrite to delete the old export")
    elif lay.root.exists() and any(lay.root.iterdir()):
        raise ExportError(f"{lay.root} is not empty and holds no export.json; refusing to write into it")
    else:
        write_json(lay.identity, identity)
    for tmp in lay.root.rglob("*.tmp"):  # left only by a killed attempt: none is being written now
        tmp.unlink()


def _entry(lay: ExportLayout, path: Path) -> dict[str, Any]:
    return {"path": lay.rel(path), "bytes": path.stat().st_size, "sha256": file_digest(path)}


def _mix(domains: dict[str, dict[str, Any]], weights: str | None, fmt: str, lay: ExportLayout) -> dict[str, Any]:
    """The mixture record and, for megatron, the blend string over the prefixes."""
    mix = blending.mixture(domains, weights)
    prefixes = {d: lay.megatron_prefix(v["prefix"]) for d, v in domains.items()}
    return {"mixture": mix, "blend": blending.blend_string(mix["weights"], prefixes) if fmt == "megatron" else None}


def _write_blend(lay: ExportLayout, blend: str | None) -> list[dict[str, Any]]:
    if blend is None:
        return []
    with atomic_open(lay.blend) as fh:
        fh.write((blend + "\n").encode())
    return [_entry(lay, lay.blend)]


def _assemble(lay: ExportLayout, source: SourceRun, fmt: str, dtype: str, prefixes: dict[str, str],
              markers: dict[int, dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Per-domain outputs from the task parts; ``(domains record, published file entries)``."""
    domains: dict[str, dict[str, Any]] = {}
    files: list[dict[str, Any]] = [f for t in sorted(markers) for f in markers[t]["files"]]
    for domain, prefix in sorted(prefixes.items()):
        tasks = [t for t in sorted(markers) if domain in markers[t]["domains"]]
        if not tasks:
            continue
        parts = [(source.shards[t].rel, pq.read_table(lay.part(t) / f"{prefix}.index.parquet")) for t in tasks]
        index = assemble(parts, source.fingerprint, fmt == "megatron")
        if fmt == "megatron":
            lengths = index.column("token_end").to_numpy() - index.column("token_start").to_numpy()
            files += write_prefix(lay.root, lay.megatron_prefix(prefix), [lay.part(t) / f"{prefix}.bin" for t in tasks],
                                  lengths, dtype)
        elif fmt == "mds":
            path = lay.mds_dir(prefix) / "index.json"
            write_json(path, merged_index(lay.mds_dir(prefix), [f"{t:05d}" for t in tasks]))
            files.append(_entry(lay, path))
        write_index(lay.index(prefix), index)
        files.append(_entry(lay, lay.index(prefix)))
        ends = index.column("token_end").to_numpy()
        domains[domain] = {"prefix": prefix, "documents": len(index), "tokens": int(ends[-1]),
                           "index": lay.rel(lay.index(prefix))}
    return domains, files


def export_run(run: str, out: str, fmt: str, tokenizer: str, *, weights: str | None = None,
               compression: str | None = None, executor: str = "local", address: str | None = None,
               num_cpus: int | None = None, overwrite: bool = False, progress: Progress | None = None) -> ExportResult:
    """Export the finished run ``run`` to ``out`` (see the module docstring). Raises ``ExportError`` (a
    ``ConfigError``) with a one-line message for anything the user can fix."""
    t0 = time.time()
    compression = _check_options(fmt, compression)
    source = open_source(run)
    spec = normalize_spec(tokenizer)
    tok = tokenizer_identity(spec)
    if weights is not None:
        blending.file_weights(weights, list(source.domains))  # refuse a bad file before any work
    if is_url(out):
        raise ExportError(f"{out}: exports are written to a local folder (copy it to object storage afterwards)")
    lay = ExportLayout(Path(out).resolve())
    prefixes = prefix_names(sorted(source.domains))
    dtype = token_dtype(tok["vocab_size"])
    identity: dict[str, Any] = {"kind": "curation-export", "version": EXPORT_VERSION, "format": fmt,
                                "compression": compression, "dtype": dtype, "source": source.identity(),
                                "tokenizer": tok, "prefixes": prefixes}
    identity["fingerprint"] = fingerprint(identity)
    _check_dir(lay, identity, overwrite)
    if lay.manifest.exists():
        return _rerun_finished(lay, weights, fmt)
    jobs = [ShardJob(root=str(lay.root), shard=s, fmt=fmt, tokenizer=spec, dtype=dtype, eod_id=tok["eod_id"],
                     prefixes=prefixes, compression=compression)
            for s in source.shards if s.rows and not lay.part_marker(s.index).exists()]
    done = 0

    def on_done(marker: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(marker, done, len(jobs))

    run_jobs(jobs, on_done, executor, address, num_cpus)
    markers = {s.index: read_json(lay.part_marker(s.index)) for s in source.shards if s.rows}
    domains, files = _assemble(lay, source, fmt, dtype, prefixes, markers)
    mix = _mix(domains, weights, fmt, lay)
    files += _write_blend(lay, mix["blend"])
    manifest = {
        **{k: identity[k] for k in ("kind", "version", "format", "compression", "dtype", "source", "tokenizer")},
        "fingerprint": identity["fingerprint"],
        "domains": domains,
        "totals": {"documents": sum(d["documents"] for d in domains.values()),
                   "tokens": sum(d["tokens"] for d in domains.values())},
        **mix,
        "files": sorted(files, key=lambda f: f["path"]),
        "created_unix": round(time.time(), 3),
        "wall_seconds": round(time.time() - t0, 3),
        "tasks": len(markers),
    }
    write_json(lay.manifest, manifest)  # the commit point of the export
    remove_tree(lay.parts_dir)
    return ExportResult(lay.root, manifest, nothing_to_do=False, tasks_run=len(jobs))


def _rerun_finished(lay: ExportLayout, weights: str | None, fmt: str) -> ExportResult:
    """A finished export: nothing to do, or (another mixture asked for) a new blend and manifest only."""
    remove_tree(lay.parts_dir)  # a crash between the manifest and this removal leaves it
    manifest = read_json(lay.manifest)
    mix = _mix(manifest["domains"], weights, fmt, lay)
    if mix["mixture"] == manifest.get("mixture"):
        return ExportResult(lay.root, manifest, nothing_to_do=True, tasks_run=0)
    files = [f for f in manifest["files"] if f["path"] != lay.rel(lay.blend)] + _write_blend(lay, mix["blend"])
    manifest.update(mix, files=sorted(files, key=lambda f: f["path"]))
    write_json(lay.manifest, manifest)
    return ExportResult(lay.root, manifest, nothing_to_do=False, tasks_run=0, reblended=True)

