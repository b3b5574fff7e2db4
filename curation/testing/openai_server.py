"""A real OpenAI-compatible chat-completions server for tests, serving a local transformers model.

    python -m curation.testing.openai_server --model DIR --port 8123 [--api-key KEY]

The ``model`` field of a request picks the behaviour, so one server covers every case:
  tiny      generate with the local model (greedy when temperature is 0)
  flaky-N   answer 503 to the first N attempts of each distinct request, then generate
  hang      never answer in time (sleeps 60 s)
  leak      reply with the whole prompt (system + user), as a model that leaks its instructions
  echo      reply with the user text (a perfect 'paraphrase')
  code      reply with a fixed, clean Python module in a code block
  badcode   reply with a code block that does not compile
  forbidden answer 403 (a key the server knows but that may not use this model)
  failsome  answer 500 to every attempt of a request whose user text contains FAIL; echo otherwise
  fail      answer 500 to every attempt

``GET /health`` reports the number of requests that passed the key check, so tests can see what was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
from collections import Counter

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

CLEAN_CODE = '''"""Small, typed helpers for temperatures."""


def celsius_to_fahrenheit(celsius: float) -> float:
    """Convert a temperature from Celsius to Fahrenheit."""
    return celsius * 9.0 / 5.0 + 32.0
'''


def build_app(model_dir: str, api_key: str | None) -> FastAPI:
    # FastAPI reads handler annotations at runtime: Request must be a module-level name.
    from curation.rephrase.backends import BackendConfig, SamplingParams, TransformersBackend

    app = FastAPI()
    backend = TransformersBackend(BackendConfig(kind="transformers", model=model_dir, device="cpu"))
    attempts: Counter[str] = Counter()

    @app.get("/health")
    def health() -> dict:
        return {"ok": True, "requests": sum(attempts.values())}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        if api_key and request.headers.get("authorization") != f"Bearer {api_key}":
            return JSONResponse({"error": {"message": "bad api key"}}, status_code=401)
        body = await request.json()
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        attempts[key] += 1
        mode = body["model"]
        messages = body["messages"]
        user = messages[-1]["content"]
        finish, n_in, n_out = "stop", sum(len(m["content"].split()) for m in messages), 0
        if mode.startswith("flaky-") and attempts[key] <= int(mode.split("-")[1]):
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
        if mode == "forbidden":
            return JSONResponse({"error": {"message": "this key may not use this model"}}, status_code=403)
        if mode == "fail" or (mode == "failsome" and "FAIL" in user):
            return JSONResponse({"error": {"message": "internal error"}}, status_code=500)
        if mode == "hang":
            await asyncio.sleep(60)  # never blocks the other requests (a sync sleep would stall the server)
        if mode in ("tiny",) or mode.startswith("flaky-"):
            g = backend.generate([messages], SamplingParams(temperature=body.get("temperature", 0.0),
                                                            top_p=body.get("top_p", 1.0),
                                                            max_tokens=body.get("max_tokens", 32), seed=body.get("seed", 0)))[0]
            text, finish, n_in, n_out = g.text, g.finish_reason, g.tokens_in, g.tokens_out
        elif mode == "leak":
            text = "\n".join(m["content"] for m in messages)
        elif mode in ("echo", "failsome"):
            text = user.split("\n\n", 1)[-1] if "\n\n" in user else user
        elif mode == "code":
            text = f"[Improved Code]\n```python\n{CLEAN_CODE}```\n"
        elif mode == "badcode":  # as long as a real rewrite, but it does not compile
            text = f"```python\n{CLEAN_CODE}\n\ndef broken(:\n    pass\n```"
        else:
            return JSONResponse({"error": {"message": f"unknown model {mode}"}}, status_code=404)
        n_out = n_out or len(text.split())
        return JSONResponse({"id": "cmpl-test", "object": "chat.completion", "model": mode,
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                          "finish_reason": finish}],
                             "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}})

    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--api-key")
    args = ap.parse_args()
    import uvicorn

    uvicorn.run(build_app(args.model, args.api_key), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
