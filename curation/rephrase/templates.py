"""Versioned prompt templates: WRAP's four styles, SwallowMath, SwallowCode (SGCR, SCOR), ProX chunk refining.

A template is a system message plus a user message with ``{text}`` where the chunk goes, and an
``extract`` rule for the answer (the whole reply, the first Python code block, or a ProX program).
Its identity is ``name@version`` and a hash of its texts; changing a prompt means a new version,
and the cache key includes both, so old outputs are never served for a new prompt.
Users add templates in YAML (``templates_file``): ``templates:`` followed by a list of these fields.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from curation.config import check_choices, from_dict, load_yaml
from curation.errors import ConfigError

@dataclass(kw_only=True, frozen=True)
class Template:
    """``kind``: text (prose rewrite), math, code (Python: syntax and lint gates apply) or prox.
    ``extract``: reply (whole reply, stripped), code_block (first fenced block) or program (ProX)."""

    name: str
    version: int
    system: str
    user: str
    kind: Literal["code", "math", "prox", "text"] = "text"
    extract: Literal["code_block", "program", "reply"] = "reply"

    def __post_init__(self) -> None:
        if "{text}" not in self.user:
            raise ConfigError(f"template {self.name}: the user message needs a {{text}} placeholder")
        try:
            check_choices(self)
        except ValueError as exc:
            raise ConfigError(f"template {self.name}: {exc}") from None

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    def messages(self, text: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user.replace("{text}", text)}]

    def prompt_hash(self) -> str:
        return hashlib.sha256(f"{self.key}\0{self.system}\0{self.user}".encode()).hexdigest()[:16]


def _read_templates(path: str | Path, where: str) -> list[Template]:
    items = load_yaml(path).get("templates", [])  # a mapping: {templates: [...]}
    if not isinstance(items, list):
        raise ConfigError(f"{where}: templates must be a list")
    return [from_dict(Template, item, where=f"{where}: templates[{i}]") for i, item in enumerate(items)]


#: WRAP's four styles (Vicuna system prompt), SwallowMath, SwallowCode SGCR and SCOR, ProX chunk refining.
#: They live in a YAML file of the same format users write, next to this module.
_BUILTIN_FILE = Path(__file__).with_name("builtin_templates.yaml")
BUILTIN: dict[str, Template] = {t.name: t for t in _read_templates(_BUILTIN_FILE, str(_BUILTIN_FILE))}


def load_templates(path: str | Path | None) -> dict[str, Template]:
    """Built-in templates plus those in a YAML file (a list of Template fields); a user template
    with a built-in's name must raise its version."""
    out = dict(BUILTIN)
    if path is None:
        return out
    for t in _read_templates(path, str(path)):
        if t.name in BUILTIN and t.version <= BUILTIN[t.name].version:
            raise ConfigError(f"{path}: template {t.name!r} redefines a built-in: give it version > {BUILTIN[t.name].version}")
        out[t.name] = t
    return out
