"""ProX chunk programs: parse the refining model's function calls and execute them (docs/methods.md, ProX).

Lines of a chunk are shown to the model prefixed ``[000]``, ``[001]``...; it answers with calls:
``remove_lines(line_start=a, line_end=b)``, ``remove_lines(all=True)``,
``normalize(source_str="x", target_str="y")`` (one argument deletes x), ``keep_chunk()``.
The executor applies every normalize, then deletes the union of the line ranges; a call it cannot
parse counts as an error. Document-level rules (paper defaults): <= 5% of words left and < 2
errors -> drop; <= 10 words left -> drop; >= 2 errors -> keep the original text.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

_CALL = re.compile(r"^\s*(\w+)\((.*)\)\s*$")


def number_lines(text: str) -> str:
    return "\n".join(f"[{i:03d}] {line}" for i, line in enumerate(text.split("\n")))


@dataclass
class ProxResult:
    text: str
    errors: int


def execute(program: str, text: str) -> ProxResult:
    lines = text.split("\n")
    remove: set[int] = set()
    replacements: list[tuple[str, str]] = []
    errors = 0
    for raw in program.strip().splitlines():
        if not raw.strip():
            continue
        m = _CALL.match(raw)
        if not m:
            errors += 1
            continue
        name, args = m.group(1), m.group(2)
        try:
            call = ast.parse(f"f({args})", mode="eval").body
            assert isinstance(call, ast.Call)
            kw = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
            pos = [ast.literal_eval(a) for a in call.args]
        except (SyntaxError, ValueError, AssertionError):
            errors += 1
            continue
        if name == "keep_chunk":
            continue
        if name == "remove_lines":
            if kw.get("all") is True:
                remove.update(range(len(lines)))
                continue
            start, end = kw.get("line_start"), kw.get("line_end")
            if not isinstance(start, int) or not isinstance(end, int) or start > end:
                errors += 1
                continue
            remove.update(range(max(0, start), min(len(lines) - 1, end) + 1))
        elif name == "normalize":
            src = kw.get("source_str", pos[0] if pos else None)
            dst = kw.get("target_str", pos[1] if len(pos) > 1 else "")
            if not isinstance(src, str) or not isinstance(dst, str):
                errors += 1
            elif src.strip():  # empty or whitespace sources are ignored
                replacements.append((src, dst))
        else:
            errors += 1
    for src, dst in replacements:
        lines = [line.replace(src, dst) for line in lines]
    return ProxResult("\n".join(line for i, line in enumerate(lines) if i not in remove), errors)


def document_decision(original: str, refined: str, errors: int, drop_ratio: float = 0.95,
                      min_words: int = 10, max_errors: int = 2) -> tuple[str | None, str]:
    """(reason to drop or None, text to keep) after executing every chunk of a document."""
    n_orig = max(1, len(original.split()))
    n_kept = len(refined.split())
    if n_kept / n_orig <= 1 - drop_ratio and errors < max_errors:
        return "prox_dropped", ""
    if n_kept <= min_words and errors < max_errors:
        return "prox_too_short", ""
    if errors >= max_errors:
        return None, original  # the program is not trusted: fall back to the original text
    return None, refined
