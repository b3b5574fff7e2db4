"""Input roots: the folders and bucket prefixes a job submitted through ``curate serve`` may read.

``curate run`` reads any path or URL its user gives. A job submitted through the service runs with the
service's (or the cluster's) access to disks, buckets and the network, on behalf of whoever holds a submit
token, so its ``input.paths`` must lie under a root the operator declared (``curate serve --input-root PATH``):

- a local root is a folder; a pattern's fixed part (before its first wildcard) and every file it matches are
  resolved (symlinks and ``..`` followed) and must stay inside a root;
- a bucket root is a prefix such as ``s3://bucket/prefix/``; a pattern must start with it and hold no ``..``;
- every other scheme (``http://``, ``file://``, ``memory://``, chained ``a::b`` URLs, ...) is refused.

The check runs when the job is submitted (``check_patterns``: 422 naming the path) and again where the job
expands its inputs (``confine``, set by the job's driver; ``curation.io.inputs.expand_inputs`` calls
``check_pattern`` / ``check_file``), so a symlink planted after submission is refused too.

Relative patterns and relative roots resolve against ``base``: the service's code folder at submission, the job's
working directory (the uploaded copy of that folder) in the job.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from curation.errors import ConfigError

#: Schemes a bucket root may use (object stores: no symlinks, no ``..`` resolution).
BUCKET_SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "abfss")
#: The bundled sample corpus (relative to the code folder): public data, allowed unless the operator says not.
SAMPLE_ROOT = "curation/data/sample"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_WILDCARDS = "*?["


def _scheme(path: str) -> str | None:
    m = _SCHEME.match(path)
    return m.group(1).lower() if m else None


def _has_dotdot(path: str) -> bool:
    return any(part == ".." for part in re.split(r"[/\\]", path))


def normalise_root(root: str) -> str:
    """A root as given on the command line, checked: a bucket prefix ends with ``/``; a local folder is kept as
    given (resolved against ``base`` when used). Raises ConfigError for another scheme or ``..``."""
    root = root.strip()
    if not root:
        raise ConfigError("--input-root: empty")
    if "::" in root or _has_dotdot(root):
        raise ConfigError(f"--input-root {root!r}: no '..' and no chained URLs")
    scheme = _scheme(root)
    if scheme is not None and "://" in root:
        if scheme not in BUCKET_SCHEMES:
            raise ConfigError(f"--input-root {root!r}: a local folder or a bucket prefix ({', '.join(BUCKET_SCHEMES)})")
        rest = root.split("://", 1)[1]
        if not rest.strip("/") or any(ch in rest for ch in _WILDCARDS):
            raise ConfigError(f"--input-root {root!r}: give a bucket and, optionally, a prefix (no wildcards)")
        return root.rstrip("/") + "/"
    return root


@dataclass(frozen=True)
class InputRoots:
    """``roots``: normalised roots (local folders as given, bucket prefixes ending in ``/``); ``base``: the folder
    relative patterns and roots resolve against."""

    roots: tuple[str, ...]
    base: str

    def local(self) -> list[str]:
        out = []
        for r in self.roots:
            if "://" not in r:
                p = os.path.realpath(os.path.join(self.base, os.path.expanduser(r)))
                if os.path.isdir(p):
                    out.append(p)
        return out

    def buckets(self) -> list[str]:
        return [r for r in self.roots if "://" in r]

    def describe(self) -> str:
        return ", ".join(self.roots) if self.roots else "(none)"

    def _refuse(self, path: str, why: str) -> ConfigError:
        if not self.roots:
            return ConfigError(f"input path {path!r}: this service lets submitted jobs read nothing (no input root "
                               "is declared); its operator can allow folders or bucket prefixes with "
                               "`curate serve --input-root PATH`")
        return ConfigError(f"input path {path!r} {why}; submitted jobs may read only under the service's input "
                           f"roots: {self.describe()} (its operator declares them with `curate serve --input-root "
                           "PATH`)")

    def _inside_local(self, real: str) -> bool:
        return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in self.local())

    def check_pattern(self, pattern: str) -> None:
        """Refuse a pattern that is not under a root (before anything is listed or opened)."""
        if "::" in pattern or "\0" in pattern:
            raise self._refuse(pattern, "is a chained URL")
        if _has_dotdot(pattern):
            raise self._refuse(pattern, "contains '..'")
        scheme = _scheme(pattern)
        if scheme is not None and len(scheme) > 1:  # (a one-letter "scheme" would be a Windows drive)
            if "://" not in pattern or scheme not in BUCKET_SCHEMES:
                raise self._refuse(pattern, f"uses the scheme {scheme}:, which submitted jobs may not read")
            if not any(pattern.startswith(b) for b in self.buckets()):
                raise self._refuse(pattern, "is outside the input roots")
            return
        cut = min((i for i, ch in enumerate(pattern) if ch in _WILDCARDS), default=len(pattern))
        fixed = pattern[:cut]
        fixed_dir = fixed if cut == len(pattern) else fixed[: fixed.rfind("/") + 1] if "/" in fixed else ""
        real = os.path.realpath(os.path.join(self.base, fixed_dir or "."))
        if not self._inside_local(real):
            raise self._refuse(pattern, f"resolves to {real}, outside the input roots")

    def check_file(self, path: str) -> None:
        """Refuse a matched file (full local path or URL) that is not under a root once symlinks are followed."""
        if "://" in path:
            if _has_dotdot(path) or not any(path.startswith(b) for b in self.buckets()):
                raise self._refuse(path, "is outside the input roots")
            return
        real = os.path.realpath(os.path.join(self.base, path))
        if not self._inside_local(real):
            raise self._refuse(path, f"resolves to {real}, outside the input roots")

    def check_artifact(self, value: str) -> None:
        """A file or folder a stage config names (a model, eval set, centroids, templates, tokenizer).

        A URL must lie under a bucket root; a local path (absolute, ``~``, ``.``-relative, or relative and
        existing under ``base``) must resolve inside a local root. Anything else is a name, not a path (a hub
        id such as ``org/model``, the bundled model's name, an API backend's model): loaders look it up by name.
        """
        if "\0" in value or "::" in value:
            raise self._refuse(value, "is a chained URL")
        if _has_dotdot(value):
            raise self._refuse(value, "contains '..'")
        scheme = _scheme(value)
        if scheme is not None and len(scheme) > 1:
            if "://" not in value or scheme not in BUCKET_SCHEMES:
                raise self._refuse(value, f"uses the scheme {scheme}:, which submitted jobs may not read")
            self.check_file(value)
            return
        if value.startswith("~"):
            raise self._refuse(value, "starts with '~'")
        local = os.path.isabs(value) or value.startswith(".") or os.path.lexists(os.path.join(self.base, value))
        if local:
            self.check_file(value)

    def check_patterns(self, patterns: list[str]) -> None:
        """Each pattern, and for local ones each file it matches now (a symlink out of a root is refused)."""
        import glob

        for pattern in patterns:
            self.check_pattern(pattern)
            if "://" not in pattern:
                for p in glob.glob(os.path.join(self.base, pattern), recursive=True):
                    self.check_file(p)


#: Set in a submitted job's driver (``curation.job_driver.job_main``): every ``expand_inputs`` of the job checks
#: against it. None (``curate run``): no confinement.
_ACTIVE: InputRoots | None = None


def confine(roots: InputRoots | None) -> None:
    global _ACTIVE
    _ACTIVE = roots


def active() -> InputRoots | None:
    return _ACTIVE


def code_root() -> Path:
    """The folder relative input paths of submitted jobs resolve against (uploaded as the job's working dir)."""
    return Path(__file__).resolve().parents[2]
