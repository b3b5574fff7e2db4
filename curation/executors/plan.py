"""The execution plan: input tasks, shard passes ("segments") split at global stages, run layout.

A plan is plain data, pickled to workers. It builds each stage once per process (``Plan.stage``);
the built stages are left out of the pickle and rebuilt on each worker, so indexes or models a
stage loads never travel through the object store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec

from curation.errors import ConfigError
from curation.io.storage import is_url, run_path
from curation.pipeline import PipelineConfig, StageSpec
from curation.stages.base import Stage
from curation.stages.global_stage import GlobalStage
from curation.registry import get_stage


@dataclass(frozen=True)
class Task:
    """One input file: the unit of work, retry and resume."""

    index: int
    path: str  # full path or URL
    source: str  # path relative to its pattern's fixed prefix; the documents' ``source``
    size: int


@dataclass
class Segment:
    """A shard pass: map stages run per task between two global stages.

    Args:
        index: Position among segments.
        stages: ``(pipeline_index, spec)`` of the map stages in this pass.
        drop_from: ``(pipeline_index, spec)`` of the global stage whose duplicates this pass drops first.
        key_for: ``(pipeline_index, spec)`` of the global stage whose keys this pass adds last.
    """

    index: int
    stages: list[tuple[int, StageSpec]] = field(default_factory=list)
    drop_from: tuple[int, StageSpec] | None = None
    key_for: tuple[int, StageSpec] | None = None

    @property
    def final(self) -> bool:
        return self.key_for is None

    def task_resources(self) -> dict[str, float]:
        """Ray resources of each task of this pass: the most any of its stages needs."""
        resources: dict[str, float] = {}
        for _, spec in self.stages:
            for k, v in spec.task_resources().items():
                resources[k] = max(resources.get(k, 0.0), v)
        return resources


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

    def work(self, seg: int, task: int) -> Path:
        return self.root / "_work" / f"seg{seg}" / f"{task:05d}.parquet"

    def marker(self, seg: int, task: int) -> Path:
        return self.root / "_markers" / f"seg{seg}" / f"{task:05d}.json"

    def dups_dir(self, stage_index: int) -> Path:
        return self.root / "_work" / f"dups-stage{stage_index}"

    def dups_for_task(self, stage_index: int, task: int) -> Path:
        return self.dups_dir(stage_index) / f"_task={task}"

    def global_marker(self, stage_index: int) -> Path:
        return self.root / "_markers" / f"global-stage{stage_index}.json"

    def shard_prefix(self, task: int) -> str:
        return f"{task:05d}-"

    @property
    def shards_dir(self) -> Path:
        return self.root / "shards"

    def decisions(self, seg: int, task: int) -> Path:
        return self.root / "decisions" / f"seg{seg}-{task:05d}.parquet"

    def quarantine(self, task: int) -> Path:
        return self.root / "quarantine" / f"{task:05d}.parquet"


@dataclass
class Plan:
    config: PipelineConfig
    tasks: list[Task]
    segments: list[Segment]
    root: str
    #: ``config.stages`` built, by pipeline index; filled on first use in each process.
    built: list[Stage] | None = field(default=None, repr=False, compare=False)

    @property
    def layout(self) -> Layout:
        return Layout(run_path(self.root))

    def stages(self) -> list[Stage]:
        """``config.stages`` built, shared by everything in this process that asks a stage.

        Built, not set up: ``setup()`` (models) is the shard pass's, once per worker process.
        """
        if self.built is None:
            self.built = [spec.build() for spec in self.config.stages]
        return self.built

    def stage(self, index: int) -> Stage:
        """The built stage at pipeline position ``index``."""
        return self.stages()[index]

    def __getstate__(self) -> dict[str, Any]:
        # A built stage may hold an eval-set index (decontaminate) or centroids (skill_tag), and
        # a set-up one a model: a worker rebuilds its own rather than receive them with each task.
        return {**self.__dict__, "built": None}


def _fixed_prefix(pattern: str) -> str:
    """The part of a glob before its first wildcard, cut back to a directory."""
    cut = min((i for i, ch in enumerate(pattern) if ch in "*?["), default=len(pattern))
    head = pattern[:cut]
    if cut == len(pattern):  # a plain file: its folder is the root
        return head.rsplit("/", 1)[0] + "/" if "/" in head else ""
    return head[: head.rfind("/") + 1] if "/" in head else ""


def expand_inputs(patterns: list[str]) -> list[Task]:
    """Expand globs/URLs into tasks, sorted and numbered; an empty match is an error."""
    found: list[tuple[str, str, int]] = []
    for pattern in patterns:
        fs, _, paths = fsspec.get_fs_token_paths(pattern)
        paths = [p for p in paths if not p.endswith(".tmp")]
        if not paths:
            raise ConfigError(f"input path {pattern!r} matches no file")
        prefix = fs._strip_protocol(_fixed_prefix(pattern)) if _fixed_prefix(pattern) else ""
        for p in sorted(paths):
            info = fs.info(p)
            if info.get("type") == "directory":
                continue
            rel = p[len(prefix):] if prefix and p.startswith(prefix) else p.rsplit("/", 1)[-1]
            full = p if fs.protocol in ("file", ("file", "local")) or "file" in fs.protocol else fs.unstrip_protocol(p)
            found.append((full, rel.lstrip("/"), int(info.get("size") or 0)))
    sources = [s for _, s, _ in found]
    dupes = sorted({s for s in sources if sources.count(s) > 1})
    if dupes:
        raise ConfigError(f"input patterns give files with the same relative name: {dupes[:5]}")
    return [Task(index=i, path=p, source=s, size=n) for i, (p, s, n) in enumerate(found)]


def make_segments(stages: list[StageSpec]) -> list[Segment]:
    """Split the stage list at global stages into shard passes."""
    segments = [Segment(index=0)]
    for i, spec in enumerate(stages):
        if issubclass(get_stage(spec.stage), GlobalStage):
            segments[-1].key_for = (i, spec)
            segments.append(Segment(index=len(segments), drop_from=(i, spec)))
        else:
            segments[-1].stages.append((i, spec))
    return segments


def check_gpu_placement(config: PipelineConfig, segments: list[Segment], stages: list[Stage]) -> None:
    """Refuse a Ray pass whose stage demands CUDA (``device: cuda``) while its tasks ask for no GPU.

    Ray gives a task GPUs only when it asks for them (``num_gpus``, fractions share a GPU) and then
    limits it to those (``CUDA_VISIBLE_DEVICES``); the Ray executor hides every GPU from a task
    that asks for none. A stage's tasks are those of its pass, which ask for the most any stage of
    the pass needs. The local executor runs stages in this process on whatever GPUs it sees, with
    ``num_gpus`` ignored, so there is nothing to place and nothing is checked. ``stages``: the
    built ``config.stages``.
    """
    if config.executor.kind != "ray":
        return
    for seg in segments:
        if seg.task_resources().get("num_gpus", 0.0) > 0:
            continue
        for i, spec in seg.stages:
            demand = stages[i].cuda_demand()
            if demand is None:
                continue
            own = "`num_gpus: 1` on the stage, or " if hasattr(spec.config, "num_gpus") else ""
            raise ConfigError(
                f"stages[{i}] ({spec.stage}): {demand} needs a GPU, but under the ray executor its tasks ask "
                f"for none (num_gpus 0), so they would get no GPU of their own. Set {own}`resources: "
                f"{{num_gpus: 1}}` (a fraction such as 0.5 shares a GPU between tasks), or use device: auto "
                f"(CPU where no GPU is asked for) or device: cpu")


def make_plan(config: PipelineConfig) -> Plan:
    # Validate every stage on the driver (dependencies, model files) before any work starts; the
    # plan keeps them built for everything the driver asks of its stages.
    built = [spec.build() for spec in config.stages]
    segments = make_segments(config.stages)
    check_gpu_placement(config, segments, built)
    out = config.output.dir
    root = out.rstrip("/") if is_url(out) else str(Path(out.removeprefix("file://")).resolve())
    return Plan(config=config, tasks=expand_inputs(config.input.paths), segments=segments, root=root, built=built)
