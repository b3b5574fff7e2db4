"""The plan builds each stage once per process, and does not ship its built stages to workers."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import pytest

from curation.executors.plan import make_plan
from curation.pipeline import PipelineConfig, StageSpec
from curation.stages.base import Stage
from curation.stages.dedup.exact import ExactDedup
from tests.conftest import pipeline_dict
from tests.curation.executors.runs import content, run_pipeline


def test_a_local_run_builds_each_stage_once(tiny_corpus: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    builds: Counter[str] = Counter()
    real_build = StageSpec.build

    def counted(spec: StageSpec) -> Stage:
        builds[spec.stage] += 1
        return real_build(spec)

    monkeypatch.setattr(StageSpec, "build", counted)
    out = tmp_path / "run"
    run_pipeline(pipeline_dict([str(tiny_corpus / "*")], out))
    # Validation, run identity, both passes' schemas, set-up, keys, the global step and the
    # duplicates' removal all ask the plan's stages: two passes over three files, one build each.
    assert builds == {"text_length_v1": 1, "exact_dedup_v1": 1}
    assert [r[0] for r in content(out)] == ["a1", "a2", "b2", "c2"]


def test_a_pickled_plan_leaves_its_built_stages_behind(tiny_corpus: Path, tmp_path: Path) -> None:
    plan = make_plan(PipelineConfig.from_mapping(pipeline_dict([str(tiny_corpus / "*")], tmp_path / "run")))
    assert all("_built" in spec.__dict__ for spec in plan.config.stages)  # built once, on the driver
    assert [s.name for s in plan.stages()] == ["text_length_v1", "exact_dedup_v1"]
    first = plan.stage(1)
    copy = pickle.loads(pickle.dumps(plan))
    assert not any("_built" in spec.__dict__ for spec in copy.config.stages)  # a worker builds its own, on first use
    assert plan.stage(1) is first  # pickling took nothing from the driver's plan
    rebuilt = copy.stage(1)
    assert isinstance(rebuilt, ExactDedup) and rebuilt is not first
    assert rebuilt.num_buckets == 4 and copy.stage(1) is rebuilt


def test_resources_and_pickles_use_the_spec_built_once(tiny_corpus: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Asking a pass's Ray resources builds nothing new (a decontamination stage builds an index when
    constructed), and a pickled spec arrives without its built stage."""
    cfg = PipelineConfig.from_mapping(pipeline_dict([str(tiny_corpus / "*")], tmp_path / "run"))
    plan = make_plan(cfg)
    builds: Counter[str] = Counter()
    real_build = StageSpec.build
    monkeypatch.setattr(StageSpec, "build", lambda spec: (builds.update([spec.stage]), real_build(spec))[1])
    for seg in plan.segments:
        seg.task_resources()
    assert plan.config.stages[0].built() is plan.stage(0) and not builds
    copy = pickle.loads(pickle.dumps(plan.config.stages[1]))
    assert "_built" not in copy.__dict__ and copy == plan.config.stages[1]
    assert copy.built() is not plan.stage(1) and builds == {"exact_dedup_v1": 1}
