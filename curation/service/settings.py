"""The service's settings: where runs live, where its own state lives, who may do what."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from curation.errors import ConfigError

#: Environment variables holding comma-separated tokens (never logged, never in responses).
READ_TOKENS_ENV = "CURATE_SERVE_READ_TOKENS"
SUBMIT_TOKENS_ENV = "CURATE_SERVE_SUBMIT_TOKENS"


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


def normalise_host(host: str) -> str:
    """``Example.org`` -> ``example.org``; ``[::1]`` -> ``::1``; a port is kept out by the caller."""
    host = host.strip().lower().rstrip(".")
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def host_header_name(value: str) -> str | None:
    """The host name of a ``Host`` header (``name``, ``name:port``, ``[v6]:port``), or None if malformed."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1:] and not value[end + 1:].startswith(":")):
            return None
        return normalise_host(value[1:end])
    name, _, port = value.partition(":")
    if not name or (port and not port.isdigit()) or ":" in port:
        return None
    return normalise_host(name)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_transport_settings(settings: ServiceSettings) -> None:
    """ConfigError for transport limits that cannot work and proxy addresses that are not addresses or networks
    (what ``curation/service/transport.py`` enforces with them)."""
    if not settings.header_timeout_s > 0:
        raise ConfigError(f"--header-timeout-s {settings.header_timeout_s}: give a number of seconds above 0")
    if not settings.keep_alive_s > 0:
        raise ConfigError(f"--keep-alive-s {settings.keep_alive_s}: give a number of seconds above 0")
    if settings.max_connections < 1:
        raise ConfigError(f"--max-connections {settings.max_connections}: give at least 1")
    for item in settings.forwarded_allow_ips:
        # uvicorn would keep anything it cannot parse as a literal that never matches: a typo would silently
        # trust no one (every POST 403) or, with '*', everyone (anyone could claim https and any client address).
        if item == "*":
            raise ConfigError("--forwarded-allow-ips '*' would trust forwarded headers from any client: give the "
                              "proxy's addresses or networks (e.g. 10.0.0.0/8)")
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(f"--forwarded-allow-ips {item!r}: give IP addresses or networks (CIDR), "
                              "comma-separated") from None


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
    #: Megabytes of JSON one query answer may hold (``views.run_query`` refuses a bigger one, naming the row).
    query_max_mb: int = 32
    #: Megabytes the answer cache may hold, counted as encoded answers (``curation.service.cache``); 0: none kept.
    cache_mb: int = 256
    #: Host names (``Host`` header, port ignored) the service answers besides the loopback names and the
    #: bound address; ``*`` admits any. See ``allowed_host_names``.
    allowed_hosts: tuple[str, ...] = ()
    #: Folders and bucket prefixes submitted jobs may read (``curation.io.input_roots``); local ones are made
    #: absolute against the service's working directory. ``sample_inputs``: also the bundled sample corpus.
    input_roots: tuple[str, ...] = ()
    sample_inputs: bool = True
    #: Environment variables a submitted config may name as a secret (``backend.api_key_env``), and the hosts
    #: (``HOST`` or ``HOST:PORT``) its backends may send requests to (``backend.base_url``).
    allow_secret_env: tuple[str, ...] = ()
    allow_backend_hosts: tuple[str, ...] = ()
    #: Local folders a submitted config's caches (``cache_dir``) may lie under, besides the run's own directory.
    cache_roots: tuple[str, ...] = ()
    #: Transport limits against slow clients, and the proxies whose X-Forwarded-Proto/-For are believed (none by
    #: default): see ``curation/service/transport.py``.
    header_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    max_connections: int = 1000
    forwarded_allow_ips: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.read_tokens and not self.submit_tokens and not is_loopback(self.host):
            raise ConfigError(f"refusing to bind {self.host} without tokens: set {READ_TOKENS_ENV} and "
                              f"{SUBMIT_TOKENS_ENV} (comma-separated), or bind 127.0.0.1")
        for t in self.read_tokens | self.submit_tokens:
            if len(t) < 16:
                raise ConfigError("service tokens must be at least 16 characters (e.g. python -c "
                                  "'import secrets; print(secrets.token_urlsafe(24))')")
        if isinstance(self.cache_mb, bool) or not isinstance(self.cache_mb, int) or self.cache_mb < 0:
            raise ConfigError(f"--cache-mb {self.cache_mb!r}: give a whole number of megabytes >= 0")
        self.state_dir = Path(self.state_dir)
        self.allowed_hosts = tuple(normalise_host(h) for h in self.allowed_hosts)
        self.input_roots = tuple(self._input_root(r) for r in self.input_roots)
        self.cache_roots = tuple(self._cache_root(r) for r in self.cache_roots)
        for name in self.allow_secret_env:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name.upper().startswith("CURATE_SERVE_"):
                raise ConfigError(f"--allow-secret-env {name!r}: give a variable name other than the service's own "
                                  "CURATE_SERVE_* tokens")
        self.allow_backend_hosts = tuple(h.strip().lower() for h in self.allow_backend_hosts)
        for h in self.allow_backend_hosts:
            if not re.fullmatch(r"(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(:[0-9]{1,5})?", h):
                raise ConfigError(f"--allow-backend-host {h!r}: give HOST or HOST:PORT (no scheme, no path)")
        for h in self.allowed_hosts:
            if not h or "/" in h or " " in h:
                raise ConfigError(f"--allowed-host {h!r}: give a host name or address (no scheme, no path)")
        self.forwarded_allow_ips = tuple(ip.strip() for ip in self.forwarded_allow_ips if ip.strip())
        check_transport_settings(self)

    def _input_root(self, root: str) -> str:
        from curation.io.input_roots import normalise_root

        root = normalise_root(root)
        if "://" in root:
            return root
        path = os.path.realpath(os.path.expanduser(root))
        if not os.path.isdir(path):
            raise ConfigError(f"--input-root {root!r}: not a folder")
        state = os.path.realpath(self.state_dir)
        if state == path or state.startswith(path.rstrip(os.sep) + os.sep):
            raise ConfigError(f"--input-root {root!r} holds the service's state dir {state} (job table, Ray token): "
                              "declare a folder that does not")
        return path

    def _cache_root(self, root: str) -> str:
        if "://" in root or ".." in Path(root).parts:
            raise ConfigError(f"--cache-root {root!r}: give a local folder (no URL, no '..')")
        path = os.path.realpath(os.path.expanduser(root))
        if not os.path.isdir(path):
            raise ConfigError(f"--cache-root {root!r}: not a folder")
        state = os.path.realpath(self.state_dir)
        if state == path or state.startswith(path.rstrip(os.sep) + os.sep) or path.startswith(state + os.sep):
            raise ConfigError(f"--cache-root {root!r} overlaps the service's state dir {state}: declare another folder")
        return path

    def job_input_roots(self) -> tuple[str, ...]:
        """What submitted jobs may read: the declared roots and, unless turned off, the bundled sample corpus."""
        from curation.io.input_roots import SAMPLE_ROOT, code_root

        # The sample both in the service's code folder and relative: in a job, relative roots resolve against its
        # working dir (the uploaded copy of that folder).
        sample = (os.path.join(code_root(), SAMPLE_ROOT), SAMPLE_ROOT) if self.sample_inputs else ()
        return self.input_roots + sample

    def allowed_host_names(self) -> frozenset[str] | None:
        """The ``Host`` names a request may carry (None: any). Always the loopback names and the bound address
        when it is not a wildcard, plus ``allowed_hosts``. In open access (no tokens) that is all, so a page whose
        DNS name was rebound to 127.0.0.1 is refused (DNS rebinding). With tokens, bound to a wildcard address and
        no ``allowed_hosts``, any name is answered: the tokens decide."""
        if "*" in self.allowed_hosts:
            return None
        names = set(LOOPBACK_NAMES) | set(self.allowed_hosts)
        if self.host not in WILDCARD_HOSTS:
            names.add(normalise_host(self.host))
        elif not self.open_access and not self.allowed_hosts:
            return None
        return frozenset(names)

    @property
    def open_access(self) -> bool:
        """No tokens configured: loopback-only, everyone may read and submit."""
        return not self.read_tokens and not self.submit_tokens

    @staticmethod
    def tokens_from_env(name: str) -> frozenset[str]:
        return frozenset(t.strip() for t in os.environ.get(name, "").split(",") if t.strip())


def new_token() -> str:
    return secrets.token_urlsafe(24)
