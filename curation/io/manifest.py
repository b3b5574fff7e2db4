"""A run's ``manifest.json``: the one reader of it, and the rule for the paths it names.

``read_manifest(run)`` and ``shard_paths(run)`` are how every consumer (stats, ``curate skill-order``,
scorer training, the service, the training loader) reads a finished run, local or on an object store,
so the file name, the JSON checks and their error wording live here once.

A manifest is a JSON file anyone who can write the run directory (or hand over a copy of it) can
edit. Code that follows its ``path`` fields (shards, decisions, quarantine files) must never be
led outside the run: ``safe_shard_path`` is the one check every such reader goes through.

Versions: every record this project persists (manifest, ``run.json``, task and global-stage markers,
``progress.json``, a manifest's ``dedup_index`` entry, the training loader's state and checkpoint, the
rephrase cache) is a ``RecordKind`` with the one version its writers write now. A reader passes what it read
to ``check_schema`` once, which refuses any other version, or none, with one message naming the file and
what to do; past that check a reader takes the record's fields as this version writes them. The project is
0.x: it reads no older format.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curation.errors import ConfigError
from curation.io.layout import Layout
from curation.io.regular import NotRegularFileError, read_bytes
from curation.io.storage import is_remote, run_path
from curation.schema import SCHEMA_VERSION


class ManifestError(ConfigError):
    """A run's manifest is missing, not JSON or not shaped as a manifest; the message names the file."""


class NoManifestError(ManifestError, FileNotFoundError):
    """The run has no manifest (yet): it is not a finished run."""


class SchemaVersionError(ManifestError):
    """A persisted record written by another version of this project (``check_schema``); the message names
    the file, the version found, the one this version reads and what to do."""


@dataclass(frozen=True)
class RecordKind:
    """One kind of persisted record. ``version``: what its writers write now, the only one its readers
    accept. ``key``: the field holding it. ``required``: fields every record of this version has (one
    without them predates them, though it carries the same number). ``remedy``: what the reader's user does."""

    name: str
    version: int
    remedy: str
    key: str = "schema_version"
    required: tuple[str, ...] = ()


_RERUN = "rerun it with this version (`curate run` into a new output dir, or with --overwrite)"
#: A run's ``manifest.json`` (``build_manifest``; ``curate skill-order`` and ``curate index`` write it too).
MANIFEST = RecordKind("manifest", SCHEMA_VERSION, "rerun the command that wrote it (`curate run --overwrite`, "
                                                  "`curate skill-order`) with this version")
#: A run's ``run.json``: its identity (config, inputs, fingerprint), written first.
RUN_JSON = RecordKind("run.json", SCHEMA_VERSION, _RERUN, required=("fingerprint", "inputs", "global_stages"))
#: ``_markers/seg{S}/{T}.json``: one finished task of one pass.
TASK_MARKER = RecordKind("task marker", SCHEMA_VERSION, _RERUN)
#: ``_markers/global-stage{I}.json``: one finished global step.
GLOBAL_MARKER = RecordKind("global-stage marker", SCHEMA_VERSION, _RERUN)
#: ``progress.json``: a run's live progress (``curation.executors.progress``).
PROGRESS = RecordKind("progress.json", 1, _RERUN, key="version", required=("passes",))
#: A manifest's ``dedup_index`` entry (``curation.io.dedup_index``).
DEDUP_INDEX = RecordKind("dedup index", 1, "rebuild it with `curate index RUN --force` (RUN: this run)", key="format")


def check_schema(record: Any, kind: RecordKind, where: object) -> dict[str, Any]:
    """``record`` itself when it is an object of ``kind``'s current version with its required fields; else
    ``SchemaVersionError``: ``<where>: <kind> written by another version of this project (<what was found>);
    this version reads only <key> <version>: <remedy>``. ``where``: the file (and the part of it) read."""
    if not isinstance(record, dict):
        found = f"not an object but {type(record).__name__}"
    elif kind.key not in record:
        found = f"no {kind.key}"
    elif record[kind.key] != kind.version or isinstance(record[kind.key], bool):
        found = f"{kind.key} {record[kind.key]!r}"
    else:
        missing = [k for k in kind.required if k not in record]
        if not missing:
            return record
        found = f"{kind.key} {kind.version} without {', '.join(map(repr, missing))}"
    raise SchemaVersionError(f"{where}: {kind.name} written by another version of this project ({found}); this "
                             f"version reads only {kind.key} {kind.version}: {kind.remedy}")


def manifest_path(run: str | os.PathLike[str]) -> Path:
    """Where the manifest of ``run`` (a local folder or an object-store URL) lives."""
    return Layout(run_path(run)).manifest


def has_manifest(run: str | os.PathLike[str]) -> bool:
    """True once the run is finished: the manifest is written last, as its commit point."""
    return manifest_path(run).exists()


def read_manifest_bytes(run: str | os.PathLike[str],
                        fields: tuple[str, ...] = ("shards",)) -> tuple[dict[str, Any], bytes]:
    """``read_manifest`` and the file's exact bytes (a reader that fingerprints the run hashes those)."""
    path = manifest_path(run)
    if not path.exists():
        raise NoManifestError(f"{run_path(run)} has no manifest.json: not a finished run "
                              "(rerun `curate run` to finish it)")
    try:
        raw = read_bytes(path)  # a FIFO or device planted as the manifest is refused, never waited on
    except NotRegularFileError as exc:
        raise ManifestError(str(exc)) from exc
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not a valid manifest ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: not a valid manifest (not an object)")
    check_schema(manifest, MANIFEST, path)
    for key in fields:
        if not isinstance(manifest.get(key), (list, dict)):
            raise ManifestError(f"{path}: field {key!r} is missing or not a list/object")
    return manifest, raw


def read_manifest(run: str | os.PathLike[str], fields: tuple[str, ...] = ("shards",)) -> dict[str, Any]:
    """The manifest of a finished run as a JSON object of this version (``check_schema``) whose ``fields`` are
    each a list or an object. Raises ``NoManifestError`` when the run has none, ``ManifestError`` naming the
    file otherwise (``SchemaVersionError`` for another version's manifest)."""
    return read_manifest_bytes(run, fields)[0]


def shard_paths(run: str | os.PathLike[str], manifest: dict[str, Any] | None = None) -> list[str]:
    """Full paths (or URLs) of the run's shards in manifest order, each checked by ``safe_shard_path``.
    ``manifest`` saves a second read when the caller has it already."""
    manifest = read_manifest(run) if manifest is None else manifest
    entries = manifest.get("shards")
    if not isinstance(entries, list):
        raise ManifestError(f"{manifest_path(run)}: field 'shards' is missing or not a list")
    paths = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ManifestError(f"{manifest_path(run)}: shard {i} is not an object")
        paths.append(safe_shard_path(run, entry.get("path")))
    return paths


def _refuse(run: Path, rel: object, why: str) -> ValueError:
    return ValueError(f"{Layout(run).manifest}: unsafe path {rel!r}: {why}")


#: Each refusal of the one path rule, worded for ``unsafe path 'X': ...`` (curation's readers) and for
#: ``the path ...`` (the training loader's messages).
_WORDS = {
    "type": ("not a non-empty string", "is not a non-empty string"),
    "nul": ("backslash or NUL character", "contains a NUL character"),
    "backslash": ("backslash or NUL character", "contains a backslash"),
    "colon": ("a URL or drive, not a path relative to the run", "contains ':' (a URL scheme or a drive letter)"),
    "absolute": ("absolute path", "is absolute"),
    "dotdot": ("empty, '.' or '..' component", "contains '..'"),
    "empty": ("empty, '.' or '..' component", "has an empty or '.' component"),
}


def _violation(rel: object) -> str | None:
    """Which rule ``rel`` breaks (a key of ``_WORDS``), or None for a plain relative path."""
    if not isinstance(rel, str) or not rel:
        return "type"
    if "\0" in rel:
        return "nul"
    if "\\" in rel:
        return "backslash"
    if ":" in rel:
        return "colon"
    if rel.startswith(("/", "~")):
        return "absolute"
    parts = rel.split("/")
    if ".." in parts:
        return "dotdot"
    if "" in parts or "." in parts:
        return "empty"
    return None


def unsafe_reason(rel: object) -> str | None:
    """Why ``rel`` is not a plain relative path inside a run, as "the path <reason>" reads (None when it is).
    The one rule every reader of manifest paths applies: curation's readers, ``curate verify``, the loader."""
    rule = _violation(rel)
    return None if rule is None else _WORDS[rule][1]


def check_relative(run: str | os.PathLike[str], rel: object) -> str:
    """``rel`` itself if it is a plain relative path (``a/b.parquet``), else ValueError naming it."""
    rule = _violation(rel)
    if rule is not None:
        raise _refuse(run_path(run), rel, _WORDS[rule][0])
    assert isinstance(rel, str)
    return rel


def safe_shard_path(run: str | os.PathLike[str], rel: object) -> str:
    """The full path (or URL) of manifest entry ``rel`` of run ``run``, refusing anything that is
    not a plain relative path inside the run: absolute paths, ``..``, backslashes, schemes; locally
    also a symlink that leads out of the run. Raises ValueError naming the manifest and the path."""
    root = run_path(run)
    rel = check_relative(run, rel)
    if is_remote(root):
        base = str(root).rstrip("/")
        full = f"{base}/{rel}"
        if not full.startswith(base + "/"):  # cannot happen after check_relative; kept as the invariant
            raise _refuse(root, rel, "outside the run prefix")
        return full
    base_dir = Path(root).resolve()
    full_path = (base_dir / rel).resolve()
    # is_relative_to compares whole components: /data/out-evil is not inside /data/out.
    if full_path == base_dir or not full_path.is_relative_to(base_dir):
        raise _refuse(root, rel, f"resolves outside the run (it resolves to {full_path}, outside the run "
                                 f"directory {base_dir})")
    return str(base_dir / rel)
