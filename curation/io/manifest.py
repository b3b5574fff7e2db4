"""A run's ``manifest.json``: the one reader of it, and the rule for the paths it names.

The typed records and ``read_manifest(run)`` (the JSON object) are how every consumer reads a finished dataset,
local or on an object store, so the file name, the JSON checks and their error wording live here once, with one
``ManifestError``. A manifest is of one of two kinds, told apart by its ``kind`` field:

* ``RunManifest``: a ``curate run`` run's (no ``kind``), read with ``RunManifest.read`` by the readers of a run's
  config, stages or token counts (``curate stats``, the planner, the executor, ``curate trace``, ``curate export``);
* ``OrderedRunManifest``: ``curate skill-order`` output's (``kind: skill-ordered``): a run's documents in
  curriculum order, one shard per round, with the schedule; no config, stages or token counts.

Each refuses the other kind with a message naming the file and both kinds. ``read_any_manifest`` reads either,
for the readers that take any finished dataset (``curate skill-order``, ``curate index``, a dedup stage's
``against``, the mixture view, the training loader, which reads skill-ordered output as a curriculum); with
``shard_paths`` they locate its shards. The JSON object is for the service, which shows a hand-edited manifest's
values as found where the typed records refuse them (the runs list, the views of ``curation.stats``), and for
``curate verify``, which reports a bad manifest as one problem among others.

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
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

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
#: A run's ``manifest.json``, of either kind (``RunManifest``, ``OrderedRunManifest``; ``curate index`` rewrites
#: both): they share the version number.
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


#: The field telling a manifest's kind: ``SKILL_ORDERED`` in ``curate skill-order`` output's; absent in a ``curate
#: run`` run's (so every run manifest written so far reads as one).
KIND_KEY = "kind"
SKILL_ORDERED = "skill-ordered"


def _describe(manifest: dict[str, Any]) -> str:
    """What a manifest is by its ``kind``, for the message of a reader refusing the other kind."""
    if KIND_KEY not in manifest:
        return "the manifest of a `curate run` run"
    if manifest[KIND_KEY] == SKILL_ORDERED:
        return "the manifest of skill-ordered output (`curate skill-order`)"
    return f"a manifest of unknown kind {manifest[KIND_KEY]!r}"


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


def _count(record: dict[str, Any], key: str) -> int:
    """``record[key]`` when it is an integer; KeyError or TypeError (a malformed record) otherwise."""
    value = record[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{key!r} must be an integer, got {value!r}")
    return value


def _number(record: dict[str, Any], key: str) -> float:
    value = record[key]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{key!r} must be a number, got {value!r}")
    return value


def _size(record: dict[str, Any], key: str) -> int:
    """``record[key]`` when it is a non-negative integer; TypeError naming the field and what it holds otherwise."""
    value = record.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"'{key}' must be a non-negative integer, got {value!r}")
    return value


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _counts(mapping: Any, what: str) -> dict[str, int]:
    if not isinstance(mapping, dict):
        raise TypeError(f"{what!r} must be an object, got {mapping!r}")
    return {str(k): _count(mapping, k) for k in mapping}


def _numbers(mapping: Any, what: str) -> dict[str, float]:
    if not isinstance(mapping, dict):
        raise TypeError(f"{what!r} must be an object, got {mapping!r}")
    return {str(k): float(_number(mapping, k)) for k in mapping}


def _sum_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, n in b.items():
        out[k] = out.get(k, 0) + n
    return out


@dataclass
class StageCount:
    """One stage's funnel counts (a task marker's or, summed, the manifest's): documents in, kept, and
    dropped per reason. ``index`` -1 is the input guard."""

    index: int
    name: str
    docs_in: int = 0
    docs_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def __add__(self, other: StageCount) -> StageCount:
        if other.index != self.index:
            raise ValueError(f"cannot add the counts of stage {other.index} to those of stage {self.index}")
        return StageCount(self.index, self.name, self.docs_in + other.docs_in, self.docs_out + other.docs_out,
                          _sum_counts(self.dropped, other.dropped))

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "in": self.docs_in, "out": self.docs_out,
                "dropped": dict(self.dropped)}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> StageCount:
        return cls(_count(record, "index"), str(record["name"]), _count(record, "in"), _count(record, "out"),
                   _counts(record["dropped"], "dropped"))


@dataclass
class DomainCount:
    """Kept documents of one domain: how many, their characters and tokens."""

    docs: int = 0
    chars: int = 0
    tokens: int = 0

    def __add__(self, other: DomainCount) -> DomainCount:
        return DomainCount(self.docs + other.docs, self.chars + other.chars, self.tokens + other.tokens)

    def to_json(self) -> dict[str, int]:
        return {"docs": self.docs, "chars": self.chars, "tokens": self.tokens}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> DomainCount:
        return cls(_count(record, "docs"), _count(record, "chars"), _count(record, "tokens"))


@dataclass(frozen=True)
class ShardEntry:
    """One output file a task wrote (a task marker's ``outputs``, the manifest's ``shards``): its path relative
    to the run, rows, bytes and sha256."""

    path: str
    rows: int
    bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "rows": self.rows, "bytes": self.bytes, "sha256": self.sha256}

    @classmethod
    def from_json(cls, record: Any) -> ShardEntry:
        """The entry ``record``, vetted (a manifest is untrusted: its readers open these paths): TypeError or
        ValueError, worded to follow ``<manifest>: shard <i> (<path>): ``, for a path that is not a plain relative
        path inside the run (``unsafe_reason``), a sha256 that is not 64 lowercase hex digits, or rows or bytes
        that are not non-negative integers."""
        if not isinstance(record, dict):
            raise TypeError("entry must be an object")
        why = unsafe_reason(record.get("path"))
        if why:
            raise ValueError(f"refused: the path {why}; shard paths must be plain relative paths inside the run")
        sha = record.get("sha256")
        if not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
            raise ValueError(f"'sha256' must be 64 lowercase hex digits, got {sha!r}")
        return cls(record["path"], _size(record, "rows"), _size(record, "bytes"), sha)


@dataclass
class TaskMarker:
    """``_markers/seg{S}/{T}.json``: one finished task of one pass, written last by the task (its commit point;
    ``curation.executors.shard``) and read by ``RunManifest.aggregate``, ``curate verify`` and the planner.

    ``lines``, ``blank_lines``, ``docs_read`` and ``quarantined`` count the input (pass 0 only: later passes read
    work files); ``docs_out``, ``outputs`` and ``domains`` are what the pass kept (the final pass's are the run's
    shards); ``stages`` the funnel of the stages this pass ran. ``stage_seconds``: per stage index (a string, as
    JSON has it), the seconds in its filter. ``node``: the Ray node (None outside Ray). ``index_seconds``: the final
    pass's time writing its dedup-index rows (absent in other passes)."""

    seg: int
    task: int
    source: str
    lines: int = 0
    blank_lines: int = 0
    docs_read: int = 0
    bytes_in: int = 0
    quarantined: int = 0
    stages: list[StageCount] = field(default_factory=list)
    docs_out: int = 0
    outputs: list[ShardEntry] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    domains: dict[str, DomainCount] = field(default_factory=dict)
    started_unix: float = 0.0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    node: str | None = None
    index_seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The marker as written (``write_json`` sorts the keys)."""
        out: dict[str, Any] = {
            TASK_MARKER.key: TASK_MARKER.version, "seg": self.seg, "task": self.task, "source": self.source,
            "lines": self.lines, "blank_lines": self.blank_lines, "docs_read": self.docs_read,
            "bytes_in": self.bytes_in, "quarantined": self.quarantined,
            "stages": [s.to_json() for s in self.stages], "docs_out": self.docs_out,
            "outputs": [o.to_json() for o in self.outputs], "decisions": list(self.decisions),
            "domains": {d: c.to_json() for d, c in self.domains.items()}, "started_unix": self.started_unix,
            "seconds": self.seconds, "cpu_seconds": self.cpu_seconds, "stage_seconds": dict(self.stage_seconds)}
        if self.index_seconds is not None:
            out["index_seconds"] = self.index_seconds
        out["node"] = self.node
        return out

    @classmethod
    def from_json(cls, record: Any, where: object = "task marker") -> TaskMarker:
        """The marker ``record`` (as read from ``where``): ``SchemaVersionError`` for another version's, KeyError,
        TypeError or ValueError for a malformed one."""
        m = check_schema(record, TASK_MARKER, where)
        node = m["node"]
        if node is not None and not isinstance(node, str):
            raise TypeError(f"'node' must be a string or null, got {node!r}")
        if not isinstance(m["stages"], list) or not isinstance(m["outputs"], list):
            raise TypeError("'stages' and 'outputs' must be lists")
        if not isinstance(m["decisions"], list) or not isinstance(m["domains"], dict):
            raise TypeError("'decisions' must be a list and 'domains' an object")
        stage_seconds = m["stage_seconds"]
        if not isinstance(stage_seconds, dict):
            raise TypeError(f"'stage_seconds' must be an object, got {stage_seconds!r}")
        return cls(
            seg=_count(m, "seg"), task=_count(m, "task"), source=str(m["source"]), lines=_count(m, "lines"),
            blank_lines=_count(m, "blank_lines"), docs_read=_count(m, "docs_read"), bytes_in=_count(m, "bytes_in"),
            quarantined=_count(m, "quarantined"), stages=[StageCount.from_json(s) for s in m["stages"]],
            docs_out=_count(m, "docs_out"), outputs=[ShardEntry.from_json(o) for o in m["outputs"]],
            decisions=[str(d) for d in m["decisions"]],
            domains={str(d): DomainCount.from_json(c) for d, c in m["domains"].items()},
            started_unix=_number(m, "started_unix"), seconds=_number(m, "seconds"),
            cpu_seconds=_number(m, "cpu_seconds"),
            stage_seconds={str(k): _number(stage_seconds, k) for k in stage_seconds}, node=node,
            index_seconds=_number(m, "index_seconds") if "index_seconds" in m else None)

    @classmethod
    def read(cls, path: Path) -> TaskMarker:
        """The marker at ``path`` (a local path or a ``UPath``)."""
        return cls.from_json(json.loads(read_bytes(path)), path)


@dataclass
class GlobalMarker:
    """``_markers/global-stage{I}.json``: one finished global step (``stage``: its stage's name), with the
    warnings and report the manifest carries (a resumed run's manifest still has them)."""

    stage: str
    seconds: float
    warnings: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {GLOBAL_MARKER.key: GLOBAL_MARKER.version, "stage": self.stage, "seconds": self.seconds,
                "warnings": list(self.warnings), "report": dict(self.report)}

    @classmethod
    def from_json(cls, record: Any, where: object = "global-stage marker") -> GlobalMarker:
        m = check_schema(record, GLOBAL_MARKER, where)
        if not isinstance(m["warnings"], list) or not isinstance(m["report"], dict):
            raise TypeError("'warnings' must be a list and 'report' an object")
        return cls(str(m["stage"]), _number(m, "seconds"), list(m["warnings"]), dict(m["report"]))

    @classmethod
    def read(cls, path: Path) -> GlobalMarker:
        return cls.from_json(json.loads(read_bytes(path)), path)


_COUNTERS = ("lines", "blank_lines", "quarantined", "docs_read")  # of the input: pass 0's markers


@dataclass
class RunTotals:
    """A manifest's ``totals``: the input (files, bytes; lines, blank lines, quarantined lines and documents read,
    counted by pass 0) and the documents kept (``docs_out``, counted by the final pass)."""

    input_files: int = 0
    input_bytes: int = 0
    lines: int = 0
    blank_lines: int = 0
    quarantined: int = 0
    docs_read: int = 0
    docs_out: int = 0

    def __add__(self, other: RunTotals) -> RunTotals:
        return RunTotals(*(a + b for a, b in zip(self.to_json().values(), other.to_json().values())))

    def to_json(self) -> dict[str, int]:
        return {"input_files": self.input_files, "input_bytes": self.input_bytes, "lines": self.lines,
                "blank_lines": self.blank_lines, "quarantined": self.quarantined, "docs_read": self.docs_read,
                "docs_out": self.docs_out}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> RunTotals:
        return cls(**{k: _count(record, k) for k in cls().to_json()})


#: The manifest's fields in the order its writer writes them (``RunManifest.to_json``).
_MANIFEST_FIELDS = ("name", "schema_version", "fingerprint", "created_unix", "wall_seconds", "config",
                    "global_stages", "inputs", "totals", "stages", "domains", "token_counter", "schema", "shards",
                    "decisions", "quarantine", "nodes", "warnings", "corpus", "dedup_index")


@dataclass
class RunManifest:
    """A run's ``manifest.json`` (written last: the commit point of the run). Its counters are the sum of the
    task markers' (``aggregate``; ``+`` adds two partial sums): ``totals``, ``stages`` (by stage index),
    ``domains``, ``shards``, ``decisions``, ``quarantine`` and ``nodes`` (tasks run per Ray node, ``local``
    outside Ray); ``warnings`` and ``corpus`` come from the global-stage markers. The other fields say which run
    it is. ``extra``: fields this version does not know, kept as read (``curate index`` rewrites the manifest with
    them). It has no ``kind``: that field marks ``curate skill-order`` output (``OrderedRunManifest``)."""

    name: str = ""
    fingerprint: str = ""
    created_unix: float = 0.0
    wall_seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    global_stages: list[int] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    totals: RunTotals = field(default_factory=RunTotals)
    stages: dict[int, StageCount] = field(default_factory=dict)
    domains: dict[str, DomainCount] = field(default_factory=dict)
    token_counter: str = ""
    schema: list[dict[str, str]] = field(default_factory=list)
    shards: list[ShardEntry] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    quarantine: list[str] = field(default_factory=list)
    nodes: dict[str, int] = field(default_factory=dict)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    corpus: list[dict[str, Any]] = field(default_factory=list)
    dedup_index: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # -- the counters -----------------------------------------------------------------------------------

    @classmethod
    def of_marker(cls, marker: TaskMarker, n_passes: int) -> RunManifest:
        """The counters one task marker of a run of ``n_passes`` passes adds to its manifest: the input counts of
        pass 0, the funnel of every pass, the shards, token counts and documents kept of the final pass."""
        out = cls(stages={s.index: s for s in marker.stages}, decisions=list(marker.decisions),
                  nodes={marker.node or "local": 1})
        if marker.seg == 0:
            out.totals = RunTotals(**{k: getattr(marker, k) for k in _COUNTERS})
            if marker.quarantined:
                out.quarantine = [str(Layout(Path()).quarantine(marker.task))]
        if marker.seg == n_passes - 1:
            out.totals.docs_out = marker.docs_out
            out.shards = list(marker.outputs)
            out.domains = dict(marker.domains)
        return out

    def _absorb(self, other: RunManifest) -> None:
        """Add ``other``'s counters to this one's, in place (lists unsorted until ``_canonical``)."""
        self.totals = self.totals + other.totals
        for i, s in other.stages.items():
            self.stages[i] = self.stages[i] + s if i in self.stages else s
        for d, c in other.domains.items():
            self.domains[d] = self.domains[d] + c if d in self.domains else c
        self.shards += other.shards
        self.decisions += other.decisions
        self.quarantine += other.quarantine
        self.nodes = _sum_counts(self.nodes, other.nodes)
        self.warnings += other.warnings
        self.corpus += other.corpus

    def _canonical(self) -> RunManifest:
        """Counters in the order the manifest lists them: stages by index, domains, nodes, shards (by path),
        decisions and quarantine files sorted; warnings and corpus in pass order."""
        self.stages = dict(sorted(self.stages.items()))
        self.domains = dict(sorted(self.domains.items()))
        self.nodes = dict(sorted(self.nodes.items()))
        self.shards = sorted(self.shards, key=lambda s: s.path)
        self.decisions = sorted(self.decisions)
        self.quarantine = sorted(self.quarantine)
        return self

    def __add__(self, other: RunManifest) -> RunManifest:
        """The counters of both summed (the same whichever way the markers were split and ordered); the other
        fields are this one's."""
        out = RunManifest.from_json(self.to_json())
        out._absorb(other)
        return out._canonical()

    @classmethod
    def aggregate(cls, markers: Iterable[TaskMarker], n_passes: int,
                  global_markers: Iterable[tuple[int, GlobalMarker]] = (), **fields: Any) -> RunManifest:
        """The manifest of a run of ``n_passes`` passes from its task markers (every task of every pass) and its
        global-stage markers (``(stage index, marker)`` in pass order); ``fields``: the others (name,
        fingerprint, config, inputs, totals with the input files and bytes, ...). The one aggregation of markers:
        the executors write its result, ``curate verify`` checks a manifest against it."""
        out = cls(**fields)
        out.totals = RunTotals(**out.totals.to_json())
        for m in markers:
            out._absorb(cls.of_marker(m, n_passes))
        for index, gm in global_markers:
            out.warnings += gm.warnings
            if gm.report.get("against"):
                out.corpus.append({"index": index, "stage": gm.stage, **gm.report})
        return out._canonical()

    # -- the file ---------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The manifest as written (``corpus`` only when a dedup stage ran against earlier runs,
        ``dedup_index`` once the run's index is built)."""
        out: dict[str, Any] = {
            "name": self.name, MANIFEST.key: MANIFEST.version, "fingerprint": self.fingerprint,
            "created_unix": self.created_unix, "wall_seconds": self.wall_seconds, "config": self.config,
            "global_stages": list(self.global_stages), "inputs": self.inputs, "totals": self.totals.to_json(),
            "stages": [s.to_json() for s in self.stages.values()],
            "domains": {d: c.to_json() for d, c in self.domains.items()}, "token_counter": self.token_counter,
            "schema": self.schema, "shards": [s.to_json() for s in self.shards], "decisions": list(self.decisions),
            "quarantine": list(self.quarantine), "nodes": dict(self.nodes), "warnings": list(self.warnings)}
        if self.corpus:
            out["corpus"] = list(self.corpus)
        if self.dedup_index is not None:
            out["dedup_index"] = self.dedup_index
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, record: Any, where: object = "manifest.json") -> RunManifest:
        """The manifest ``record`` (as read from ``where``): ``SchemaVersionError`` for another version's,
        ``ManifestError`` naming ``where`` and the entry for a bad shard entry (``ShardEntry.from_json``), KeyError,
        TypeError or ValueError for an otherwise malformed one."""
        m = check_schema(record, MANIFEST, where)
        if KIND_KEY in m:
            raise ManifestError(f"{where}: {_describe(m)}; this reads only a `curate run` run's manifest")
        stages = [StageCount.from_json(s) for s in m["stages"]]
        return cls(
            name=str(m["name"]), fingerprint=str(m["fingerprint"]), created_unix=m["created_unix"],
            wall_seconds=m["wall_seconds"], config=m["config"], global_stages=list(m["global_stages"]),
            inputs=m["inputs"], totals=RunTotals.from_json(m["totals"]), stages={s.index: s for s in stages},
            domains={str(d): DomainCount.from_json(c) for d, c in m["domains"].items()},
            token_counter=m["token_counter"], schema=m["schema"], shards=_shard_entries(m["shards"], where),
            decisions=list(m["decisions"]), quarantine=list(m["quarantine"]), nodes=_counts(m["nodes"], "nodes"),
            warnings=list(m["warnings"]), corpus=list(m.get("corpus", [])), dedup_index=m.get("dedup_index"),
            extra={k: v for k, v in m.items() if k not in _MANIFEST_FIELDS})

    @classmethod
    def read(cls, run: str | os.PathLike[str]) -> RunManifest:
        """The manifest of the finished run ``run`` (a local folder or an object-store URL), typed:
        ``read_manifest`` then ``from_json``. Raises ``NoManifestError`` when the run has none, ``ManifestError``
        naming the file (and the shard entry) for any other problem."""
        return cls.read_bytes(run)[0]

    @classmethod
    def read_bytes(cls, run: str | os.PathLike[str]) -> tuple[RunManifest, bytes]:
        """``read`` and the file's exact bytes (a reader that fingerprints the run hashes those)."""
        record, raw = _read_manifest_bytes(run, fields=())
        return _typed(cls, record, manifest_path(run)), raw


@dataclass
class OrderedDomainCount:
    """Documents of one domain in skill-ordered output and their characters. No tokens: the source counted them per
    domain, not per document, so those of the documents a round took are unknown."""

    docs: int = 0
    chars: int = 0

    def to_json(self) -> dict[str, int]:
        return {"docs": self.docs, "chars": self.chars}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> OrderedDomainCount:
        return cls(_count(record, "docs"), _count(record, "chars"))


@dataclass(frozen=True)
class SkillSchedule:
    """How ``curate skill-order`` planned its rounds (``curation.skill_order``): the Skill-It rule's ``eta``,
    ``window`` and ``alpha``, the column naming a document's skill, the characters per round, the skills graph as
    given with its weighted matrix, and the initial losses."""

    eta: float
    window: int
    alpha: float
    column: str
    chars_per_round: int
    graph: dict[str, Any]
    weighted_a: list[list[float]]
    initial_losses: dict[str, float]
    method: str = "skill-it-offline"

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "eta": self.eta, "window": self.window, "alpha": self.alpha,
                "column": self.column, "chars_per_round": self.chars_per_round, "graph": self.graph,
                "weighted_A": self.weighted_a, "initial_losses": dict(self.initial_losses)}

    @classmethod
    def from_json(cls, record: Any) -> SkillSchedule:
        if not isinstance(record, dict) or not isinstance(record["graph"], dict):
            raise TypeError("'schedule' must be an object with a 'graph' object")
        return cls(_number(record, "eta"), _count(record, "window"), _number(record, "alpha"), str(record["column"]),
                   _count(record, "chars_per_round"), record["graph"],
                   [[float(x) for x in row] for row in record["weighted_A"]],
                   _numbers(record["initial_losses"], "initial_losses"), str(record["method"]))


@dataclass(frozen=True)
class OrderedRound:
    """One round of skill-ordered output: its shard, the mixture over the skills planned for it, the characters
    written per skill (whole documents) and the mixture those realise."""

    round: int
    shard: str
    planned_mixture: dict[str, float]
    chars: dict[str, int]
    realised_mixture: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"round": self.round, "shard": self.shard, "planned_mixture": dict(self.planned_mixture),
                "chars": dict(self.chars), "realised_mixture": dict(self.realised_mixture)}

    @classmethod
    def from_json(cls, record: Any) -> OrderedRound:
        if not isinstance(record, dict):
            raise TypeError(f"a round must be an object, got {record!r}")
        return cls(_count(record, "round"), str(record["shard"]),
                   _numbers(record["planned_mixture"], "planned_mixture"), _counts(record["chars"], "chars"),
                   _numbers(record["realised_mixture"], "realised_mixture"))


@dataclass
class OrderedRunManifest:
    """``curate skill-order`` output's ``manifest.json`` (written last: its commit point): a run's documents written
    again, one shard per round of a Skill-It schedule, ``shards`` (and ``rounds``, round ``i`` in shard ``i``) in
    curriculum order. ``kind`` ``skill-ordered`` tells it from a ``RunManifest``; it is no run of its own (no config,
    stages, markers or token counts). ``source_run`` and ``source_fingerprint`` say what it was made from (no
    fingerprint when that was skill-ordered output too: it has none of its own). ``dedup_index``: added by
    ``curate index``, as to a run's."""

    name: str
    created_unix: float
    source_run: str
    source_fingerprint: str | None
    schedule: SkillSchedule
    rounds: list[OrderedRound]
    shards: list[ShardEntry]
    domains: dict[str, OrderedDomainCount]
    dedup_index: dict[str, Any] | None = None

    @property
    def docs_out(self) -> int:
        return sum(s.rows for s in self.shards)

    def to_json(self) -> dict[str, Any]:
        """The manifest as written (``totals.docs_out``: what the runs list shows of any finished dataset)."""
        out: dict[str, Any] = {
            "name": self.name, MANIFEST.key: MANIFEST.version, KIND_KEY: SKILL_ORDERED,
            "created_unix": self.created_unix, "source_run": self.source_run,
            "source_fingerprint": self.source_fingerprint, "schedule": self.schedule.to_json(),
            "rounds": [r.to_json() for r in self.rounds], "shards": [s.to_json() for s in self.shards],
            "domains": {d: c.to_json() for d, c in self.domains.items()}, "totals": {"docs_out": self.docs_out}}
        if self.dedup_index is not None:
            out["dedup_index"] = self.dedup_index
        return out

    @classmethod
    def from_json(cls, record: Any, where: object = "manifest.json") -> OrderedRunManifest:
        """The manifest ``record`` (as read from ``where``): ``ManifestError`` for the other kind or a bad shard
        entry, ``SchemaVersionError`` for another version's, KeyError, TypeError or ValueError for a malformed one
        (rounds that do not list the shards in order, or a ``docs_out`` other than the shards' rows)."""
        m = check_schema(record, MANIFEST, where)
        if m.get(KIND_KEY) != SKILL_ORDERED:
            raise ManifestError(f"{where}: {_describe(m)}; this reads only skill-ordered output's "
                                "(`curate skill-order`)")
        fingerprint = m["source_fingerprint"]
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise TypeError(f"'source_fingerprint' must be a string or null, got {fingerprint!r}")
        if not isinstance(m["rounds"], list) or not isinstance(m["domains"], dict):
            raise TypeError("'rounds' must be a list and 'domains' an object")
        out = cls(name=str(m["name"]), created_unix=_number(m, "created_unix"), source_run=str(m["source_run"]),
                  source_fingerprint=fingerprint, schedule=SkillSchedule.from_json(m["schedule"]),
                  rounds=[OrderedRound.from_json(r) for r in m["rounds"]], shards=_shard_entries(m["shards"], where),
                  domains={str(d): OrderedDomainCount.from_json(c) for d, c in m["domains"].items()},
                  dedup_index=m.get("dedup_index"))
        # A reader follows the shards as the curriculum: round i must be shard i.
        if [(r.round, r.shard) for r in out.rounds] != [(i, s.path) for i, s in enumerate(out.shards)]:
            raise ValueError("'rounds' must list rounds 0, 1, ... with the shards in their order")
        if _count(m["totals"], "docs_out") != out.docs_out:
            raise ValueError(f"totals.docs_out {m['totals']['docs_out']} is not the shards' {out.docs_out} rows")
        return out

    @classmethod
    def read(cls, run: str | os.PathLike[str]) -> OrderedRunManifest:
        """The manifest of skill-ordered output ``run`` (a local folder or an object-store URL); ``ManifestError``
        naming the file for a `curate run` run or any other problem."""
        return _typed(cls, _read_manifest_bytes(run, fields=())[0], manifest_path(run))


#: A finished dataset's manifest, either kind: what ``read_any_manifest`` gives.
AnyManifest = RunManifest | OrderedRunManifest


def read_any_manifest(run: str | os.PathLike[str]) -> AnyManifest:
    """The manifest of the finished dataset ``run`` (a local folder or an object-store URL), whichever kind its
    ``kind`` says: ``OrderedRunManifest`` for ``curate skill-order`` output, else ``RunManifest``. For the readers
    that take both (``curate skill-order``, ``curate index``, a dedup stage's ``against``, the mixture view, the
    training loader)."""
    return read_any_manifest_bytes(run)[0]


def read_any_manifest_bytes(run: str | os.PathLike[str]) -> tuple[AnyManifest, bytes]:
    """``read_any_manifest`` and the file's exact bytes (the training loader fingerprints the run with them)."""
    record, raw = _read_manifest_bytes(run, fields=())
    cls = OrderedRunManifest if record.get(KIND_KEY) == SKILL_ORDERED else RunManifest
    return _typed(cls, record, manifest_path(run)), raw


_M = TypeVar("_M", RunManifest, OrderedRunManifest)


def _typed(cls: type[_M], record: dict[str, Any], path: Path) -> _M:
    """``cls.from_json(record)``, any malformation a ``ManifestError`` naming ``path``."""
    try:
        return cls.from_json(record, path)
    except ManifestError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ManifestError(f"{path}: not a valid manifest ({type(exc).__name__}: {exc})") from exc


def _shard_entries(entries: Any, where: object) -> list[ShardEntry]:
    """A manifest's ``shards``, each vetted by ``ShardEntry.from_json``; ``ManifestError`` names ``where``, the
    entry's index and path (once) and what is wrong with it."""
    if not isinstance(entries, list):
        raise ManifestError(f"{where}: 'shards' must be a list of shard entries")
    out = []
    for i, entry in enumerate(entries):
        try:
            out.append(ShardEntry.from_json(entry))
        except (TypeError, ValueError) as exc:
            rel = entry.get("path") if isinstance(entry, dict) else None
            raise ManifestError(f"{where}: shard {i} ({rel!r}): {exc}") from None
    return out


def manifest_path(run: str | os.PathLike[str]) -> Path:
    """Where the manifest of ``run`` (a local folder or an object-store URL) lives."""
    return Layout(run_path(run)).manifest


def has_manifest(run: str | os.PathLike[str]) -> bool:
    """True once the run is finished: the manifest is written last, as its commit point."""
    return manifest_path(run).exists()


def _read_manifest_bytes(run: str | os.PathLike[str],
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
    return _read_manifest_bytes(run, fields)[0]


def shard_paths(run: str | os.PathLike[str], manifest: AnyManifest) -> list[str]:
    """Full paths (or URLs) of the shards of ``manifest`` (``run``'s) in its order, each located by
    ``safe_shard_path``: the typed record vetted the paths as written, this also refuses a symlink out of the run."""
    return [safe_shard_path(run, s.path) for s in manifest.shards]


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
