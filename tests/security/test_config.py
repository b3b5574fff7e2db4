"""Submitted and ``curate run`` configs: a YAML alias bomb is refused before any expansion, and malformed
``-o`` overrides are one-line errors naming the dotted path (422 from the service, exit 2 from the CLI)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from curation.config import apply_overrides, parse_mapping
from curation.errors import ConfigError
from tests.conftest import REPO, pipeline_dict
from tests.security.conftest import READ_TOKEN, SUBMIT_TOKEN

SUBMIT = {"Authorization": f"Bearer {SUBMIT_TOKEN}"}
READ = {"Authorization": f"Bearer {READ_TOKEN}"}


def alias_bomb(levels: int = 9) -> str:
    """Billion laughs: each level is a list of nine aliases of the one before, 9**levels leaves in ~900 bytes."""
    lines = ['name: bomb', 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    lines.append(f"stages: [{{stage: text_length_v1, min_chars: *a{levels - 1}}}]")
    return "\n".join(lines) + "\n"


def _curate_run(config: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "curation.cli", "run", str(config), "-o", "executor.kind=local"]
    for o in overrides:
        cmd += ["-o", o]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "COLUMNS": "400"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def _one_line_exit_2(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and len(res.stdout.strip().splitlines()) == 1, res.stdout + res.stderr
    return res.stdout.strip()


def test_alias_bomb_is_refused_in_under_a_second() -> None:
    text = alias_bomb(9)
    assert len(text.encode()) < 1000
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"config_yaml: line 2: YAML anchors and aliases .* are not accepted"):
        parse_mapping(text, "config_yaml")
    assert time.perf_counter() - t0 < 1.0


def test_alias_bomb_is_refused_by_the_service(jobs_client, tmp_path: Path) -> None:  # noqa: ANN001 - fixture
    t0 = time.perf_counter()
    r = jobs_client.post("/api/runs", headers=SUBMIT, json={"config_yaml": alias_bomb(9), "run_id": "bomb"})
    assert time.perf_counter() - t0 < 1.0
    assert r.status_code == 422, r.text
    (d,) = r.json()["detail"]
    assert d["loc"] == ["body", "config_yaml"] and "anchors and aliases" in d["msg"] and "\n" not in d["msg"]
    assert jobs_client.get("/api/jobs", headers=READ).json() == {"jobs": []}


def test_alias_bomb_is_refused_by_curate_run(tmp_path: Path) -> None:
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(alias_bomb(9))
    line = _one_line_exit_2(_curate_run(cfg))
    assert "bomb.yaml: line 2: YAML anchors and aliases" in line


def test_an_alias_in_an_override_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="anchors and aliases"):
        apply_overrides({"a": 1}, ["b=[&x [1], *x]"])


@pytest.mark.parametrize("override, path", [
    ("stages.x.min_score=1", "stages.x needs a list index"),
    ("stages.7.min_chars=1", "stages.7: index 7 is out of range"),
    ("name.x=1", "name is a str value, which has no key 'x'"),
    ("stages..min_chars=1", "has an empty part"),
    ("input.batch_size=[1,", "the value is not valid YAML"),
])
def test_malformed_override_is_a_one_line_error(override: str, path: str) -> None:
    data = pipeline_dict(["in/*.jsonl"], Path("out"))
    with pytest.raises(ConfigError, match="^override " + repr(override).replace("[", r"\[") + ": ") as exc:
        apply_overrides(data, [override])
    assert path in str(exc.value) and "\n" not in str(exc.value)


def test_malformed_override_is_422_from_the_service(jobs_client, tmp_path: Path) -> None:  # noqa: ANN001
    text = yaml.safe_dump(pipeline_dict([str(tmp_path / "in" / "*.jsonl")], tmp_path / "out"))
    r = jobs_client.post("/api/runs", headers=SUBMIT,
                         json={"config_yaml": text, "run_id": "r1", "overrides": ["stages.x.min_score=1"]})
    assert r.status_code == 422, r.text
    (d,) = r.json()["detail"]
    assert d["loc"] == ["body", "config_yaml"] and "stages.x needs a list index" in d["msg"]


def test_malformed_override_exits_2_from_curate_run(tmp_path: Path) -> None:
    cfg = tmp_path / "p.yaml"
    cfg.write_text(yaml.safe_dump(pipeline_dict([str(tmp_path / "in" / "*.jsonl")], tmp_path / "out")))
    line = _one_line_exit_2(_curate_run(cfg, "stages.x.min_score=1"))
    assert "override 'stages.x.min_score=1': stages is a list: stages.x needs a list index" in line


def test_nesting_deeper_than_the_parser_is_a_refusal_not_a_500(jobs_client) -> None:  # noqa: ANN001 - fixture
    deep = "a: " + "[" * 100_000
    with pytest.raises(ConfigError, match="nested too deeply"):
        parse_mapping(deep, "config")
    with pytest.raises(ConfigError, match="nested too deeply"):
        apply_overrides({"x": 1}, ["x=" + "[" * 100_000])
    r = jobs_client.post("/api/runs", headers=SUBMIT, json={"config_yaml": deep, "run_id": "deep"})
    assert r.status_code == 422 and "nested too deeply" in r.json()["detail"][0]["msg"], r.text
