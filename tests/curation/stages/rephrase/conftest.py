"""A tiny chat model saved locally, and a real OpenAI-compatible server serving it (one per session)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PROSE, REPO
from curation.testing.tiny import make_lm, train_tokenizer

API_KEY = "test-secret-key"


@pytest.fixture(scope="session")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tok = train_tokenizer(PROSE * 3)
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                        "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    tok.eos_token = "<bos>"
    return make_lm(tmp_path_factory.mktemp("chat") / "m", tok, n_layer=1, n_embd=32, train_steps=30, seed=3)


@pytest.fixture(scope="session")
def openai_server(chat_model: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "curation.testing.openai_server", "--model", str(chat_model),
                             "--port", str(port), "--api-key", API_KEY], cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("test OpenAI server did not start")
        time.sleep(0.2)
    yield f"{url}/v1"
    proc.terminate()  # uvicorn waits for in-flight requests (the 'hang' one) on a graceful stop
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
