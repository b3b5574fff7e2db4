"""Runs under the service's root, addressed by id (the directory name).

A run id comes from a URL, so it is untrusted: it must be a plain name
(``^[A-Za-z0-9._-]{1,128}$``, not starting with ``.``) and, on local disk, the folder it names must
resolve inside the root (a symlink under the root that leads elsewhere is refused).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from fastapi import HTTPException

from curation.io.runs import RunInfo, list_runs, run_state
from curation.io.storage import is_remote, run_path

RUN_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class Registry:
    """Lists and resolves the runs under ``root`` (a local folder or an object-store prefix).

    Args:
        root: the runs root.
        failed: optional ``run_id -> bool`` from whoever tracks jobs (a run with no manifest whose
            job failed is shown as failed instead of resumable).
    """

    def __init__(self, root: str, failed: Callable[[str], bool] | None = None) -> None:
        self.root = run_path(root)
        if not is_remote(self.root):
            self.root = Path(self.root).resolve()
        self.failed = failed

    def list(self) -> list[RunInfo]:
        return list_runs(self.root, self.failed)

    def check_id(self, run_id: str) -> str:
        """``run_id`` if it is a plain run name, else 400 naming the rule."""
        if not isinstance(run_id, str) or not RUN_ID.match(run_id) or run_id.startswith("."):
            raise HTTPException(400, detail=f"invalid run id {run_id!r}: use 1-128 characters from "
                                            "A-Z a-z 0-9 . _ - and do not start with '.'")
        return run_id

    def path(self, run_id: str) -> Path:
        """The run's directory, which must exist inside the root and be a run; 400/404 otherwise."""
        self.check_id(run_id)
        path = self.root / run_id
        if not is_remote(self.root):
            resolved = Path(path).resolve()
            if resolved == self.root or not resolved.is_relative_to(self.root):
                raise HTTPException(400, detail=f"run {run_id!r} resolves outside the runs root")
        if run_state(path) is None:
            raise HTTPException(404, detail=f"no run {run_id!r} under the runs root")
        return path

    def state(self, run_id: str) -> str:
        state = run_state(self.path(run_id), self.failed)
        return state or "unknown"
