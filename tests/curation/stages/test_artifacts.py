"""Stages declare the files behind their config (``Stage.artifacts``); the run identity digests them."""

from __future__ import annotations

from pathlib import Path

from curation.executors.base import artifact_digests
from curation.pipeline import PipelineConfig
from curation.stages.base import config_paths
from curation.stages.scoring.lm_loss import LMLoss, LMLossConfig, LMSpec


def test_declared_artifacts_are_digested_and_nothing_else(tmp_path: Path) -> None:
    model = tmp_path / "lm"
    model.mkdir()
    (model / "config.json").write_text("{}")
    stage = LMLoss(LMLossConfig(models=[LMSpec(name="a", path=str(model)), LMSpec(name="b", path="org/hub-id")]))
    assert stage.artifacts() == {"models.0.path": str(model), "models.1.path": "org/hub-id"}
    cfg = PipelineConfig.from_mapping({
        "name": "t", "input": {"paths": ["x.jsonl"]}, "output": {"dir": str(tmp_path / "out")},
        "stages": [{"stage": "text_length_v1"},
                   {"stage": "lm_loss_v1", "models": [{"name": "a", "path": str(model)}, {"name": "b", "path": "org/x"}]},
                   {"stage": "skill_tag_v1", "source": "fasttext", "model": str(model / "config.json")}]})
    digests = artifact_digests(cfg)
    assert set(digests) == {"stages.1.models.0.path", "stages.2.model"}  # the hub id has no local file
    (model / "config.json").write_text('{"retrained": true}')
    assert artifact_digests(cfg)["stages.2.model"] != digests["stages.2.model"]


def test_config_paths_walks_lists_and_skips_unset_and_urls() -> None:
    cfg = {"a": None, "b": "s3://bucket/m.bin", "c": "", "items": [{"p": "x"}, {"p": None}, {"p": "y"}]}
    assert config_paths(cfg, "a", "b", "c", "items.*.p") == {"items.0.p": "x", "items.2.p": "y"}
