"""The run-directory API: which runs lie under a root, what state each is in, and how far a live one got.

A run directory holds ``run.json`` (written first: the config and input list), one marker per
finished task under ``_markers/seg{S}/{T:05d}.json`` (the commit point of that task), one
``_markers/global-stage{I}.json`` per finished global stage, and ``manifest.json`` (written last:
the commit point of the whole run). So the state is read from files alone:

- ``finished``: ``manifest.json`` exists;
- ``running``: ``run.json`` but no manifest, and some file under the run changed within the
  activity window (a worker is writing);
- ``resumable``: ``run.json``, no manifest, nothing changed lately (a crashed or stopped run that
  ``curate run`` resumes);
- ``failed``: only when a caller that knows (the service's job table) says so.

Reads work on local folders and on object-store prefixes (``s3://bucket/runs``).

    from curation.io.runs import list_runs
    for r in list_runs("runs"): print(r.run_id, r.state)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from curation.io.layout import Layout
from curation.io.manifest import PROGRESS, RUN_JSON, check_schema, has_manifest, read_manifest
from curation.io.regular import read_text
from curation.io.storage import is_remote, run_path

State = Literal["finished", "running", "resumable", "failed"]
#: A run with no file change for this long is reported as resumable rather than running.
ACTIVE_WINDOW_S = 300.0


@dataclass
class RunInfo:
    """One run directory under a root, as the run list shows it.

    Args:
        run_id: the directory's name.
        path: the directory (``Path`` locally, a ``UPath`` for object stores).
        state: finished, running, resumable or failed.
        name: the pipeline's name from its config.
        fingerprint: the config+inputs fingerprint (``run.json``/``manifest.json``).
        created_unix: when the manifest was written (finished runs) or ``run.json`` was (others).
        totals: the manifest's totals (finished runs), else ``{}``.
        funnel: ``[(stage, in, out, dropped)]`` per stage (finished runs), else ``[]``.
        domains: ``{domain: {docs, chars, tokens}}`` (finished runs), else ``{}``.
        shard_bytes: total bytes of the kept shards (finished runs), else 0.
        input_bytes: total bytes of the inputs (from ``run.json``).
        error: why the directory could not be read, when it could not.
    """

    run_id: str
    path: Path
    state: State
    name: str = ""
    fingerprint: str = ""
    created_unix: float | None = None
    totals: dict[str, Any] = field(default_factory=dict)
    funnel: list[tuple[str, int, int, int]] = field(default_factory=list)
    domains: dict[str, dict[str, int]] = field(default_factory=dict)
    shard_bytes: int = 0
    input_bytes: int = 0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.run_id, "state": self.state, "name": self.name, "fingerprint": self.fingerprint,
                "created_unix": self.created_unix, "totals": self.totals,
                "funnel": [{"stage": s, "in": i, "out": o, "dropped": d} for s, i, o, d in self.funnel],
                "domains": self.domains, "shard_bytes": self.shard_bytes, "input_bytes": self.input_bytes,
                "error": self.error}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))  # run.json, progress.json, markers: regular files only
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def read_run_json(run: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run's ``run.json`` (config, inputs, fingerprint, global stages), or None if it has none; one of
    another version is refused (``check_schema``)."""
    path = Layout(run_path(run)).run_json
    return check_schema(_read_json(path), RUN_JSON, path) if path.exists() else None


def _newest_mtime(root: Path) -> float | None:
    """Latest modification time of any file under ``root`` (locally; None on object stores, whose
    listings are too costly to walk on every page view)."""
    if is_remote(root):
        return None
    newest = None
    for dirpath, _, files in os.walk(root):
        for f in files:
            try:
                m = os.stat(os.path.join(dirpath, f)).st_mtime
            except FileNotFoundError:  # a temp file renamed away while we walk
                continue
            newest = m if newest is None or m > newest else newest
    return newest


def run_state(run: str | os.PathLike[str], failed: Callable[[str], bool] | None = None,
              active_window_s: float = ACTIVE_WINDOW_S) -> State | None:
    """The run's state (see the module docstring), or None when the folder is not a run at all.
    ``failed(run_id)`` lets a caller that tracks jobs report a failed run as such."""
    root = run_path(run)
    if has_manifest(root):
        return "finished"
    if not Layout(root).run_json.exists():
        return None
    if failed is not None and failed(root.name):
        return "failed"
    newest = _newest_mtime(root)
    if newest is not None and time.time() - newest <= active_window_s:
        return "running"
    return "resumable"


def _info(path: Path, failed: Callable[[str], bool] | None) -> RunInfo | None:
    try:
        state = run_state(path, failed)
    except OSError as exc:
        return RunInfo(path.name, path, "failed", error=f"{path}: {exc}")
    if state is None:
        return None
    info = RunInfo(path.name, path, state)
    try:
        if state == "finished":
            # The JSON object, not a ``RunManifest``: the list shows what any finished dataset's manifest holds,
            # odd values included (``curate skill-order`` output has no stages; a hand-edited one is listed as is).
            m = read_manifest(path, fields=())
            info.name, info.fingerprint = str(m.get("name", "")), str(m.get("fingerprint", ""))
            created = m.get("created_unix")
            # a manifest is untrusted: only a real number is a time (a string here broke the runs list's sort)
            info.created_unix = float(created) if isinstance(created, (int, float)) and not isinstance(created, bool) else None
            info.totals = dict(m.get("totals", {}))
            info.funnel = [(s["name"], s["in"], s["out"], sum(s["dropped"].values())) for s in m.get("stages", [])]
            info.domains = dict(m.get("domains", {}))
            info.shard_bytes = sum(int(s["bytes"]) for s in m.get("shards", []))
            info.input_bytes = sum(int(i["bytes"]) for i in m.get("inputs", []))
        else:
            r = read_run_json(path) or {}
            info.name, info.fingerprint = str(r.get("name", "")), str(r.get("fingerprint", ""))
            info.input_bytes = sum(int(i["bytes"]) for i in r.get("inputs", []))
            if not is_remote(path):
                info.created_unix = round(Layout(path).run_json.stat().st_mtime, 3)
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        # A damaged run is listed with its problem rather than hiding it or failing the whole list.
        info.error = f"{path}: {type(exc).__name__}: {exc}"
    return info


def list_runs(root: str | os.PathLike[str], failed: Callable[[str], bool] | None = None) -> list[RunInfo]:
    """Every run directory directly under ``root`` (folders with ``run.json`` or ``manifest.json``),
    newest first. Hidden folders (``.x``) are skipped; so are symlinks leading out of a local root."""
    base = run_path(root)
    if not base.exists():
        return []
    resolved = None if is_remote(base) else Path(base).resolve()
    out = []
    for child in base.iterdir():
        if child.name.startswith(".") or not child.is_dir():
            continue
        if resolved is not None and not Path(child).resolve().is_relative_to(resolved):
            continue
        info = _info(child, failed)
        if info is not None:
            out.append(info)
    out.sort(key=lambda r: (-(r.created_unix or 0), r.run_id))
    return out


def progress(run: str | os.PathLike[str]) -> dict[str, Any]:
    """How far a run got: the executor's ``progress.json`` (bytes-based rates and ETA, see
    ``curation.executors.progress``), with the run's state. Before the executor has written one (the moment
    between ``run.json`` and the first pass) every figure is zero. A ``progress.json`` of another version
    is refused (``check_schema``), as is one that is not JSON, and a finished run without one (the executor
    writes it before the manifest)."""
    root = run_path(run)
    rj = read_run_json(root)
    if rj is None:
        raise ValueError(f"{root} has no run.json: not a run directory")
    finished = has_manifest(root)
    path = Layout(root).progress
    if not path.exists():
        if finished:
            check_schema({}, PROGRESS, path)  # refused: what wrote this run wrote no progress.json
        n_tasks, n_passes = len(rj["inputs"]), 1 + len(rj["global_stages"])
        return {"state": run_state(root), "passes": [], "tasks_done": 0, "tasks_total": n_tasks * n_passes,
                "input_bytes": sum(int(i["bytes"]) for i in rj["inputs"]), "input_bytes_done": 0,
                "fraction": 0.0, "eta_s": None, "source": "run.json"}
    live = check_schema(_read_json(path), PROGRESS, path)
    return {**live, "state": run_state(root), "eta_s": 0.0 if finished else live.get("eta_s"),
            "source": "progress.json"}
