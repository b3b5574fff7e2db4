"""Typed config loading: unknown keys and stage names are rejected by name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
import yaml

from curation.config import apply_overrides
from curation.errors import ConfigError
from curation.pipeline import PipelineConfig, load_pipeline
from tests.conftest import REPO

BASE = {"name": "t", "input": {"paths": ["x.jsonl"]}, "output": {"dir": "out"}}


def test_quickstart_config_loads() -> None:
    cfg = load_pipeline(Path(__file__).resolve().parents[2] / "pipelines" / "quickstart.yaml")
    assert [s.stage for s in cfg.stages][:2] == ["text_length_v1", "language_id_v1"]
    assert cfg.stages[0].config.min_chars == 200


def test_unknown_top_level_key_lists_valid_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'outptu'.*valid keys: executor, input, name, output, seed"):
        PipelineConfig.from_mapping({**BASE, "outptu": {}})


def test_unknown_stage_param_names_stage_and_valid_keys() -> None:
    data = {**BASE, "stages": [{"stage": "text_length_v1", "min_char": 3}]}
    with pytest.raises(ConfigError, match=r"stages\[0\] \(text_length_v1\): unknown key\(s\) 'min_char'; valid keys: max_chars, min_chars"):
        PipelineConfig.from_mapping(data)


def test_wrong_stage_name_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown stage 'gopher_v1'; valid stages: .*gopher_quality_v1"):
        PipelineConfig.from_mapping({**BASE, "stages": [{"stage": "gopher_v1"}]})


def test_type_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"input.batch_size: expected an integer, got 'big'"):
        PipelineConfig.from_mapping({**BASE, "input": {"paths": ["x"], "batch_size": "big"}})
    with pytest.raises(ConfigError, match=r"need 0 <= min_chars <= max_chars"):
        PipelineConfig.from_mapping({**BASE, "stages": [{"stage": "text_length_v1", "min_chars": 5, "max_chars": 2}]})


def test_a_float_field_takes_exponent_notation_that_pyyaml_reads_as_a_string(tmp_path: Path) -> None:
    # YAML 1.1 needs a dot before the exponent to see a float: PyYAML reads `8e-1` as the string '8e-1'
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(BASE) + "stages:\n- stage: near_dedup_v1\n  threshold: 8e-1\n")
    assert yaml.safe_load(path.read_text())["stages"][0]["threshold"] == "8e-1"
    assert load_pipeline(path).stages[0].config.threshold == 0.8
    data = apply_overrides({**BASE, "stages": [{"stage": "near_dedup_v1"}]}, ["stages.0.threshold=75E-2"])
    assert PipelineConfig.from_mapping(data).stages[0].config.threshold == 0.75
    for bad in ("0.8x", "e-1", "8e", "nan", "inf"):
        with pytest.raises(ConfigError, match=rf"stages\[0\].*threshold: expected a number, got '{bad}'"):
            PipelineConfig.from_mapping({**BASE, "stages": [{"stage": "near_dedup_v1", "threshold": bad}]})
    with pytest.raises(ConfigError, match=r"input.batch_size: expected an integer, got '1e3'"):
        PipelineConfig.from_mapping({**BASE, "input": {"paths": ["x"], "batch_size": "1e3"}})


def test_missing_required_key() -> None:
    with pytest.raises(ConfigError, match=r"missing required key\(s\) 'output'"):
        PipelineConfig.from_mapping({"name": "t", "input": {"paths": ["x"]}})


def test_dotted_overrides_and_roundtrip(tmp_path: Path) -> None:
    data = apply_overrides({**BASE, "stages": [{"stage": "text_length_v1"}]},
                           ["output.dir=/tmp/o", "stages.0.min_chars=7", "executor.kind=local"])
    cfg = PipelineConfig.from_mapping(data)
    assert cfg.output.dir == "/tmp/o" and cfg.stages[0].config.min_chars == 7 and cfg.executor.kind == "local"
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(cfg.to_mapping()))
    assert load_pipeline(path).to_mapping() == cfg.to_mapping()


def test_yaml_python_tags_are_not_executed(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['touch /tmp/pwned']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_pipeline(path)


def test_fingerprint_ignores_executor_section() -> None:
    a = PipelineConfig.from_mapping(BASE)
    b = PipelineConfig.from_mapping({**BASE, "executor": {"kind": "local", "num_cpus": 7}})
    c = PipelineConfig.from_mapping({**BASE, "output": {"dir": "out", "target_shard_bytes": 4096}})
    assert a.fingerprint_data() == b.fingerprint_data() != c.fingerprint_data()


@pytest.mark.parametrize("name", ["quickstart", "preselect_candidates", "rephrase_wrap"])
def test_bundled_pipelines_validate(name: str) -> None:
    from curation.pipeline import load_pipeline

    cfg = load_pipeline(str(REPO / "pipelines" / f"{name}.yaml"), [])
    assert cfg.name == name and all(spec.build() is not None for spec in cfg.stages)


def test_stage_resources_are_validated_kept_and_not_fingerprinted() -> None:
    base = {"name": "r", "input": {"paths": ["x.jsonl"]}, "output": {"dir": "out"},
            "stages": [{"stage": "text_length_v1", "min_chars": 5}]}
    a = PipelineConfig.from_mapping(base)
    with_res = {**base, "stages": [{"stage": "text_length_v1", "min_chars": 5, "resources": {"num_cpus": 2, "memory": 1e9}}]}
    b = PipelineConfig.from_mapping(with_res)
    assert b.stages[0].task_resources() == {"num_cpus": 2.0, "memory": 1e9}
    assert b.to_mapping()["stages"][0]["resources"] == {"num_cpus": 2.0, "memory": 1e9}
    assert a.fingerprint_data() == b.fingerprint_data()  # where and how fast, not what
    c = PipelineConfig.from_mapping({**base, "stages": [{"stage": "text_length_v1", "resources": {"num_cpus": 1, "concurrency": 3}}]})
    assert c.stages[0].concurrency == 3 and c.stages[0].task_resources() == {"num_cpus": 1.0}
    assert a.stages[0].concurrency is None
    for bad in ({"concurrency": 0}, {"concurrency": 1.5}, {"num_cpus": -1}, {"memory": "lots"}):
        with pytest.raises(ConfigError, match=r"resources\.(concurrency|num_cpus|memory)"):
            PipelineConfig.from_mapping({**base, "stages": [{"stage": "text_length_v1", "resources": bad}]})
    with pytest.raises(ConfigError, match=r"unknown keys \['gpus'\]"):
        PipelineConfig.from_mapping({**base, "stages": [{"stage": "text_length_v1", "resources": {"gpus": 1}}]})
    from curation.stages.scoring.lm_loss import LMLossConfig, LMSpec
    from curation.pipeline import StageSpec

    spec = StageSpec(stage="lm_loss_v1", config=LMLossConfig(models=[LMSpec(name="m", path="p")], num_gpus=1))
    assert spec.task_resources() == {"num_gpus": 1}


@pytest.mark.parametrize(("stage", "key", "valid"), [
    ("exact_dedup_v1", "normalize", "['none', 'whitespace', 'lower']"),
    ("near_dedup_v1", "on_mass_removal", "['fail', 'warn']"),
    ("url_filter_v1", "missing_url", "['keep', 'drop']"),
    ("gopher_quality_v1", "implementation", "['datatrove', 'fast']"),
])
def test_a_bad_choice_names_the_dotted_key_and_the_valid_values(stage: str, key: str, valid: str) -> None:
    import re

    with pytest.raises(ConfigError) as err:
        PipelineConfig.from_mapping({**BASE, "stages": [{"stage": "text_length_v1"}, {"stage": stage, key: "bogus"}]})
    assert str(err.value) == f"config.stages[1] ({stage}).{key}: 'bogus' is not one of {valid}"
    # Built in Python (no loader in between), the declared Literal is enforced all the same.
    from curation.registry import get_stage

    with pytest.raises(ValueError, match=re.escape(f"{key}: 'bogus' is not one of {valid}")):
        get_stage(stage).Config(**{key: "bogus"})


@dataclass
class _Choices:
    a: Literal["x", "y"] | None = None
    b: Literal["x"] | str = "free text"


def test_check_choices_covers_optional_literals_and_leaves_open_unions_alone() -> None:
    from curation.config import check_choices

    C = _Choices
    check_choices(C())
    check_choices(C(a="y", b="anything"))
    with pytest.raises(ValueError, match=r"a: 'z' is not one of \['x', 'y', None\]"):
        check_choices(C(a="z"))


def test_executor_kind_choice() -> None:
    with pytest.raises(ConfigError, match=r"^config\.executor\.kind: 'slurm' is not one of \['local', 'ray'\]$"):
        PipelineConfig.from_mapping({**BASE, "executor": {"kind": "slurm"}})


def test_resources_round_trip_and_errors() -> None:
    from curation.pipeline import Resources

    stage = {"stage": "text_length_v1", "resources": {"num_gpus": 0.5, "concurrency": 2.0}}  # 2.0: YAML compat
    cfg = PipelineConfig.from_mapping({**BASE, "stages": [stage]})
    assert cfg.stages[0].resources == Resources(num_gpus=0.5, concurrency=2)
    assert cfg.stages[0].concurrency == 2 and cfg.stages[0].task_resources() == {"num_gpus": 0.5}
    again = PipelineConfig.from_mapping(yaml.safe_load(yaml.safe_dump(cfg.to_mapping())))
    assert again.stages[0].resources == cfg.stages[0].resources
    assert "resources" not in PipelineConfig.from_mapping({**BASE, "stages": [{"stage": "text_length_v1"}]}) \
        .to_mapping()["stages"][0]
    with pytest.raises(ConfigError, match=r"^config\.stages\[0\]\.resources\.concurrency: expected a positive "
                                          r"integer, got 1\.5$"):
        PipelineConfig.from_mapping({**BASE, "stages": [{**stage, "resources": {"concurrency": 1.5}}]})
    with pytest.raises(ConfigError, match=r"^config\.stages\[0\]\.resources: expected a mapping with keys "
                                          r"\['concurrency', 'memory', 'num_cpus', 'num_gpus'\], got list$"):
        PipelineConfig.from_mapping({**BASE, "stages": [{**stage, "resources": [1]}]})
    with pytest.raises(ValueError, match=r"num_cpus: expected a non-negative number, got -1"):
        Resources(num_cpus=-1)
