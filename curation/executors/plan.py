"""The execution plan: input tasks, shard passes ("segments") split at global stages, run layout.

A plan is plain data, pickled to workers. It builds each stage once per process (``Plan.stage``);
the built stages are left out of the pickle and rebuilt on each worker, so indexes or models a
stage loads never travel through the object store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.config import fingerprint
from curation.errors import ConfigError
from curation.io.inputs import Task, expand_inputs
from curation.io.layout import Layout
from curation.io.storage import is_url, run_path
from curation.pipeline import PipelineConfig, StageSpec
from curation.stages.base import Stage
from curation.stages.global_stage import GlobalStage
from curation.registry import get_stage


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

    def task_specs(self) -> list[tuple[int, StageSpec]]:
        """The stages whose code runs in this pass's tasks: its map stages, and the next global
        stage, whose ``add_keys`` runs last in each task (``semantic_dedup_v1`` embeds there)."""
        return [*self.stages, *([self.key_for] if self.key_for is not None else [])]

    def task_resources(self) -> dict[str, float]:
        """Ray resources of each task of this pass: the most any of its stages needs."""
        resources: dict[str, float] = {}
        for _, spec in self.task_specs():
            for k, v in spec.task_resources().items():
                resources[k] = max(resources.get(k, 0.0), v)
        return resources


@dataclass
class Plan:
    config: PipelineConfig
    tasks: list[Task]
    segments: list[Segment]
    root: str
    #: ``config.stages`` built, by pipeline index; filled on first use in each process.
    built: list[Stage] | None = field(default=None, repr=False, compare=False)
    _fingerprint: str | None = field(default=None, repr=False, compare=False)

    @property
    def layout(self) -> Layout:
        return Layout(run_path(self.root))

    def config_fingerprint(self) -> str:
        """Fingerprint of what decides the output (computed once per process copy of the plan)."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.config.fingerprint_data())
        return self._fingerprint

    def stages(self) -> list[Stage]:
        """``config.stages`` built, shared by everything in this process that asks a stage.

        Built, not set up: ``setup()`` (models) is the shard pass's, once per worker process.
        """
        if self.built is None:
            self.built = [spec.built() for spec in self.config.stages]
        return self.built

    def stage(self, index: int) -> Stage:
        """The built stage at pipeline position ``index``."""
        return self.stages()[index]

    def __getstate__(self) -> dict[str, Any]:
        # A built stage may hold an eval-set index (decontaminate) or centroids (skill_tag), and
        # a set-up one a model: a worker rebuilds its own rather than receive them with each task.
        return {**self.__dict__, "built": None}


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
        for i, spec in seg.task_specs():
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
    built = [spec.built() for spec in config.stages]
    segments = make_segments(config.stages)
    check_gpu_placement(config, segments, built)
    out = config.output.dir
    root = out.rstrip("/") if is_url(out) else str(Path(out.removeprefix("file://")).resolve())
    return Plan(config=config, tasks=expand_inputs(config.input.paths), segments=segments, root=root, built=built)
