"""Generation backends behind one interface: local transformers, any OpenAI-compatible HTTP server.

``generate(conversations, params)`` returns one ``Generation`` (or the exception that ended its
retries) per conversation, in order. The HTTP backend keeps ``concurrency`` requests in flight,
retries transient failures (connection errors, timeouts, 408/409/429/5xx) with exponential
backoff, and fails fast on other 4xx; the API key comes from an environment variable, never
from the config file. Models are loaded once per worker process.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from curation.errors import ConfigError

_TRANSIENT = {408, 409, 429, 500, 502, 503, 504}
_MODELS: dict[tuple[str, str, str], tuple[Any, Any]] = {}


@dataclass(kw_only=True)
class SamplingParams:
    """WRAP/SwallowCode-style defaults: temperature 0.2, top-p 0.7."""

    temperature: float = 0.2
    top_p: float = 0.7
    max_tokens: int = 512
    seed: int = 0


@dataclass(kw_only=True)
class BackendConfig:
    """``kind``: transformers | openai | vllm. ``model``: hub id or local path (transformers,
    vllm) or the server's model name (openai). ``base_url``: e.g. http://127.0.0.1:8000/v1.
    ``api_key_env``: environment variable holding the API key (unset: no auth header)."""

    kind: str = "transformers"
    model: str = ""
    base_url: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 4
    backoff_s: float = 1.0
    device: str = "auto"
    batch_size: int = 8
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ("transformers", "openai", "vllm"):
            raise ValueError(f"kind: {self.kind!r} is not one of ['openai', 'transformers', 'vllm']")
        if not self.model:
            raise ValueError("model: give a hub id, a local path or the server's model name")
        if self.kind == "openai" and not self.base_url:
            raise ValueError("base_url: required for the openai backend (e.g. http://host:8000/v1)")


@dataclass
class Generation:
    text: str
    tokens_in: int
    tokens_out: int
    finish_reason: str | None
    seconds: float


class BackendError(RuntimeError):
    """A request failed for good (non-transient status, or retries exhausted)."""


class OpenAIBackend:
    """Chat completions over HTTP (vLLM, SGLang, TGI, any OpenAI-compatible server)."""

    def __init__(self, cfg: BackendConfig) -> None:
        import httpx

        self.cfg = cfg
        self.model = cfg.model
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(base_url=cfg.base_url.rstrip("/"), headers=headers,  # type: ignore[union-attr]
                                    timeout=httpx.Timeout(cfg.timeout_s))

    def _one(self, messages: list[dict[str, str]], p: SamplingParams) -> Generation:
        import httpx

        body = {"model": self.cfg.model, "messages": messages, "temperature": p.temperature, "top_p": p.top_p,
                "max_tokens": p.max_tokens, "seed": p.seed, **self.cfg.extra}
        last: Exception | None = None
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                time.sleep(self.cfg.backoff_s * 2 ** (attempt - 1))
            t0 = time.perf_counter()
            try:
                r = self._client.post("/chat/completions", json=body)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = exc
                continue
            if r.status_code in _TRANSIENT:
                last = BackendError(f"HTTP {r.status_code}: {r.text[:200]}")
                continue
            if r.status_code != 200:
                raise BackendError(f"HTTP {r.status_code} from {self.cfg.base_url}: {r.text[:500]}")
            data = r.json()
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            return Generation(text=choice["message"]["content"] or "", tokens_in=int(usage.get("prompt_tokens", 0)),
                              tokens_out=int(usage.get("completion_tokens", 0)), finish_reason=choice.get("finish_reason"),
                              seconds=time.perf_counter() - t0)
        raise BackendError(f"gave up after {self.cfg.max_retries + 1} attempts: {type(last).__name__}: {last}")

    def generate(self, conversations: list[list[dict[str, str]]], params: SamplingParams) -> list[Generation | Exception]:
        def run(messages: list[dict[str, str]]) -> Generation | Exception:
            try:
                return self._one(messages, params)
            except BackendError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=max(1, self.cfg.concurrency)) as pool:
            return list(pool.map(run, conversations))


def render_chat(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The model's chat template when it has one; a plain transcript otherwise."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages) + "Assistant:"


class TransformersBackend:
    """Local ``generate()`` on CPU or CUDA; batched with left padding."""

    def __init__(self, cfg: BackendConfig) -> None:
        self.cfg = cfg
        self.model = cfg.model

    def _load(self) -> tuple[Any, Any, str]:
        import torch

        device = ("cuda" if torch.cuda.is_available() else "cpu") if self.cfg.device == "auto" else self.cfg.device
        dtype = "bfloat16" if device == "cuda" else "float32"
        key = (self.cfg.model, device, dtype)
        if key not in _MODELS:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self.cfg.model)
            tok.padding_side = "left"
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token or tok.bos_token
            model = AutoModelForCausalLM.from_pretrained(self.cfg.model, dtype=getattr(torch, dtype)).to(device).eval()
            _MODELS[key] = (tok, model)
        tok, model = _MODELS[key]
        return tok, model, device

    def generate(self, conversations: list[list[dict[str, str]]], params: SamplingParams) -> list[Generation | Exception]:
        import torch

        tok, model, device = self._load()
        out: list[Generation | Exception] = []
        for k in range(0, len(conversations), self.cfg.batch_size):
            chunk = conversations[k: k + self.cfg.batch_size]
            prompts = [render_chat(tok, m) for m in chunk]
            enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            torch.manual_seed(params.seed)
            t0 = time.perf_counter()
            with torch.inference_mode():
                gen = model.generate(**enc, max_new_tokens=params.max_tokens, do_sample=params.temperature > 0,
                                     temperature=params.temperature if params.temperature > 0 else None,
                                     top_p=params.top_p if params.temperature > 0 else None,
                                     pad_token_id=tok.pad_token_id)
            secs = (time.perf_counter() - t0) / len(chunk)
            width = enc["input_ids"].shape[1]
            for r in range(len(chunk)):
                new = gen[r, width:]
                eos = tok.eos_token_id
                ended = eos is not None and bool((new == eos).any())
                n_out = int((new != tok.pad_token_id).sum()) if tok.pad_token_id != eos else len(new)
                text = tok.decode(new, skip_special_tokens=True)
                out.append(Generation(text=text, tokens_in=int(enc["attention_mask"][r].sum()), tokens_out=n_out,
                                      finish_reason="stop" if ended or n_out < params.max_tokens else "length",
                                      seconds=secs))
        return out


class VLLMBackend:
    """vLLM's offline engine, loaded once per worker process (GPU clusters). Ray Data's LLM
    processor (``ray.data.llm``) drives the same engine for whole datasets; see ``rephrase_dataset``."""

    def __init__(self, cfg: BackendConfig) -> None:
        self.cfg = cfg
        self.model = cfg.model
        self._llm: Any = None

    def generate(self, conversations: list[list[dict[str, str]]], params: SamplingParams) -> list[Generation | Exception]:
        try:
            import vllm
        except ImportError as exc:
            raise ConfigError("the vllm backend needs vllm installed on the workers (pip install vllm)") from exc
        if self._llm is None:
            self._llm = vllm.LLM(model=self.cfg.model, **self.cfg.extra)
        sp = vllm.SamplingParams(temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_tokens,
                                 seed=params.seed)
        t0 = time.perf_counter()
        results = self._llm.chat(conversations, sp)
        secs = (time.perf_counter() - t0) / max(1, len(conversations))
        return [Generation(text=r.outputs[0].text, tokens_in=len(r.prompt_token_ids or []),
                           tokens_out=len(r.outputs[0].token_ids), finish_reason=r.outputs[0].finish_reason, seconds=secs)
                for r in results]


def make_backend(cfg: BackendConfig) -> Any:
    return {"openai": OpenAIBackend, "transformers": TransformersBackend, "vllm": VLLMBackend}[cfg.kind](cfg)
