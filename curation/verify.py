"""``curate verify RUN``: is a run directory exactly what its manifest says it is?

Every shard is re-read and re-hashed (size and sha256 against the manifest), every path the
manifest or a marker names must be a plain relative path inside the run, every task marker of
every pass and every global-stage marker must be present, the markers' outputs and counts must
agree with the manifest, and no file may sit in ``shards/``, ``decisions/`` or ``quarantine/``
that the manifest does not list. The dedup index (``dedup_index/``, which later runs read instead of
the shards) is checked the same way: every file it lists re-hashed, no other file there. Works on
local and object-store runs (``curation.io.storage``).

Derived datasets with a manifest but no ``run.json`` (``curate skill-order`` output) have no
markers: only their files are checked. An export (``curate export``: ``export.json``,
``export_manifest.json``) is checked by ``curation.export.verify``, which builds on this module's ``Report``
(``curate verify`` picks one of the two: ``curation.export.verify.export_root``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from curation.errors import CurationError
from curation.io.dedup_index import verify_index
from curation.io.digest import stream_digest
from curation.io.layout import Layout
from curation.io.manifest import (
    MANIFEST,
    RUN_JSON,
    TASK_MARKER,
    RecordKind,
    RunManifest,
    SchemaVersionError,
    TaskMarker,
    check_schema,
    safe_shard_path,
)
from curation.io.regular import NotRegularFileError, check_regular, open_regular, read_text
from curation.io.storage import is_remote, run_path

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: Manifest totals that the task markers also record (``RunManifest.of_marker``: pass 0's or the final pass's).
_MARKER_TOTALS = ("lines", "blank_lines", "quarantined", "docs_read", "docs_out")


class NotARunError(CurationError):
    """The directory holds neither a run.json nor a manifest.json."""


@dataclass
class Report:
    """What ``verify_run`` found: one line per problem, and what was checked."""

    root: str
    problems: list[str] = field(default_factory=list)
    shards: int = 0
    rows: int = 0
    bytes: int = 0
    markers: int = 0
    index_files: int = 0
    has_run_json: bool = True

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        what = (f"{self.markers} markers agree with the manifest" if self.has_run_json
                else "no run.json, so no markers to check")
        index = f"; {self.index_files} dedup index files match" if self.index_files else ""
        return (f"OK {self.root}: {self.shards} shards ({self.rows} rows, {self.bytes} bytes) match their "
                f"size and sha256; {what}{index}")


def _digest(path: Path) -> tuple[int, str]:
    with open_regular(path, "rb") as fh:
        return stream_digest(fh)


def _files_under(root: Path, sub: str) -> list[str]:
    """Every file below ``root/sub``, as paths relative to ``root``."""
    if is_remote(root):
        fs, base = root.fs, root.path.rstrip("/")  # type: ignore[attr-defined]
        found = fs.find(f"{base}/{sub}") if fs.exists(f"{base}/{sub}") else []
        return sorted(p[len(base) + 1:] for p in found)
    folder = root / sub
    # Everything but folders: a FIFO or socket planted here is an unexpected file too, not something to skip.
    return sorted(str(p.relative_to(root)) for p in folder.rglob("*") if not p.is_dir()) if folder.is_dir() else []


def _read_json(path: Path, report: Report, what: str) -> Any:
    try:
        return json.loads(read_text(path))
    except FileNotFoundError:
        report.problems.append(f"{what}: missing")
    except NotRegularFileError as exc:
        report.problems.append(f"{what}: {exc}")
    except (ValueError, OSError) as exc:
        report.problems.append(f"{what}: unreadable ({type(exc).__name__}: {exc})")
    return None


def _checked(record: Any, kind: RecordKind, what: str, report: Report) -> dict[str, Any] | None:
    """``record`` when it was read and is of this version; else None, and a version problem is reported
    (``check_schema``'s message: the file, the version found, the one read and what to do)."""
    if record is None:
        return None  # missing or unreadable: reported by _read_json
    try:
        return check_schema(record, kind, what)
    except SchemaVersionError as exc:
        report.problems.append(str(exc))
        return None


def _check_listed(root: Path, manifest: dict[str, Any], key: str, folder: str, report: Report) -> None:
    """Files the manifest lists under ``key`` (decisions, quarantine) exist, and no others are there."""
    listed = manifest.get(key, [])
    if not isinstance(listed, list):
        report.problems.append(f"manifest.json: {key} is not a list")
        return
    safe: set[str] = set()
    for rel in listed:
        try:
            path = run_path(safe_shard_path(root, rel))
        except ValueError as exc:
            report.problems.append(str(exc))
            continue
        safe.add(rel)
        if not path.exists():
            report.problems.append(f"{rel}: listed in manifest.json {key} but missing")
            continue
        try:
            check_regular(path)  # stat only: the readers of these files refuse the same
        except NotRegularFileError as exc:
            report.problems.append(f"{rel}: {exc}")
    for rel in _files_under(root, folder):
        if rel not in safe:
            report.problems.append(f"{rel}: unexpected file (not listed in manifest.json {key})")


def _check_shards(root: Path, manifest: dict[str, Any], report: Report) -> dict[str, dict[str, Any]]:
    """Re-hash every shard the manifest lists; returns the safe entries by path."""
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        report.problems.append("manifest.json: shards is not a list")
        return {}
    by_path: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(shards):
        rel = entry.get("path") if isinstance(entry, dict) else None
        try:
            path = run_path(safe_shard_path(root, rel))
        except ValueError as exc:
            report.problems.append(f"{exc} (shards[{i}])")
            continue
        if rel in by_path:
            report.problems.append(f"{rel}: listed twice in manifest.json shards")
            continue
        by_path[rel] = entry
        sha, size = entry.get("sha256"), entry.get("bytes")
        if not isinstance(sha, str) or not _SHA256.match(sha) or not isinstance(size, int):
            report.problems.append(f"{rel}: manifest.json entry has no valid sha256/bytes ({sha!r}, {size!r})")
            continue
        if not path.exists():
            report.problems.append(f"{rel}: missing (manifest.json lists it)")
            continue
        try:
            real_size, real_sha = _digest(path)
        except NotRegularFileError as exc:  # a FIFO or device: refused without waiting on it
            report.problems.append(f"{rel}: {exc}")
            continue
        except OSError as exc:  # e.g. an object replaced while being read
            report.problems.append(f"{rel}: unreadable ({type(exc).__name__}: {exc})")
            continue
        if real_size != size:
            report.problems.append(f"{rel}: size {real_size} bytes, manifest.json says {size}")
        elif real_sha != sha:
            report.problems.append(f"{rel}: sha256 {real_sha[:16]}.. differs from manifest.json {sha[:16]}..")
        else:
            with open_regular(path, "rb") as fh:  # the bytes are the writer's: the footer tells the row count
                rows = pq.ParquetFile(fh).metadata.num_rows
            if "rows" in entry and entry["rows"] != rows:
                report.problems.append(f"{rel}: {rows} rows, manifest.json says {entry['rows']}")
            report.shards += 1
            report.rows += rows
            report.bytes += real_size
    for rel in _files_under(root, "shards"):
        if rel not in by_path:
            report.problems.append(f"{rel}: unexpected file (not listed in manifest.json shards)")
    return by_path


def _global_stage_indices(manifest: dict[str, Any], report: Report) -> list[int] | None:
    """The indices of the run's global stages, as its manifest records them (``global_stages``)."""
    stages = (manifest.get("config") or {}).get("stages", [])
    n = len(stages) if isinstance(stages, list) else 0
    out = manifest.get("global_stages")
    if not isinstance(out, list) or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n
                                            for i in out) or out != sorted(set(out)):
        report.problems.append("manifest.json: global_stages: expected the sorted indices of the config's global "
                               f"stages (each in 0..{n - 1}), got {str(out)[:100]}")
        return None
    return out


def _check_markers(root: Path, manifest: dict[str, Any], shards: dict[str, dict[str, Any]], report: Report) -> None:
    """Every pass's task markers and every global marker exist and agree with the manifest."""
    layout = Layout(root)
    run_json = _checked(_read_json(layout.run_json, report, "run.json"), RUN_JSON, "run.json", report)
    if run_json is not None and run_json["fingerprint"] != manifest.get("fingerprint"):
        report.problems.append(f"manifest.json: fingerprint {str(manifest.get('fingerprint'))[:12]} != run.json "
                               f"{str(run_json['fingerprint'])[:12]}")
    n_tasks = len(manifest.get("inputs") or [])
    globals_ = _global_stage_indices(manifest, report)
    if globals_ is None:
        return
    n_passes = len(globals_) + 1
    for g in globals_:
        if not layout.global_marker(g).exists():
            report.problems.append(f"_markers/global-stage{g}.json: missing")
        else:
            report.markers += 1
    markers: list[TaskMarker] = []
    for seg in range(n_passes):
        for t in range(n_tasks):
            rel = f"_markers/seg{seg}/{t:05d}.json"
            m = _checked(_read_json(layout.marker(seg, t), report, rel), TASK_MARKER, rel, report)
            if m is None:
                continue
            report.markers += 1
            try:
                marker = TaskMarker.from_json(m, rel)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                report.problems.append(f"{rel}: malformed marker ({type(exc).__name__}: {exc})")
                continue
            if (marker.seg, marker.task) != (seg, t):
                report.problems.append(f"{rel}: malformed marker (it says pass {marker.seg} task {marker.task})")
                continue
            markers.append(marker)
    sums = RunManifest.aggregate(markers, n_passes)  # what the executor's manifest adds up
    totals_from_markers = sums.totals.to_json()
    stages = {i: s.to_json() for i, s in sums.stages.items()}
    outputs = {o.path: {"rows": o.rows, "bytes": o.bytes, "sha256": o.sha256} for o in sums.shards}
    totals = manifest.get("totals") if isinstance(manifest.get("totals"), dict) else {}
    if totals.get("input_files") != n_tasks:
        report.problems.append(f"manifest.json: totals.input_files {totals.get('input_files')} != {n_tasks} inputs")
    if any(p.startswith("_markers/") for p in report.problems):
        return  # counts over missing markers would only repeat those lines
    for k in _MARKER_TOTALS:
        if totals.get(k) != totals_from_markers[k]:
            report.problems.append(f"manifest.json: totals.{k} {totals.get(k)} != {totals_from_markers[k]} from the "
                                   "task markers")
    for s in manifest.get("stages") if isinstance(manifest.get("stages"), list) else []:
        s = s if isinstance(s, dict) else {}
        agg = stages.get(s.get("index"))
        if agg is None or (agg["in"], agg["out"], agg["dropped"]) != (s.get("in"), s.get("out"), s.get("dropped")):
            report.problems.append(f"manifest.json: stage {s.get('index')} ({s.get('name')}) counts differ from the "
                                   "task markers")
    for rel in sorted(set(shards) | set(outputs), key=str):
        if rel not in outputs:
            report.problems.append(f"{rel}: in manifest.json but written by no task marker")
        elif rel not in shards:
            report.problems.append(f"{rel}: written by a task marker but not in manifest.json")
        else:
            for k, v in outputs[rel].items():
                if shards[rel].get(k) != v:
                    report.problems.append(f"{rel}: manifest.json {k} {shards[rel].get(k)!r} != marker {v!r}")


def verify_run(run_dir: str | Path) -> Report:
    """Check a run directory (local path or URL) against its manifest; see the module docstring."""
    root = run_path(run_dir)
    if is_remote(root):
        # fsspec caches listings and object versions per process: verify what is there now.
        root.fs.invalidate_cache()  # type: ignore[attr-defined]
    else:
        root = root.resolve()
    layout = Layout(root)
    has_run, has_manifest = layout.run_json.exists(), layout.manifest.exists()
    if not has_run and not has_manifest:
        raise NotARunError(f"{root} is not a run directory: it has neither run.json nor manifest.json")
    report = Report(str(root), has_run_json=has_run)
    if not has_manifest:
        report.problems.append("manifest.json: missing: the run is incomplete (rerun `curate run` to finish it)")
        return report
    # Read here rather than with io.manifest.read_manifest: verify reports a bad manifest as one
    # problem among others instead of stopping at it.
    manifest = _read_json(layout.manifest, report, "manifest.json")
    if not isinstance(manifest, dict):
        if manifest is not None:
            report.problems.append("manifest.json: not a JSON object")
        return report
    if _checked(manifest, MANIFEST, "manifest.json", report) is None:
        return report  # another version's manifest: its fields mean other things
    shards = _check_shards(root, manifest, report)
    _check_listed(root, manifest, "decisions", "decisions", report)
    _check_listed(root, manifest, "quarantine", "quarantine", report)
    problems, report.index_files = verify_index(root, manifest)
    report.problems += problems
    if has_run:
        _check_markers(root, manifest, shards, report)
    return report
