"""A run's inputs: glob patterns or URLs expanded into numbered ``Task``s, one per input file.

A task is the unit of work, retry and resume of every executor, and ``expand_inputs`` is also how
scorer training (``curation.scoring``) and the planner read input files, so it lives beside the other
run-directory I/O rather than in the executors.
"""

from __future__ import annotations

from dataclasses import dataclass

import fsspec

from curation.errors import ConfigError


@dataclass(frozen=True)
class Task:
    """One input file: the unit of work, retry and resume."""

    index: int
    path: str  # full path or URL
    source: str  # path relative to its pattern's fixed prefix; the documents' ``source``
    size: int


def _fixed_prefix(pattern: str) -> str:
    """The part of a glob before its first wildcard, cut back to a directory."""
    cut = min((i for i, ch in enumerate(pattern) if ch in "*?["), default=len(pattern))
    head = pattern[:cut]
    if cut == len(pattern):  # a plain file: its folder is the root
        return head.rsplit("/", 1)[0] + "/" if "/" in head else ""
    return head[: head.rfind("/") + 1] if "/" in head else ""


def expand_inputs(patterns: list[str]) -> list[Task]:
    """Expand globs/URLs into tasks, sorted and numbered; an empty match is an error.

    In a job submitted through ``curate serve`` every pattern and every file it matches must lie under the
    service's input roots (``curation.io.input_roots``); ``curate run`` reads what it is given."""
    from curation.io import input_roots

    roots = input_roots.active()
    found: list[tuple[str, str, int]] = []
    for pattern in patterns:
        if roots is not None:
            roots.check_pattern(pattern)
        fs, _, paths = fsspec.get_fs_token_paths(pattern)
        paths = [p for p in paths if not p.endswith(".tmp")]
        if not paths:
            raise ConfigError(f"input path {pattern!r} matches no file")
        prefix = fs._strip_protocol(_fixed_prefix(pattern)) if _fixed_prefix(pattern) else ""
        for p in sorted(paths):
            info = fs.info(p)
            if info.get("type") == "directory":
                continue
            rel = p[len(prefix):] if prefix and p.startswith(prefix) else p.rsplit("/", 1)[-1]
            full = p if fs.protocol in ("file", ("file", "local")) or "file" in fs.protocol else fs.unstrip_protocol(p)
            if roots is not None:
                roots.check_file(full)  # a symlink in a root pointing out of it, planted after submission
            found.append((full, rel.lstrip("/"), int(info.get("size") or 0)))
    sources = [s for _, s, _ in found]
    dupes = sorted({s for s in sources if sources.count(s) > 1})
    if dupes:
        raise ConfigError(f"input patterns give files with the same relative name: {dupes[:5]}")
    return [Task(index=i, path=p, source=s, size=n) for i, (p, s, n) in enumerate(found)]
