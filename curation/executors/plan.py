"""The execution plan: input tasks, shard passes ("segments") split at global stages, run layout.

A plan is plain data, pickled to workers, and owns its stages: everything that asks a stage
(executors, shard tasks, the planner) asks the plan. The built stage of each spec is kept on the
spec (``StageSpec.built``), left out of the pickle and rebuilt on each worker, so indexes or models
a stage loads never travel through the object store. The set-up stages of each pass are kept per
process here (``Plan.set_up``), because a Ray worker gets a fresh copy of the plan with every task
and must not load its models again for each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from curation.config import fingerprint
from curation.errors import ConfigError
from curation.io.inputs import Task, expand_inputs
from curation.io.layout import Layout
from curation.io.storage import is_url, run_path
from curation.pipeline import PipelineConfig, StageSpec
from curation.schema import base_schema
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


#: The set-up stages of each pass in this process, by (plan root, pass, config fingerprint). Only
#: ``Plan.set_up`` and ``Plan.forget`` touch it. The config's fingerprint is in the key: one process
#: may run another config into the same directory (``--overwrite``), and must not reuse the first
#: config's stages there.
_SET_UP: dict[tuple[str, int, str], list[Stage]] = {}


@dataclass
class Plan:
    config: PipelineConfig
    tasks: list[Task]
    segments: list[Segment]
    root: str
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

        Built, not set up: ``setup()`` (models) is the shard pass's, once per worker process
        (``set_up``). Each is its spec's (``StageSpec.built``), so resources and artifact digests
        asked of the spec see the same object.
        """
        return [spec.built() for spec in self.config.stages]

    def stage(self, index: int) -> Stage:
        """The built stage at pipeline position ``index``."""
        return self.config.stages[index].built()

    def global_stage(self, index: int) -> GlobalStage:
        """The built global stage at pipeline position ``index``."""
        stage = self.stage(index)
        assert isinstance(stage, GlobalStage)
        return stage

    def segment_schema(self, seg: Segment) -> pa.Schema:
        """Schema of a pass's output: base columns, every stage column so far, internal keys."""
        extra: dict[str, pa.DataType] = {}
        for s in self.segments[: seg.index + 1]:
            if s.drop_from is not None:
                extra.update(self.stage(s.drop_from[0]).output_columns())
            for i, _ in s.stages:
                extra.update(self.stage(i).output_columns())
        if seg.key_for is None:
            return base_schema(extra)
        gstage = self.global_stage(seg.key_for[0])
        schema = base_schema(extra, internal=True)
        for name, dtype in gstage.key_columns().items():
            schema = schema.append(pa.field(name, dtype))
        return schema

    def set_up(self, seg: Segment) -> list[Stage]:
        """The pass's map stages, set up once per process (models load once per worker).

        The plan's own stage objects when first set up in this process; a later copy of the plan
        (the next task on a Ray worker) gets those same set-up objects back.
        """
        key = (self.root, seg.index, self.config_fingerprint())
        if key not in _SET_UP:
            stages = [self.stage(i) for i, _ in seg.stages]
            for stage in stages:
                stage.setup()
            _SET_UP[key] = stages
        return _SET_UP[key]

    def forget(self) -> None:
        """Drop this process's set-up stages of this plan (its models), e.g. once a throw-away run is done."""
        for key in [k for k in _SET_UP if k[0] == self.root and k[2] == self.config_fingerprint()]:
            del _SET_UP[key]


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
    # Validate every stage on the driver (dependencies, model files) before any work starts; their
    # specs keep them built for everything the driver asks of the plan's stages.
    built = [spec.built() for spec in config.stages]
    segments = make_segments(config.stages)
    check_gpu_placement(config, segments, built)
    out = config.output.dir
    root = out.rstrip("/") if is_url(out) else str(Path(out.removeprefix("file://")).resolve())
    return Plan(config=config, tasks=expand_inputs(config.input.paths), segments=segments, root=root)
