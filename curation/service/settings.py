"""The service's settings: where runs live, where its own state lives, who may do what."""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from curation.errors import ConfigError

#: Environment variables holding comma-separated tokens (never logged, never in responses).
READ_TOKENS_ENV = "CURATE_SERVE_READ_TOKENS"
SUBMIT_TOKENS_ENV = "CURATE_SERVE_SUBMIT_TOKENS"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(kw_only=True)
class ServiceSettings:
    """``runs_root``: a local folder or an object-store prefix (``s3://bucket/runs``) holding run
    directories (one per run id). ``state_dir``: the service's own folder (job table, logs); local.
    ``ray_address``: a Ray cluster's dashboard/jobs address (``http://HEAD:8265``), or None for a
    local Ray the service starts. ``read_tokens`` may browse and query; ``submit_tokens`` may also
    submit and cancel. With no tokens at all, everyone on the (loopback-only) bind may do both."""

    runs_root: str
    state_dir: Path
    ray_address: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    read_tokens: frozenset[str] = field(default_factory=frozenset)
    submit_tokens: frozenset[str] = field(default_factory=frozenset)
    max_body_bytes: int = 1 << 20  # pipeline YAML and SQL are small; bigger bodies get 413
    query_timeout_s: float = 30.0
    query_memory_limit: str = "1GB"
    query_max_rows: int = 10_000

    def __post_init__(self) -> None:
        if not self.read_tokens and not self.submit_tokens and not is_loopback(self.host):
            raise ConfigError(f"refusing to bind {self.host} without tokens: set {READ_TOKENS_ENV} and "
                              f"{SUBMIT_TOKENS_ENV} (comma-separated), or bind 127.0.0.1")
        for t in self.read_tokens | self.submit_tokens:
            if len(t) < 16:
                raise ConfigError("service tokens must be at least 16 characters (e.g. python -c "
                                  "'import secrets; print(secrets.token_urlsafe(24))')")
        self.state_dir = Path(self.state_dir)

    @property
    def open_access(self) -> bool:
        """No tokens configured: loopback-only, everyone may read and submit."""
        return not self.read_tokens and not self.submit_tokens

    @staticmethod
    def tokens_from_env(name: str) -> frozenset[str]:
        return frozenset(t.strip() for t in os.environ.get(name, "").split(",") if t.strip())


def new_token() -> str:
    return secrets.token_urlsafe(24)
