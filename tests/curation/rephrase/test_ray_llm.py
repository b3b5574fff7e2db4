"""The Ray Data LLM (vLLM) path: row mapping always; the engine itself only where vllm imports."""

from __future__ import annotations

import importlib.util

import pandas as pd
import pytest

from curation.rephrase.backends import BackendConfig, SamplingParams
from curation.rephrase.checks import OutputChecks
from curation.rephrase.ray_llm import assemble, build_vllm_processor, chunk_rows, make_preprocess, postprocess
from curation.rephrase.templates import BUILTIN
from tests.conftest import PROSE


def test_rows_map_through_pre_and_post_processing_and_reassemble() -> None:
    t = BUILTIN["wrap_medium"]
    rows = chunk_rows({"id": "d0", "text": PROSE[0] + "\n\n" + PROSE[1]}, chunk_tokens=120)
    assert [r["chunk"] for r in rows] == [0, 1] and rows[0]["n_chunks"] == 2
    pre = make_preprocess(t, SamplingParams(temperature=0.0, max_tokens=64))(rows[0])
    assert pre["messages"][1]["content"].endswith(rows[0]["chunk_text"]) and pre["sampling_params"]["max_tokens"] == 64
    outs = [postprocess({**r, "generated_text": f"rewrite {r['chunk']} of the paragraph about things.",
                         "num_input_tokens": 50, "num_generated_tokens": 9, "finish_reason": "stop"}) for r in rows]
    doc = assemble(pd.DataFrame(outs[::-1]), t, OutputChecks(min_ratio=0.05), "m")
    rec = doc.iloc[0].to_dict()
    assert rec["text"] == "rewrite 0 of the paragraph about things.\n\nrewrite 1 of the paragraph about things."
    assert rec["reason"] is None and rec["rephrase_tokens_out"] == 18 and rec["id"] == "d0#wrap_medium"
    bad = assemble(pd.DataFrame([{**outs[0], "finish_reason": "length"}]), t, OutputChecks(), "m").iloc[0]
    assert bad["reason"] == "truncated" and bad["text"] == ""


def test_processor_builds_from_the_documented_config() -> None:
    # ray.data.llm builds the processor without vllm; its engine runs only where vllm is installed.
    proc = build_vllm_processor(BUILTIN["wrap_qa"], BackendConfig(kind="vllm", model="/models/tiny"), SamplingParams(),
                                use_gpu=False)
    assert proc.config.model_source == "/models/tiny" and proc.config.log_engine_metrics is False
    assert proc.config.placement_group_config["bundles"] == [{"CPU": 1.0, "GPU": 0.0}]  # never waits for a GPU
    assert "vLLMEngineStage" in proc.list_stage_names()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")
@pytest.mark.gpu
def test_vllm_engine_rephrases_a_dataset(tmp_path) -> None:  # noqa: ANN001
    import ray

    from curation.rephrase.ray_llm import rephrase_dataset
    from curation.testing.tiny import make_lm, train_tokenizer

    tok = train_tokenizer(PROSE * 3)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    model = make_lm(tmp_path / "m", tok, n_layer=1, n_embd=32, train_steps=0, seed=0)
    ds = ray.data.from_items([{"id": f"d{i}", "text": t} for i, t in enumerate(PROSE)])
    out = rephrase_dataset(ds, BUILTIN["wrap_easy"], BackendConfig(kind="vllm", model=str(model),
                                                                    extra={"max_model_len": 512, "enforce_eager": True}),
                           SamplingParams(max_tokens=16), checks=OutputChecks(min_ratio=0, reject_truncated=False))
    rows = out.take_all()
    assert sorted(r["rephrase_of"] for r in rows) == ["d0", "d1", "d2"]
