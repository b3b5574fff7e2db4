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

_VICUNA = ("A chat between a curious user and an artificial intelligence assistant. "
           "The assistant gives helpful, detailed, and polite answers to the questions.")


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


def _wrap(name: str, instruction: str) -> Template:
    return Template(name=name, version=1, system=_VICUNA, user=f"{instruction}\n\n{{text}}")


BUILTIN: dict[str, Template] = {t.name: t for t in [
    _wrap("wrap_easy", "For the following paragraph give me a paraphrase of the same using a very small vocabulary "
                       "and extremely simple sentences that a toddler will understand:"),
    _wrap("wrap_medium", "For the following paragraph give me a diverse paraphrase of the same in high quality "
                         "English language as in sentences on Wikipedia:"),
    _wrap("wrap_hard", "For the following paragraph give me a paraphrase of the same using very terse and abstruse "
                       "language that only an erudite scholar will understand. Replace simple words and phrases "
                       "with rare and complex ones:"),
    _wrap("wrap_qa", "Convert the following paragraph into a conversational format with multiple tags of "
                     "\"Question:\" followed by \"Answer:\":"),
    Template(name="swallowmath", version=1, kind="math", system=(
        "You are an intelligent math tutor. You are given the following math problem and answer with some "
        "unnecessary parts. Please remove the unneeded parts of the questions. For example, the date of the "
        "question submitted, the answer date, the privacy policy, the footer, the header, etc, should be removed. "
        "However, please keep the main question and answer. If questions or answers lack some information or are "
        "not elaborate, please make them more informative and easy to understand. If needed, please add more "
        "detail information about math formulas. Rewrite the calculation step by step and give the final answer "
        "after '####'."), user="{text}"),
    Template(name="swallowcode_sgcr", version=1, kind="code", extract="code_block", system=(
        "You are a smart software engineer. Please evaluate the following code on a scale of 1 to 10 based on: "
        "descriptive and consistent names; useful comments and docstrings; type hints; modular functions with a "
        "single responsibility; controlled variable lifetimes; appropriate error handling; standard indentation "
        "and formatting; comments that explain why, not what; single-responsibility classes and functions; "
        "readability. Then give suggestions for improvement and finally an improved version of the code that "
        "follows the Google Python Style Guide. Answer in three sections: [Evaluation], [Suggestions], "
        "[Improved Code], the last one as a ```python code block."), user="```python\n{text}\n```"),
    Template(name="swallowcode_scor", version=1, kind="code", extract="code_block", system=(
        "You are a smart software engineer. Rewrite the following Python code so that it is self-contained, "
        "well-structured and pythonic: meaningful names, a docstring, type hints, block comments where they help, "
        "no dependence on external variables, error-free, no redundant operations, efficient algorithms and data "
        "structures. If the snippet is not self-contained or is trivial, turn it into a more educational, useful "
        "program. Answer with one ```python code block."), user="```python\n{text}\n```"),
    Template(name="prox_chunk", version=1, kind="prox", extract="program", system=(
        "You are a helpful, respectful and honest assistant. You refine web text for language-model pre-training. "
        "Each line of the document is prefixed with its index. Answer with one function call per line, using only: "
        "remove_lines(line_start=A, line_end=B) to delete lines A..B (inclusive), remove_lines(all=True), "
        "normalize(source_str=\"x\", target_str=\"y\") to replace a string everywhere, or keep_chunk()."),
        user="[doc]\n{text}\n[/doc]"),
]}


def load_templates(path: str | Path | None) -> dict[str, Template]:
    """Built-in templates plus those in a YAML file (a list of Template fields); a user template
    with a built-in's name must raise its version."""
    out = dict(BUILTIN)
    if path is None:
        return out
    items = load_yaml(path).get("templates", [])  # a mapping: {templates: [...]}
    for i, item in enumerate(items):
        t = from_dict(Template, item, where=f"{path}: templates[{i}]")
        if t.name in BUILTIN and t.version <= BUILTIN[t.name].version:
            raise ConfigError(f"{path}: template {t.name!r} redefines a built-in: give it version > {BUILTIN[t.name].version}")
        out[t.name] = t
    return out
