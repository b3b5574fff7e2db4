"""Loading Hugging Face models once per worker process (LM scoring, sentence embeddings).

Ray reuses worker processes across tasks, so a model loaded here stays in memory for every later
task of the run on that worker instead of being reloaded per shard.

``device`` is ``cpu`` or ``cuda``, the first GPU this process sees. Placement is the executor's
job, not this module's: under Ray a task that asks for GPUs sees only the ones Ray assigned it
(``CUDA_VISIBLE_DEVICES``), and a task that asks for none sees no GPU at all.
"""

from __future__ import annotations

from typing import Any

_CACHE: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}


def load_pretrained(path: str, device: str, dtype: str, auto_class: str = "AutoModel") -> tuple[Any, Any]:
    """(tokenizer, model in eval mode on ``device``) for a local dir or hub id, cached per process.

    ``auto_class`` names the transformers Auto class (``AutoModelForCausalLM`` for LM losses).
    """
    key = (path, device, dtype, auto_class)
    if key not in _CACHE:
        import torch
        import transformers

        tok = transformers.AutoTokenizer.from_pretrained(path)
        model = getattr(transformers, auto_class).from_pretrained(path, dtype=getattr(torch, dtype))
        _CACHE[key] = (tok, model.to(device).eval())
    return _CACHE[key]
