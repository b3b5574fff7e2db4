"""Where each file of a run lives: the one map from a run directory to its sub-folders and files.

Writers (the executors, ``curate skill-order``) and readers (stats, verify, the service, the training
loader) name run files through ``Layout`` or ``curation.io.manifest`` instead of joining folder names
themselves, so the layout has one owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Layout:
    """Where everything of a run lives, relative to the run directory (a ``Path`` or, for an
    object-store URL, a ``UPath``: see ``curation.io.storage``)."""

    root: Path

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def progress(self) -> Path:
        """The run's live progress (``curation.executors.progress``), written before the manifest."""
        return self.root / "progress.json"

    def work(self, seg: int, task: int) -> Path:
        return self.root / "_work" / f"seg{seg}" / f"{task:05d}.parquet"

    @property
    def markers_dir(self) -> Path:
        return self.root / "_markers"

    def marker(self, seg: int, task: int) -> Path:
        return self.markers_dir / f"seg{seg}" / f"{task:05d}.json"

    def dups_dir(self, stage_index: int) -> Path:
        return self.root / "_work" / f"dups-stage{stage_index}"

    def dups_for_task(self, stage_index: int, task: int) -> Path:
        return self.dups_dir(stage_index) / f"_task={task}"

    def index_part(self, task: int) -> Path:
        """One task's dedup-index rows, written by the final pass; ``dedup_index/`` is made from them."""
        return self.root / "_work" / "index" / f"{task:05d}.parquet"

    def global_marker(self, stage_index: int) -> Path:
        return self.markers_dir / f"global-stage{stage_index}.json"

    def shard_prefix(self, task: int) -> str:
        return f"{task:05d}-"

    @property
    def shards_dir(self) -> Path:
        return self.root / "shards"

    @property
    def decisions_dir(self) -> Path:
        return self.root / "decisions"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    def decisions(self, seg: int, task: int) -> Path:
        return self.decisions_dir / f"seg{seg}-{task:05d}.parquet"

    def quarantine(self, task: int) -> Path:
        return self.quarantine_dir / f"{task:05d}.parquet"
