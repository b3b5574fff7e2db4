"""The client side of Ray's Jobs API that ``curate submit`` (``curation/submit.py``) and ``curate serve``'s job
manager (``curation/service/jobs.py``) share: connecting with the cluster token, refusing to send that token in
clear text, the runtime environment a job's code travels in (and what never travels), and a job's log.

Token authentication (Ray 2.60: ``RAY_AUTH_MODE=token`` on the cluster): every request to the dashboard / job
server must carry ``Authorization: Bearer TOKEN``. The token is read from ``$RAY_AUTH_TOKEN`` (or the variable
named by ``token_env``), else from the file named by ``$RAY_AUTH_TOKEN_PATH``, and sent as that header; with
neither, Ray's own client adds ``~/.ray/auth_token`` when ``RAY_AUTH_MODE=token`` is set here. The token never goes
into a job's runtime_env (the dashboard would show it): the cluster's own processes already have it. Nor does it go
over plain http to any host but loopback (a tunnel) unless ``insecure`` is set: whoever reads it can run code on
the cluster.

Ray is imported inside the functions only, so that importing this module (the CLI, the service) never needs it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from curation.errors import CurationError

# Files that commonly hold credentials, at any depth: an upload lands on the head node and in the
# cluster's package store, readable by every job, so these never leave this machine. SSH keys are named
# explicitly (not ``id_*``) so that a source file such as ``id_map.py`` still travels.
SECRET_EXCLUDES = [".env", ".env.*", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "id_rsa*", "id_dsa*",
                   "id_ecdsa*", "id_ed25519*", ".ssh/", ".aws/", "credentials*", ".netrc", "_netrc", ".git-credentials",
                   ".pgpass", ".pypirc", ".npmrc", ".kube/", "kubeconfig*", ".docker/config.json", ".azure/", "gcloud/",
                   "application_default_credentials.json", "service-account*.json", "*-sa-key.json", ".curate-serve/"]
# Never uploaded: virtualenvs, git history, local run outputs, caches, secrets (gitignore syntax,
# relative to the working dir; Ray also honours the repository's .gitignore files).
DEFAULT_EXCLUDES = [".git", ".venv", "venv", "/runs/", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache",
                    ".mypy_cache", ".hypothesis", "*.egg-info", "/build/", "/dist/", ".cache", *SECRET_EXCLUDES]
TOKEN_ENV = "RAY_AUTH_TOKEN"
#: Variables that would point a Ray client at another cluster or another token.
RAY_CLIENT_VARS = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_API_SERVER_ADDRESS")
#: How much of a job's log the service shows (``job_log``).
LOG_TAIL_CHARS = 8000


class SubmitError(CurationError):
    """The job could not be submitted (unreachable, refused, bad config)."""


def auth_headers(token_env: str = TOKEN_ENV) -> dict[str, str]:
    """``{"Authorization": "Bearer TOKEN"}`` from ``$token_env`` or ``$RAY_AUTH_TOKEN_PATH``, else {}."""
    token = os.environ.get(token_env, "").strip()
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not token and path:
        try:
            token = Path(path).expanduser().read_text().strip()
        except OSError as exc:
            raise SubmitError(f"RAY_AUTH_TOKEN_PATH={path} cannot be read: {exc}") from None
    return {"Authorization": f"Bearer {token}"} if token else {}


def sends_token(token_env: str = TOKEN_ENV) -> bool:
    """Whether a request to the job server would carry a token: ours, or the one Ray's client adds itself."""
    if auth_headers(token_env):
        return True
    try:  # Ray adds ~/.ray/auth_token (or $RAY_AUTH_TOKEN) whenever its token mode is on here
        from ray._private.authentication.http_token_authentication import get_auth_headers_if_auth_enabled
    except ImportError:  # a Ray without token auth, or one that moved it: trust the documented switch
        return os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
    return bool(get_auth_headers_if_auth_enabled({}))


def check_transport(address: str, token: bool, insecure: bool = False) -> None:
    """Refuse to send a token in clear text (plain http, or no scheme, which Ray reads as http) off this host.

    Loopback is fine: a ``kubectl port-forward`` or ``ray dashboard`` SSH tunnel ends there and encrypts the rest.
    """
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "http", address
    if scheme.lower() != "http" or not token or insecure:
        return
    host = urlsplit(f"http://{rest}").hostname or ""  # strips user@, :port and the [] of IPv6
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host.lower() in ("localhost", "localhost.")
    if not loopback:
        raise SubmitError(f"refusing to send the cluster token over plain http to {host}: anyone on the path can "
                          "read it and run code on the cluster; use https://, a tunnel to 127.0.0.1 "
                          "(kubectl port-forward, ray dashboard), or --insecure on a network you trust")


def connect(address: str, token_env: str = TOKEN_ENV) -> Any:
    """A ``JobSubmissionClient`` for ``address`` carrying the auth token header, if any."""
    from ray.job_submission import JobSubmissionClient

    headers = auth_headers(token_env)
    try:
        return JobSubmissionClient(address, headers=headers or None)
    except Exception as exc:  # noqa: BLE001
        raise SubmitError(f"connecting to the Ray job server at {address} failed: "
                          f"{explain(exc, token_env)}") from None


def explain(exc: Exception, token_env: str = TOKEN_ENV) -> str:
    """An error from Ray's client as one message; an authentication failure says where the token comes from."""
    msg = f"{type(exc).__name__}: {exc}"
    if "Authentication" in msg or "401" in msg or "403" in msg:
        msg += (f"\nThe cluster uses token authentication: set ${token_env} (or RAY_AUTH_TOKEN_PATH) to its token "
                "(`ray get-auth-token` on the head node).")
    return msg


def quiet_client_logs() -> None:
    """Ray logs every file it leaves out of the upload and every default exclude at INFO/WARNING."""
    for name in ("ray._private.runtime_env", "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk"):
        logging.getLogger(name).setLevel(logging.ERROR)


def runtime_env(working_dir: str | Path, extra_excludes: list[str] | None = None,
                env_vars: dict[str, str] | None = None) -> dict[str, Any]:
    """A job's ``runtime_env``: ``working_dir`` is uploaded without ``DEFAULT_EXCLUDES`` (credentials among them) and
    ``extra_excludes``; ``env_vars`` (never a token: the dashboard shows them) when given."""
    env: dict[str, Any] = {"working_dir": str(working_dir), "excludes": [*DEFAULT_EXCLUDES, *(extra_excludes or [])]}
    if env_vars is not None:
        env["env_vars"] = env_vars
    return env


def not_found(exc: Exception) -> bool:
    """Whether an error of Ray's job client says the job does not exist (it raises RuntimeError for everything)."""
    return "status code 404" in str(exc) or "does not exist" in str(exc)


def job_log(client: Any, job_id: str, chars: int | None = LOG_TAIL_CHARS) -> str:
    """The job's log: its last ``chars`` characters, or all of it with None."""
    text = client.get_job_logs(job_id)
    return text if chars is None else text[-chars:]


def without_log_tail(message: str) -> str:
    """A job's failure message without the log tail Ray appends to it (``..., last available logs ...``): whoever
    shows the message shows (or streamed) the log on its own."""
    return re.sub(r",? last available logs.*", "", message, flags=re.DOTALL)
