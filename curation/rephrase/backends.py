"""Generation backends behind one interface: local transformers, vLLM's offline engine, any
OpenAI-compatible HTTP server.

``generate(conversations, params)`` returns one ``Generation`` (or the exception that ended its
retries) per conversation, in order. The HTTP backend keeps ``concurrency`` requests in flight,
retries transient failures (connection errors, timeouts, 408/409/429/5xx) with exponential
backoff, and fails fast on other 4xx. HTTP 401/403 raise ``BackendAuthError`` at once: a refused
key fails every request alike, so it stops the run instead of dropping documents one by one.

API keys: the key comes from the environment variable named by ``api_key_env``, never from the
config file, and it is read in the process that sends the requests. On a Ray cluster that is a
worker on any node, and the executor does not forward it (a runtime environment is shown in the
dashboard and job records): every node that may run the stage must have the variable in the
environment it was started with (``export OPENAI_API_KEY=...`` before ``ray start``, or an env
entry from a Kubernetes Secret in the pod spec). A node without it fails its first task with a
``ConfigError`` naming the variable and the node. ``api_key_env: null`` sends no key.
Models are loaded once per worker process.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Literal

from curation.config import check_choices
from curation.errors import ConfigError, FatalError

_TRANSIENT = {408, 409, 429, 500, 502, 503, 504}
_AUTH = {401, 403}
_MODELS: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_ENGINES: dict[str, tuple[Any, Any, int]] = {}  # vLLM engines of this process, by model and engine kwargs


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
    ``api_key_env``: environment variable holding the API key; it must be set (non-empty) wherever
    the openai backend runs, on every node of a Ray cluster. None (YAML ``null``): send no key."""

    kind: Literal["openai", "transformers", "vllm"] = "transformers"
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
        check_choices(self)
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


class BackendSkipped(BackendError):
    """A request not sent (or not retried) because its batch had already failed."""


class BackendAuthError(FatalError):
    """The server refused the credentials (HTTP 401/403). Never retried and never a per-document
    drop: every request would fail the same way, so the task (and the run) fails."""


#: Called with the index of a conversation whose request failed for good; True stops the batch.
StopFn = Callable[[int], bool]


def node_description() -> str:
    """This process's machine, for errors raised on workers ("host X", plus the Ray node id)."""
    where = f"host {socket.gethostname()}"
    ray = sys.modules.get("ray")  # never import Ray just to ask
    if ray is not None and ray.is_initialized():
        where += f" (Ray node {ray.get_runtime_context().get_node_id()})"
    return where


def api_key(cfg: BackendConfig) -> str | None:
    """The key named by ``cfg.api_key_env`` from this process's environment (None: no key wanted).

    Raises ``ConfigError`` naming the variable and this node when it is named but unset or empty,
    before any request: a missing key would otherwise turn every rewrite into a 401.
    """
    if not cfg.api_key_env:
        return None
    key = os.environ.get(cfg.api_key_env)
    if not key:
        raise ConfigError(
            f"backend.api_key_env names {cfg.api_key_env}, which is not set on {node_description()}: export "
            f"{cfg.api_key_env} in the environment of every process that runs the openai backend (on a Ray "
            f"cluster: on each node, before `ray start`), or set backend.api_key_env: null for a server that "
            f"needs no key")
    return key


class OpenAIBackend:
    """Chat completions over HTTP (vLLM, SGLang, TGI, any OpenAI-compatible server)."""

    def __init__(self, cfg: BackendConfig) -> None:
        import httpx

        self.cfg = cfg
        self.model = cfg.model
        self.endpoint = cfg.base_url.rstrip("/")  # type: ignore[union-attr]
        headers = {"Content-Type": "application/json"}
        key = api_key(cfg)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(base_url=self.endpoint, headers=headers, timeout=httpx.Timeout(cfg.timeout_s))

    def _one(self, messages: list[dict[str, str]], p: SamplingParams, stop: threading.Event) -> Generation:
        import httpx

        body = {"model": self.cfg.model, "messages": messages, "temperature": p.temperature, "top_p": p.top_p,
                "max_tokens": p.max_tokens, "seed": p.seed, **self.cfg.extra}
        last: Exception | None = None
        for attempt in range(self.cfg.max_retries + 1):
            # A stopped batch has already failed: waiting out retries would only delay the error.
            if stop.is_set() or (attempt and stop.wait(self.cfg.backoff_s * 2 ** (attempt - 1))):
                raise BackendSkipped("not sent: the batch stopped after too many backend errors" if last is None else
                                   f"not retried: the batch stopped after too many backend errors; this request's "
                                   f"last error: {type(last).__name__}: {last}")
            t0 = time.perf_counter()
            try:
                r = self._client.post("/chat/completions", json=body)
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                last = exc
                continue
            if r.status_code in _AUTH:
                # Stop the other workers here, not when the caller's thread gets to this error: under
                # load a worker took and sent two more requests in between.
                stop.set()
                sent = f"the key from ${self.cfg.api_key_env}" if self.cfg.api_key_env else "no key (api_key_env: null)"
                raise BackendAuthError(f"HTTP {r.status_code} from {self.endpoint}/chat/completions: the server "
                                       f"refused {sent}; check the key and backend.base_url: {r.text[:200]}")
            if r.status_code in _TRANSIENT:
                last = BackendError(f"HTTP {r.status_code}: {r.text[:200]}")
                continue
            if r.status_code != 200:
                raise BackendError(f"HTTP {r.status_code} from {self.endpoint}: {r.text[:500]}")
            data = r.json()
            choice = data["choices"][0]
            usage = data.get("usage") or {}
            return Generation(text=choice["message"]["content"] or "", tokens_in=int(usage.get("prompt_tokens", 0)),
                              tokens_out=int(usage.get("completion_tokens", 0)), finish_reason=choice.get("finish_reason"),
                              seconds=time.perf_counter() - t0)
        raise BackendError(f"{self.endpoint}: gave up after {self.cfg.max_retries + 1} attempts: "
                           f"{type(last).__name__}: {last}")

    def generate(self, conversations: list[list[dict[str, str]]], params: SamplingParams,
                 should_stop: StopFn | None = None) -> list[Generation | Exception]:
        """One result per conversation, in order. ``should_stop(i)`` is asked (in this thread) after
        each request that failed for good; once it says True the remaining requests are not sent
        and come back as ``BackendError``. ``BackendAuthError`` is raised, never returned."""
        out: list[Generation | Exception | None] = [None] * len(conversations)
        stop = threading.Event()
        pool = ThreadPoolExecutor(max_workers=max(1, self.cfg.concurrency))
        try:
            futures = {pool.submit(self._one, m, params, stop): i for i, m in enumerate(conversations)}
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    out[i] = fut.result()
                except BackendError as exc:
                    out[i] = exc
                    if should_stop is not None and not stop.is_set() and should_stop(i):
                        stop.set()
        except BaseException:
            stop.set()  # a refused key (or an interrupt): send nothing more, retry nothing
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return out  # type: ignore[return-value]


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
        self.endpoint = None  # local: the model path alone names what generates

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

    def generate(self, conversations: list[list[dict[str, str]]], params: SamplingParams,
                 should_stop: StopFn | None = None) -> list[Generation | Exception]:
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
    """vLLM's offline engine (``vllm.LLM``), one per worker process and model, kept across batches.

    With the Ray executor each worker process of the stage's pool builds it once, so a stage with
    ``resources: {num_gpus: 1}`` runs one engine per GPU. Prompts are rendered and tokenized here
    exactly as the transformers backend does (the model's chat template, else a plain transcript;
    no extra special tokens) and handed over as token ids, so both backends see the same input.
    ``cfg.extra`` goes to ``vllm.LLM`` (``max_model_len``, ``enforce_eager``, ``dtype``...); on a
    CPU build of vLLM ``dtype`` defaults to float32, as the transformers backend uses on CPU.

    A prompt that does not fit ``max_model_len`` comes back as ``BackendError`` for that
    conversation alone (the stage drops it as ``backend_error`` and counts it against
    ``max_backend_error_fraction``); any other engine failure raises and fails the task.
    ``finish_reason`` is the engine's: "length" when generation stopped at ``max_tokens`` (or at
    the context limit), which the stage rejects as ``truncated``.
    """

    def __init__(self, cfg: BackendConfig) -> None:
        self.cfg = cfg
        self.model = cfg.model
        self.endpoint = None  # local: the model path alone names what generates
        self._llm: Any = None
        self._tok: Any = None
        self._max_len = 0

    def _engine_kwargs(self) -> dict[str, Any]:
        from vllm.platforms import current_platform

        kwargs = dict(self.cfg.extra)
        if "dtype" not in kwargs and (self.cfg.device == "cpu" or current_platform.is_cpu()):
            kwargs["dtype"] = "float32"
        return kwargs

    def _load(self) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise ConfigError(f"backend.kind: vllm needs vllm installed on {node_description()} "
                              f"(pip install vllm; on CPU-only machines: bash scripts/setup_vllm_cpu.sh)") from exc
        kwargs = self._engine_kwargs()
        key = json.dumps([self.cfg.model, kwargs], sort_keys=True, default=str)
        if key not in _ENGINES:
            from transformers import AutoTokenizer

            llm = vllm.LLM(model=self.cfg.model, **kwargs)
            tok = AutoTokenizer.from_pretrained(kwargs.get("tokenizer") or self.cfg.model)
            _ENGINES[key] = (llm, tok, int(llm.llm_engine.model_config.max_model_len))
        self._llm, self._tok, self._max_len = _ENGINES[key]

    def _too_long(self, n_tokens: int) -> BackendError:
        return BackendError(f"prompt of {n_tokens} tokens does not fit max_model_len={self._max_len} of "
                            f"{self.cfg.model}: lower chunk_tokens or raise backend.extra.max_model_len")

    def generate(self, conversations: list[list[dict[str, str]]], params: SamplingParams,
                 should_stop: StopFn | None = None) -> list[Generation | Exception]:
        """One result per conversation, in order (see the class docstring for what fails how)."""
        if self._llm is None:
            self._load()
        import vllm
        from vllm.inputs import TokensPrompt

        ids = [self._tok(render_chat(self._tok, m), add_special_tokens=False)["input_ids"] for m in conversations]
        out: list[Generation | Exception | None] = [None] * len(conversations)
        send: list[int] = []
        stopped = False
        for i, p in enumerate(ids):
            if stopped:
                out[i] = BackendSkipped("not sent: the batch stopped after too many backend errors")
            elif len(p) >= self._max_len:  # vLLM would reject the whole call for this one prompt
                out[i] = self._too_long(len(p))
                stopped = should_stop is not None and should_stop(i)
            else:
                send.append(i)
        if stopped:
            for i in send:
                out[i] = BackendSkipped("not sent: the batch stopped after too many backend errors")
            send = []
        sp = vllm.SamplingParams(temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_tokens,
                                 seed=params.seed)
        t0 = time.perf_counter()
        results = self._llm.generate([TokensPrompt(prompt_token_ids=ids[i]) for i in send], sp, use_tqdm=False) \
            if send else []
        secs = (time.perf_counter() - t0) / max(1, len(send))
        for i, r in zip(send, results):
            o = r.outputs[0]
            n_out = len(o.token_ids)
            finish = o.finish_reason
            if finish not in ("stop", "length"):
                if finish in ("abort", "error"):
                    out[i] = BackendError(f"vLLM ended the request with finish_reason={finish!r}")
                    continue
                # Unknown or missing reason: judge by the count, so truncation is never taken for an ending.
                finish = "length" if n_out >= params.max_tokens else "stop"
            out[i] = Generation(text=o.text, tokens_in=len(r.prompt_token_ids or ids[i]), tokens_out=n_out,
                                finish_reason=finish, seconds=secs)
        return out  # type: ignore[return-value]


def make_backend(cfg: BackendConfig) -> Any:
    return {"openai": OpenAIBackend, "transformers": TransformersBackend, "vllm": VLLMBackend}[cfg.kind](cfg)
