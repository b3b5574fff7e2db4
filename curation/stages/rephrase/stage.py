"""rephrase_v1: every document x template becomes a new synthetic row, with provenance.

Per document and template: split into token chunks (``chunk_tokens``; ProX templates use line
chunks with numbered lines), look each chunk up in the cache, send the misses to the backend in
one batch, check every output, extract the answer (code block, ProX program) and reassemble. A
synthetic row whose chunk failed a check is dropped with reason ``rephrase_<check>`` and the
template in its details. Code templates gate their input too (``compile()`` and pylint score,
as SwallowCode) and report the output's pylint score. Originals are kept (``keep_original``,
WRAP's 1:1 real:synthetic mix) or dropped with reason ``rephrased``.

Synthetic rows get ``_row = 2**31 + source_row * 16 + template_index`` so later global stages
see distinct, deterministic positions (input files of up to 2**27 documents, 16 templates).

Backend failures never pass silently. A rewrite whose request failed for good (retries
exhausted, server down, non-transient 4xx) is dropped with reason ``rephrase_backend_error``, but
when more than ``max_backend_error_fraction`` of the rewrites a batch tried (document x template,
cached ones included) end that way, the batch raises ``ShardError`` naming the input file and the
first errors: the task fails, its shard gets no completion marker, and a rerun once the backend
is fixed redoes it (generations already made come from the cache). Remaining requests of such a
batch are not sent once the limit is passed. A refused key (HTTP 401/403) raises
``BackendAuthError`` at once, and a named ``backend.api_key_env`` that is not set fails
``setup()`` on the worker, before any document (see ``curation.rephrase.backends``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from curation.errors import ConfigError, ShardError
from curation.registry import register_stage
from curation.rephrase.backends import (BackendAuthError, BackendConfig, BackendSkipped, Generation, SamplingParams,
                                       make_backend)
from curation.rephrase.cache import GenerationCache, cache_key
from curation.rephrase.checks import OutputChecks, check_code, check_output, extract_code_block
from curation.rephrase.chunking import chunk_text, hf_counter, join_chunks
from curation.rephrase.prox import document_decision, execute, number_lines
from curation.rephrase.templates import Template, load_templates
from curation.stages.base import Stage, StageResult, split

_PROVENANCE = {
    "rephrase_of": pa.string(), "rephrase_template": pa.string(), "rephrase_model": pa.string(),
    "rephrase_params": pa.string(), "rephrase_prompt_hash": pa.string(), "rephrase_tokens_in": pa.int64(),
    "rephrase_tokens_out": pa.int64(), "rephrase_seconds": pa.float64(), "rephrase_cached_chunks": pa.int32(),
    "rephrase_pylint": pa.float64(),
}


@dataclass(kw_only=True)
class RephraseConfig:
    """``templates``: names (built-in or from ``templates_file``). ``tokenizer``: hub id or path
    for chunking (default: the backend's model when it is local, transformers or vllm, else
    whitespace words). ``cache_dir``: generation cache (None: no cache). ``max_backend_error_fraction``: a
    batch fails (and with it the task and the run) when more than this share of the rewrites it
    tried failed at the backend; 0 fails on the first such error, 1 only drops them."""

    templates: list[str] = field(default_factory=list)
    templates_file: str | None = None
    backend: BackendConfig
    sampling: SamplingParams = field(default_factory=SamplingParams)
    tokenizer: str | None = None
    chunk_tokens: int = 300
    prox_chunk_tokens: int = 1500
    keep_original: bool = True
    checks: OutputChecks = field(default_factory=OutputChecks)
    code_input_gate: bool = True
    cache_dir: str | None = None
    max_backend_error_fraction: float = 0.02

    def __post_init__(self) -> None:
        if not self.templates:
            raise ValueError("templates: give at least one template name")
        if not 0.0 <= self.max_backend_error_fraction <= 1.0:
            raise ValueError(f"max_backend_error_fraction: {self.max_backend_error_fraction} is not in [0, 1]")
        if len(self.templates) > 16:
            raise ValueError("templates: at most 16 per stage")


def _source(batch: pa.Table) -> str:
    """The input file a batch came from (documents of one batch share it)."""
    return str(batch.column("source")[0].as_py()) if "source" in batch.column_names and len(batch) else "?"


@register_stage("rephrase_v1")
class Rephrase(Stage):
    Config = RephraseConfig

    artifact_keys = ("templates_file", "backend.model", "tokenizer")

    def __init__(self, config: RephraseConfig | None = None) -> None:
        super().__init__(config)
        known = load_templates(self.config.templates_file)
        missing = [t for t in self.config.templates if t not in known]
        if missing:
            raise ConfigError(f"rephrase_v1: unknown templates {missing}; valid: {sorted(known)}")
        self.templates: list[Template] = [known[t] for t in self.config.templates]
        self._backend: Any = None
        self._cache: GenerationCache | None = None
        self._count: Any = None
        self._split: Any = None

    def output_columns(self) -> dict[str, pa.DataType]:
        return dict(_PROVENANCE)

    def cuda_demand(self) -> str | None:
        b = self.config.backend  # vLLM runs on a GPU unless built for CPU; openai runs elsewhere
        if b.kind == "vllm" and b.device != "cpu":
            return "backend.kind: vllm"
        return "backend.device: cuda" if b.kind == "transformers" and b.device == "cuda" else None

    def setup(self) -> None:
        c = self.config
        self._backend = make_backend(c.backend)
        self._cache = GenerationCache(c.cache_dir) if c.cache_dir else None
        tok_path = c.tokenizer or (c.backend.model if c.backend.kind in ("transformers", "vllm") else None)
        if tok_path:
            from transformers import AutoTokenizer

            self._count, self._split = hf_counter(AutoTokenizer.from_pretrained(tok_path))
        else:
            self._count, self._split = (lambda s: len(s.split())), None

    # -- one batch -----------------------------------------------------------------------------

    def process(self, batch: pa.Table) -> StageResult:
        if self._backend is None:
            self.setup()
        c = self.config
        ids = batch.column("id").to_pylist()
        texts = batch.column("text").to_pylist()
        params = asdict(c.sampling)
        jobs: list[tuple[int, int, Any, str]] = []  # (doc, template, chunk, prompt text)
        plans: dict[tuple[int, int], list[Any]] = {}
        gate: dict[tuple[int, int], str] = {}
        for d, text in enumerate(texts):
            input_reason: str | None = None
            if c.code_input_gate and any(t.kind == "code" for t in self.templates):
                # Once per document: pylint is a subprocess, and SGCR + SCOR would otherwise run it twice.
                input_reason, _ = check_code(text, c.checks.pylint_min)
            for ti, t in enumerate(self.templates):
                if t.kind == "code" and c.code_input_gate:
                    reason = input_reason
                    if reason:
                        gate[(d, ti)] = f"input_{reason}"
                        continue
                if t.kind == "prox":
                    chunks = chunk_text(text, c.prox_chunk_tokens, self._count, mode="lines", encode_decode=self._split)
                else:
                    chunks = chunk_text(text, c.chunk_tokens, self._count, encode_decode=self._split)
                plans[(d, ti)] = chunks
                for ch in chunks:
                    jobs.append((d, ti, ch, number_lines(ch.text) if t.kind == "prox" else ch.text))
        endpoint = getattr(self._backend, "endpoint", None)
        keys = [cache_key(ids[d], ch.index, ch.text, self.templates[ti].key, self.templates[ti].prompt_hash(),
                          self._backend.model, params, endpoint) for d, ti, ch, _ in jobs]
        cached = self._cache.get_many(keys) if self._cache else {}
        todo = [i for i, k in enumerate(keys) if k not in cached]
        results: dict[int, Generation | Exception] = {i: cached[keys[i]] for i in range(len(jobs)) if keys[i] in cached}
        allowed = c.max_backend_error_fraction * len(plans)  # rewrites tried: every (doc, template) not gated
        if todo:
            failed: set[tuple[int, int]] = set()

            def should_stop(k: int) -> bool:  # the k-th request failed for good: is the batch lost already?
                failed.add(jobs[todo[k]][:2])
                return len(failed) > allowed

            convs = [self.templates[jobs[i][1]].messages(jobs[i][3]) for i in todo]
            try:
                generated = self._backend.generate(convs, SamplingParams(**params), should_stop=should_stop)
            except BackendAuthError as exc:
                self._backend = None  # the next batch (a rerun in this process) reads the key again
                raise BackendAuthError(f"rephrase_v1 on {_source(batch)} (documents {ids[0]}..): "
                                       f"{exc}") from None
            for i, g in zip(todo, generated):
                results[i] = g
            if self._cache:  # before any failure below: a rerun pays only for what did not come back
                self._cache.put_many({keys[i]: results[i] for i in todo if isinstance(results[i], Generation)})
            self._check_errors(batch, ids, jobs, results, len(plans), allowed)
        by_plan: dict[tuple[int, int], list[int]] = {}
        for i, (d, ti, _, _) in enumerate(jobs):
            by_plan.setdefault((d, ti), []).append(i)
        return self._assemble(batch, texts, ids, plans, by_plan, jobs, results, set(i for i, k in enumerate(keys) if k in cached), gate)

    def _check_errors(self, batch: pa.Table, ids: list[str], jobs: list, results: dict, tried: int,
                      allowed: float) -> None:
        """Raise ``ShardError`` when more than the allowed share of this batch's rewrites hit backend errors."""
        errors: dict[tuple[int, int], Exception] = {}
        for i in sorted(results):
            g = results[i]
            if isinstance(g, Exception):
                errors.setdefault(jobs[i][:2], g)  # a rewrite is lost by any of its chunks failing
        if len(errors) <= allowed:
            return
        # Real failures first: requests skipped once the limit was passed say nothing about the cause.
        ordered = sorted(errors.items(), key=lambda item: isinstance(item[1], BackendSkipped))
        skipped = sum(isinstance(e, BackendSkipped) for e in errors.values())
        first = "; ".join(f"{ids[d]}#{self.templates[ti].name}: {type(e).__name__}: {e}" for (d, ti), e in ordered[:3])
        raise ShardError(
            f"rephrase_v1: {len(errors)} of {tried} rewrites in a batch of {_source(batch)} (documents "
            f"{ids[0]}..{ids[-1]}) failed at the backend"
            f"{f' ({skipped} not sent once the limit was passed)' if skipped else ''}, over "
            f"max_backend_error_fraction={self.config.max_backend_error_fraction}; first errors: {first}. "
            f"The shard is not marked complete: fix the backend and rerun to redo it")

    def _assemble(self, batch: pa.Table, texts: list[str], ids: list[str], plans: dict, by_plan: dict, jobs: list,
                  results: dict, cached: set[int], gate: dict) -> StageResult:
        c = self.config
        rows: list[dict[str, Any]] = []
        reasons: list[str | None] = []
        details: list[dict[str, Any] | None] = []
        src = batch.to_pylist()
        for d in range(len(texts)):
            for ti, t in enumerate(self.templates):
                reason, out_text, pylint, tin, tout, secs, ncached = gate.get((d, ti)), "", None, 0, 0, 0.0, 0
                if reason is None:
                    pieces, errors = [], 0
                    for i in by_plan[(d, ti)]:
                        g = results[i]
                        ch = jobs[i][2]
                        if isinstance(g, Exception):
                            reason = "backend_error"
                            break
                        tin, tout, secs, ncached = tin + g.tokens_in, tout + g.tokens_out, secs + g.seconds, ncached + (i in cached)
                        answer = g.text.strip()
                        if t.extract == "code_block":
                            answer = extract_code_block(g.text) or ""
                        if t.extract == "program":
                            res = execute(g.text, ch.text)
                            pieces.append(res.text)
                            errors += res.errors
                            continue
                        bad = check_output(answer, ch.text, t.system + "\n" + t.user, g.finish_reason, c.checks)
                        if bad:
                            reason = bad
                            break
                        pieces.append(answer)
                    if reason is None and t.kind == "prox":
                        reason, out_text = document_decision(texts[d], join_chunks(pieces, plans[(d, ti)]), errors)
                    elif reason is None:
                        out_text = join_chunks(pieces, plans[(d, ti)])
                    if reason is None and t.kind == "code":
                        reason, pylint = check_code(out_text, c.checks.pylint_min)
                row = dict(src[d])
                row.update(id=f"{ids[d]}#{t.name}", text=out_text, n_chars=len(out_text),
                           _row=2**31 + int(src[d]["_row"]) * 16 + ti if "_row" in row else None,
                           rephrase_of=ids[d], rephrase_template=t.key, rephrase_model=self._backend.model,
                           rephrase_params=json.dumps(asdict(c.sampling), sort_keys=True),
                           rephrase_prompt_hash=t.prompt_hash(), rephrase_tokens_in=tin, rephrase_tokens_out=tout,
                           rephrase_seconds=round(secs, 4), rephrase_cached_chunks=ncached, rephrase_pylint=pylint)
                if "_row" not in src[d]:
                    row.pop("_row")
                rows.append(row)
                reasons.append(None if reason is None else f"rephrase_{reason}")
                details.append(None if reason is None else {"template": t.key, "source": ids[d], "tokens_in": tin,
                                                            "tokens_out": tout, "seconds": round(secs, 4)})
        schema = batch.schema
        for name, dtype in _PROVENANCE.items():
            schema = schema.append(pa.field(name, dtype))
        originals = batch
        for name, dtype in _PROVENANCE.items():
            originals = originals.append_column(name, pa.nulls(len(batch), dtype))
        synth = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
        keep_synth = np.array([r is None for r in reasons], dtype=bool)
        res_synth = split(synth, keep_synth, reasons, details)
        keep_orig = np.full(len(batch), c.keep_original, dtype=bool)
        res_orig = split(originals, keep_orig, [None if c.keep_original else "rephrased"] * len(batch))
        return StageResult(kept=pa.concat_tables([res_orig.kept, res_synth.kept]),
                           dropped=pa.concat_tables([res_orig.dropped, res_synth.dropped]),
                           reasons=res_orig.reasons + res_synth.reasons, details=res_orig.details + res_synth.details)

