"""The vLLM tests: run for real in the vLLM environment, skipped (with the reason) anywhere else.

``scripts/test.sh`` runs them a second time as ``.venv-vllm/bin/python -m pytest tests/vllm`` with
``CURATION_VLLM_REQUIRED=1``. There a vllm that does not import is an error at collection, and
any skipped test fails the session: the CPU proof of the vLLM paths cannot go missing quietly.
In the main environment (no vllm) every test here is skipped with the reason shown by ``-ra``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PROSE

REQUIRED = os.environ.get("CURATION_VLLM_REQUIRED") == "1"
HERE = Path(__file__).resolve().parent
# One KV cache of 1 GiB per engine: the tests' prompts need a few MiB, the default asks for several GiB.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

try:
    import vllm  # noqa: F401

    VLLM_ERROR: str | None = None
except Exception as exc:  # noqa: BLE001  (a broken install fails in many ways; all of them mean "no vllm here")
    if REQUIRED:
        raise RuntimeError(f"CURATION_VLLM_REQUIRED=1 but vllm does not import in this interpreter: "
                           f"{type(exc).__name__}: {exc}. Run bash scripts/setup_vllm_cpu.sh") from exc
    VLLM_ERROR = f"{type(exc).__name__}: {exc}"

# Engine arguments every test shares, so the whole module uses one engine (vLLM caches it per process).
ENGINE = {"max_model_len": 512, "enforce_eager": True}


def _ours(item: pytest.Item) -> bool:
    return HERE in Path(str(item.fspath)).resolve().parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not _ours(item):
            continue
        item.add_marker(pytest.mark.vllm)
        if VLLM_ERROR is not None:
            item.add_marker(pytest.mark.skip(reason=f"vllm: not importable in this interpreter ({VLLM_ERROR}); "
                                                    f"scripts/test.sh runs tests/vllm in .venv-vllm"))


_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if REQUIRED and report.skipped and "tests/vllm/" in report.nodeid.replace("\\", "/"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if REQUIRED and _skipped:
        print(f"\nCURATION_VLLM_REQUIRED=1: {len(_skipped)} vLLM test(s) skipped, which this run forbids: {_skipped}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer LlamaForCausalLM (hidden 64) with random weights and a locally trained BPE tokenizer.

    Two heads of 32: vLLM's CPU attention has no kernel for head_dim 16. Its end of sequence is
    ``<bos>`` (as in the tests' other chat models), and its output row is scaled up (x3) so that
    greedy rewrites end after 6 to 9 tokens: one max_tokens then gives both outcomes, kept and truncated.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from curation.testing.tiny import train_tokenizer

    tok = train_tokenizer(PROSE * 3)
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    tok.eos_token = "<bos>"
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    out = tmp_path_factory.mktemp("llama") / "m"
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight[tok.bos_token_id] *= 3.0
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session", autouse=True)
def _shut_engines_down_before_exit() -> Iterator[None]:
    """Shut this process's vLLM engines down while the test session still has its streams: left to the
    interpreter's exit, vLLM's shutdown logs to closed streams and prints 'Logging error' tracebacks after the
    pytest summary line."""
    yield
    import gc

    from curation.rephrase import backends

    for llm, _, _ in backends._ENGINES.values():
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
    backends._ENGINES.clear()
    gc.collect()
