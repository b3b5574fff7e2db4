"""GPU placement under Ray is explicit: a stage that demands CUDA must ask for GPUs (checked when the run is
planned), and a Ray task that asks for none sees no GPU (so ``device: auto`` means CPU there)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.errors import ConfigError
from curation.executors.plan import Plan, make_plan
from curation.pipeline import PipelineConfig, load_pipeline
from curation.registry import register_stage
from curation.stages.base import Stage, StageResult, split
from tests.conftest import PROSE, REPO, pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline


@dataclass(kw_only=True)
class SeenEnvConfig:
    """Its own config class: unpickling a plan on a Ray worker imports this module, which registers the stage."""

    column: str = "seen_cuda_visible"


@register_stage("test_seen_env_v1")
class SeenEnv(Stage):
    """Records, per document, the ``CUDA_VISIBLE_DEVICES`` its process had when the stage was set up."""

    Config = SeenEnvConfig

    def setup(self) -> None:
        self.seen = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")

    def output_columns(self) -> dict[str, pa.DataType]:
        return {self.config.column: pa.string()}

    def process(self, batch: pa.Table) -> StageResult:
        batch = batch.append_column(self.config.column, pa.array([self.seen] * len(batch), pa.string()))
        return split(batch, np.ones(len(batch), dtype=bool), [None] * len(batch))


def lm(**params: Any) -> dict[str, Any]:
    return {"stage": "lm_loss_v1", "models": [{"name": "m", "path": "unused/never-loaded"}], **params}


def plan_for(tmp_path: Path, stages: list[dict[str, Any]], kind: str = "ray") -> Plan:
    inp = write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": "a", "text": PROSE[0]}])
    return make_plan(PipelineConfig.from_mapping(pipeline_dict([str(inp)], tmp_path / "out", stages, kind=kind)))


def test_cuda_stage_whose_ray_tasks_ask_for_no_gpu_is_refused_at_plan_time(tmp_path: Path) -> None:
    stages = [{"stage": "text_length_v1", "min_chars": 5}, lm(device="cuda")]
    with pytest.raises(ConfigError) as err:
        plan_for(tmp_path, stages)
    # Not refused: device auto (CPU where no GPU is asked for), and the local executor, which runs stages in
    # this process on whatever GPUs it sees (num_gpus means nothing there): no Ray placement to check.
    plan_for(tmp_path, [stages[0], lm(device="auto")])
    assert plan_for(tmp_path, stages, kind="local").segments[0].stages[1][1].config.device == "cuda"
    msg = str(err.value)
    assert "stages[1] (lm_loss_v1)" in msg and "device: cuda" in msg
    assert "num_gpus: 1" in msg and "resources: {num_gpus: 1}" in msg  # the fix, both ways to say it
    # resources.num_gpus overrides the stage's own num_gpus: 0 there takes the GPU away again.
    with pytest.raises(ConfigError, match=r"stages\[0\] \(lm_loss_v1\): device: cuda"):
        plan_for(tmp_path, [lm(device="cuda", num_gpus=1, resources={"num_gpus": 0})])


def test_every_cuda_demanding_stage_kind_is_checked(tmp_path: Path) -> None:
    cents = tmp_path / "centroids.json"
    cents.write_text(json.dumps({"centroids": [[1.0, 0.0], [0.0, 1.0]], "names": ["a", "b"]}))
    skill = {"stage": "skill_tag_v1", "source": "embedding", "centroids": str(cents), "device": "cuda"}
    with pytest.raises(ConfigError, match=r"stages\[0\] \(skill_tag_v1\): device: cuda .*num_gpus: 1"):
        plan_for(tmp_path, [skill])
    vllm = {"stage": "rephrase_v1", "templates": ["wrap_medium"], "backend": {"kind": "vllm", "model": "m"}}
    with pytest.raises(ConfigError, match=r"stages\[0\] \(rephrase_v1\): backend.kind: vllm") as err:
        plan_for(tmp_path, [vllm])
    assert "`num_gpus: 1` on the stage" not in str(err.value)  # rephrase_v1 has no num_gpus field: resources only
    hf = {**vllm, "backend": {"kind": "transformers", "model": "m", "device": "cuda"}}
    with pytest.raises(ConfigError, match=r"stages\[0\] \(rephrase_v1\): backend.device: cuda"):
        plan_for(tmp_path, [hf])
    # What needs no GPU of its own plans without one: CPU vLLM, a remote server, auto, cpu.
    plan_for(tmp_path, [{**vllm, "backend": {"kind": "vllm", "model": "m", "device": "cpu"}}])
    plan_for(tmp_path, [{**vllm, "backend": {"kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}}])
    plan_for(tmp_path, [{**skill, "device": "auto"}, lm(device="cpu")])


def test_cuda_stage_with_a_gpu_share_is_accepted_and_its_pass_asks_for_it(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, [lm(device="cuda", num_gpus=0.5)])
    assert plan.segments[0].task_resources() == {"num_gpus": 0.5}
    plan = plan_for(tmp_path, [lm(device="cuda", resources={"num_gpus": 0.5, "num_cpus": 1})])
    assert plan.segments[0].task_resources() == {"num_gpus": 0.5, "num_cpus": 1.0}
    # The check is per pass: a stage shares its pass's tasks, which ask for the most any stage needs.
    cents = tmp_path / "centroids.json"
    cents.write_text(json.dumps({"centroids": [[1.0, 0.0]], "names": ["a"]}))
    skill = {"stage": "skill_tag_v1", "source": "embedding", "centroids": str(cents), "device": "cuda"}
    assert plan_for(tmp_path, [lm(num_gpus=1), skill]).segments[0].task_resources() == {"num_gpus": 1.0}
    # ... but not across a global stage, which starts a new pass whose tasks ask for nothing.
    with pytest.raises(ConfigError, match=r"stages\[2\] \(skill_tag_v1\)"):
        plan_for(tmp_path, [lm(num_gpus=1), {"stage": "exact_dedup_v1"}, skill])


def test_preselect_candidates_yaml_asks_for_a_gpu_and_passes_the_rule(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": "a", "text": PROSE[0]}])
    where = [f"input.paths=[{inp}]", f"output.dir={tmp_path / 'out'}"]
    path = REPO / "pipelines" / "preselect_candidates.yaml"
    cfg = load_pipeline(path, where)
    assert cfg.executor.kind == "ray"
    assert make_plan(cfg).segments[0].task_resources() == {"num_gpus": 1.0}
    assert make_plan(load_pipeline(path, [*where, "stages.1.device=cuda"])).segments[0].task_resources()["num_gpus"] == 1
    with pytest.raises(ConfigError, match=r"stages\[1\] \(lm_loss_v1\): device: cuda"):
        make_plan(load_pipeline(path, [*where, "stages.1.device=cuda", "stages.1.num_gpus=0"]))
    assert make_plan(load_pipeline(path, [*where, "stages.1.num_gpus=0"])).segments[0].task_resources() == {}


@pytest.mark.ray
@pytest.mark.slow
def test_ray_task_that_asked_for_no_gpu_sees_cuda_hidden(ray_cluster: None, tiny_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run_pipeline(pipeline_dict([str(tiny_corpus / "*")], out, [{"stage": "test_seen_env_v1"}], kind="ray"))
    assert res.manifest["totals"]["docs_out"] == 7
    seen = {v for f in (out / "shards").glob("*.parquet") for v in pq.read_table(f).column("seen_cuda_visible").to_pylist()}
    assert seen == {""}  # blank: torch.cuda.is_available() is False, so device: auto means CPU
    assert os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>") != ""  # the driver's own view is left alone


@pytest.mark.ray
@pytest.mark.timeout(60)
def test_pass_asking_for_gpus_on_a_local_cluster_without_any_fails_fast(ray_cluster: None, tiny_corpus: Path,
                                                                      tmp_path: Path) -> None:
    stages = [{"stage": "test_seen_env_v1", "resources": {"num_gpus": 0.5}}]
    with pytest.raises(ConfigError, match=r"stages\[0\] \(test_seen_env_v1\): each task asks for 0.5 GPU\(s\) but the "
                                          r"Ray cluster has 0; set num_gpus: 0"):
        run_pipeline(pipeline_dict([str(tiny_corpus / "*")], tmp_path / "out", stages, kind="ray"))


@dataclass(kw_only=True)
class SeenPidConfig:
    column: str = "seen_pid"


@register_stage("test_seen_pid_v1")
class SeenPid(Stage):
    """Records, per document, the process id and ``CUDA_VISIBLE_DEVICES`` of the task that processed it."""

    Config = SeenPidConfig

    def output_columns(self) -> dict[str, pa.DataType]:
        return {self.config.column: pa.string()}

    def process(self, batch: pa.Table) -> StageResult:
        seen = f"{os.getpid()}:{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}"
        batch = batch.append_column(self.config.column, pa.array([seen] * len(batch), pa.string()))
        return split(batch, np.ones(len(batch), dtype=bool), [None] * len(batch))


GPU_PASS_SCRIPT = """
import json, sys
import ray
import tests.curation.executors.test_gpu_placement  # registers the test stages
from tests.conftest import pipeline_dict
from tests.curation.executors.runs import run_pipeline
ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, logging_level="ERROR")  # logical GPUs: Ray assigns ids
cfg = pipeline_dict([sys.argv[1]], sys.argv[2], [{"stage": "test_seen_pid_v1", "resources": {"num_gpus": 1}}],
                    kind="ray")
cfg["executor"]["concurrency"] = 1  # one task at a time: a reusable worker would run all three
run_pipeline(cfg)
"""


@pytest.mark.slow
@pytest.mark.ray
def test_gpu_tasks_get_a_fresh_worker_process_each(tiny_corpus: Path, tmp_path: Path) -> None:
    """Each task of a GPU pass runs in its own worker process with the GPU Ray assigned it (torch keeps the GPU a
    process first used, so a reused worker would stay on its first GPU). Logical GPUs on a CPU machine suffice:
    Ray assigns their ids and sets CUDA_VISIBLE_DEVICES the same way."""
    import subprocess
    import sys

    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run([sys.executable, "-c", GPU_PASS_SCRIPT, str(tiny_corpus / "*"), str(out)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    seen = [v for f in sorted((out / "shards").glob("*.parquet")) for v in pq.read_table(f).column("seen_pid").to_pylist()]
    per_task = {v for v in seen}
    assert len(per_task) == 3, per_task  # three input files = three tasks, three processes
    assert {v.split(":")[1] for v in per_task} <= {"0", "1"}  # each saw exactly the GPU Ray assigned it
