"""rephrase_v1 with backend vllm on vLLM's real engine (CPU build), against the transformers backend.

One engine for the whole session (same model and engine arguments everywhere). Greedy decoding of
the same float32 weights on CPU: both engines pick the same tokens except at near-ties of the top
two logits, which ``test_engine_agrees_with_transformers_token_by_token`` measures and tolerates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from curation.rephrase.backends import BackendConfig, BackendError, Generation, SamplingParams, make_backend
from curation.rephrase.checks import OutputChecks
from curation.rephrase.chunking import chunk_text, hf_counter
from curation.rephrase.templates import BUILTIN
from curation.stages.rephrase.stage import Rephrase, RephraseConfig
from tests.conftest import PROSE, pipeline_dict, write_jsonl
from tests.curation.executors.runs import content, run_pipeline
from tests.vllm.conftest import ENGINE

# Everything but truncation is lenient: a random tiny model writes gibberish, and the decisions to
# compare are the engine's (stopped or truncated), not the prose checks.
TRUNCATION_ONLY = OutputChecks(min_ratio=0.0, max_ratio=1e9, leak_ngram=10**6, reject_truncated=True)
TEXTS = [PROSE[0] + "\n\n" + PROSE[1], PROSE[2], PROSE[1][:150]]
_PROVENANCE = ["rephrase_of", "rephrase_template", "rephrase_model", "rephrase_params", "rephrase_prompt_hash",
               "rephrase_tokens_in", "rephrase_tokens_out", "rephrase_cached_chunks", "rephrase_pylint", "_row"]


def batch(texts: list[str]) -> pa.Table:
    return pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": pa.array(texts, pa.large_string()),
                     "_task": pa.array([0] * len(texts), pa.int32()), "_row": pa.array(range(len(texts)), pa.int64())})


def vllm_cfg(model: Path) -> BackendConfig:
    return BackendConfig(kind="vllm", model=str(model), device="cpu", extra=dict(ENGINE))


def hf_cfg(model: Path) -> BackendConfig:
    return BackendConfig(kind="transformers", model=str(model), device="cpu", batch_size=1)


def stage(backend: BackendConfig, max_tokens: int = 8, checks: OutputChecks = TRUNCATION_ONLY, **kw: Any) -> Rephrase:
    st = Rephrase(RephraseConfig(templates=["wrap_medium", "wrap_qa"], backend=backend, checks=checks,
                                 sampling=SamplingParams(temperature=0.0, max_tokens=max_tokens), **kw))
    st.setup()
    return st


def no_seconds(details: str | None) -> dict[str, Any] | None:
    """A decision's details without its timing, the one field two engines never share."""
    return None if details is None else {k: v for k, v in json.loads(details).items() if k != "seconds"}


def rows(res: Any) -> list[dict[str, Any]]:
    return res.kept.to_pylist() + res.dropped.to_pylist()


@pytest.mark.slow  # the session's engine starts here (~25 s on 2 cores)
def test_engine_agrees_with_transformers_token_by_token(llama: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm.inputs import TokensPrompt

    backend = make_backend(vllm_cfg(llama))
    backend._load()
    tok = AutoTokenizer.from_pretrained(llama)
    model = AutoModelForCausalLM.from_pretrained(llama, dtype=torch.float32).eval()
    st = stage(hf_cfg(llama))
    prompts = [tok.apply_chat_template(t.messages(text), tokenize=False, add_generation_prompt=True)
               for t in st.templates for text in PROSE]
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    import vllm

    # End of sequence suppressed in both (min tokens), so each prompt gives 32 tokens to compare.

    ours = backend._llm.generate([TokensPrompt(prompt_token_ids=i) for i in ids],
                                 vllm.SamplingParams(temperature=0.0, max_tokens=32, min_tokens=32), use_tqdm=False)
    compared = total = 0
    for i, r in zip(ids, ours):
        with torch.inference_mode():
            g = model.generate(torch.tensor([i]), max_new_tokens=32, min_new_tokens=32, do_sample=False,
                               pad_token_id=tok.pad_token_id,
                               output_scores=True, return_dict_in_generate=True)
        hf = g.sequences[0, len(i):].tolist()
        top2 = torch.stack(g.scores)[:, 0].topk(2).values
        margins = (top2[:, 0] - top2[:, 1]).tolist()
        got = list(r.outputs[0].token_ids)
        # Up to the first near-tie the two engines must pick the very same tokens.
        n = next((k for k, m in enumerate(margins) if m < 1e-4), len(hf))
        assert got[:n] == hf[:n], f"prompt of {len(i)} tokens: vllm {got} vs transformers {hf} (margins {margins})"
        compared, total = compared + n, total + len(hf)
        assert len(got) == len(hf) == 32 and r.outputs[0].finish_reason == "length"
    assert compared >= 0.9 * total, f"only {compared} of {total} tokens before a near-tie"


@pytest.mark.slow
def test_stage_decisions_and_provenance_equal_the_transformers_backend(llama: Path, tmp_path: Path) -> None:
    v = stage(vllm_cfg(llama), chunk_tokens=60, cache_dir=str(tmp_path / "cache"))
    got = v.process(batch(TEXTS))
    want = stage(hf_cfg(llama), chunk_tokens=60).process(batch(TEXTS))
    assert [r["id"] for r in rows(got)] == [r["id"] for r in rows(want)]
    assert got.reasons == want.reasons
    assert [no_seconds(d) for d in got.details] == [no_seconds(d) for d in want.details]
    # Both outcomes occur: rewrites that end by themselves (kept) and rewrites cut at max_tokens (dropped).
    assert "rephrase_truncated" in got.reasons and sum(1 for r in rows(got) if r["rephrase_of"] and r["text"]) >= 1
    for a, b in zip(rows(got), rows(want)):
        assert a["text"] == b["text"] and {k: a[k] for k in _PROVENANCE} == {k: b[k] for k in _PROVENANCE}, a["id"]
    synth = [r for r in rows(got) if r["rephrase_of"]]
    assert all(r["rephrase_model"] == str(llama) and r["rephrase_tokens_in"] > 0 for r in synth)
    assert json.loads(synth[0]["rephrase_params"]) == {"max_tokens": 8, "seed": 0, "temperature": 0.0, "top_p": 0.7}
    # Chunks are counted in the model's tokens (no `tokenizer:` given): the first text needs several.
    count, _ = hf_counter(v._backend._tok)
    n_chunks = [len(chunk_text(t, 60, count)) for t in TEXTS]
    assert n_chunks[0] >= 3 and n_chunks != [len(chunk_text(t, 60, lambda s: len(s.split()))) for t in TEXTS]
    # The generation cache: a rerun makes no engine call and gives the same rows.
    again = stage(vllm_cfg(llama), chunk_tokens=60, cache_dir=str(tmp_path / "cache"))
    calls: list[int] = []
    real = again._backend.generate
    again._backend.generate = lambda convs, *a, **k: calls.append(len(convs)) or real(convs, *a, **k)
    res = again.process(batch(TEXTS))
    assert calls == [] and res.reasons == got.reasons
    assert [r["text"] for r in rows(res)] == [r["text"] for r in rows(got)]
    cached = {r["id"]: r["rephrase_cached_chunks"] for r in res.kept.to_pylist() if r["rephrase_of"]}
    assert cached and all(n == n_chunks[int(i[1])] for i, n in cached.items())  # every chunk of a kept rewrite


def test_truncation_is_read_from_the_engine(llama: Path) -> None:
    backend = make_backend(vllm_cfg(llama))
    convs = [BUILTIN["wrap_medium"].messages(t) for t in PROSE]
    gens = backend.generate(convs, SamplingParams(temperature=0.0, max_tokens=3))
    assert all(isinstance(g, Generation) and g.tokens_out == 3 and g.finish_reason == "length" for g in gens)
    # Through the stage: every rewrite was cut at 3 tokens, so every synthetic row is dropped as truncated...
    res = stage(vllm_cfg(llama), max_tokens=3).process(batch(PROSE))
    assert res.reasons == ["rephrase_truncated"] * 6 and len(res.kept) == 3  # the originals only
    # ... and it is that check, not another, that drops them: without it the same rows are kept.
    lenient = OutputChecks(min_ratio=0.0, max_ratio=1e9, leak_ngram=10**6, reject_truncated=False)
    assert stage(vllm_cfg(llama), max_tokens=3, checks=lenient).process(batch(PROSE)).reasons == []


def test_a_prompt_over_max_model_len_fails_alone(llama: Path) -> None:
    long = " ".join([PROSE[0]] * 6)  # one paragraph of ~600 model tokens: over max_model_len=512 as one chunk
    st = stage(vllm_cfg(llama), chunk_tokens=5000, max_backend_error_fraction=1.0)
    res = st.process(batch([PROSE[1], long]))
    assert res.reasons == ["rephrase_backend_error"] * 2  # both templates of the long document, nothing else
    assert [r["id"] for r in res.dropped.to_pylist()] == ["d1#wrap_medium", "d1#wrap_qa"]
    gens = st._backend.generate([[{"role": "user", "content": long}]], SamplingParams(max_tokens=4))
    assert isinstance(gens[0], BackendError) and "max_model_len=512" in str(gens[0])


@pytest.mark.slow
def test_pipeline_run_with_the_vllm_backend(llama: Path, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": f"p{i}", "text": t} for i, t in enumerate(PROSE)])
    stages = [{"stage": "rephrase_v1", "templates": ["wrap_medium"], "cache_dir": str(tmp_path / "cache"),
               "sampling": {"temperature": 0.0, "max_tokens": 3},
               "backend": {"kind": "vllm", "model": str(llama), "device": "cpu", "extra": dict(ENGINE)}}]
    res = run_pipeline(pipeline_dict([str(tmp_path / "in" / "*.jsonl")], tmp_path / "run", stages=stages))
    st = {s["name"]: s for s in res.manifest["stages"]}["rephrase_v1"]
    assert (st["in"], st["out"]) == (3, 3) and st["dropped"] == {"rephrase_truncated": 3}


@pytest.mark.slow
@pytest.mark.ray
def test_ray_executor_runs_the_vllm_backend_in_its_workers(llama: Path, tmp_path: Path) -> None:
    # The GPU path's shape on CPU: the stage's Ray tasks build the engine in their worker process.
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": f"p{i}", "text": t} for i, t in enumerate(PROSE)])
    stages = [{"stage": "rephrase_v1", "templates": ["wrap_medium"], "resources": {"concurrency": 1},
               "sampling": {"temperature": 0.0, "max_tokens": 8},
               "backend": {"kind": "vllm", "model": str(llama), "device": "cpu", "extra": dict(ENGINE)}}]
    data = pipeline_dict([str(tmp_path / "in" / "*.jsonl")], tmp_path / "ray", stages=stages, kind="ray")
    res = run_pipeline(data)
    local = run_pipeline(pipeline_dict([str(tmp_path / "in" / "*.jsonl")], tmp_path / "local", stages=stages))
    st = {s["name"]: s for s in res.manifest["stages"]}["rephrase_v1"]
    assert st == {s["name"]: s for s in local.manifest["stages"]}["rephrase_v1"] and st["in"] == 3
    assert content(tmp_path / "ray") == content(tmp_path / "local")
