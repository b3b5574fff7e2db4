"""Checks on LLM outputs: each returns a rejection reason or None.

General: empty, truncated (the backend stopped at max_tokens), refusal-like, length ratio out of
bounds, leaked prompt (a canary or a long run of the instructions copied into the output),
degenerate repetition (SwallowCode's ``(.{100,})(\\1)+`` on outputs of >= 1,000 characters).
Code (SwallowCode): ``compile()`` must succeed, and pylint's score with the comment penalty must
reach a threshold, before (input gate) and after rewriting (output gate).
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tempfile
import tokenize
from dataclasses import dataclass

_REFUSAL = re.compile(
    r"^\s*(?:I(?:'m| am) sorry|I apologi[sz]e|As an AI|I cannot|I can(?:'|no)t (?:help|assist|comply|fulfil)|"
    r"Sorry, (?:but )?I)", re.IGNORECASE)
_REPEAT = re.compile(r"(.{100,})(\1)+", re.DOTALL)
_CODE_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)
_PYLINT_DISABLE = "E0401,C0114,C0301,C0103,C0116,C0411,R0903,W0511,C0412"  # SwallowCode's set
_RATING = re.compile(r"rated at (-?[\d.]+)/10")


@dataclass(kw_only=True)
class OutputChecks:
    """Bounds for generated text. ``min_ratio``/``max_ratio``: output characters over input
    characters; ``leak_ngram``: an output that contains this many consecutive words of the
    template's instructions is rejected as a leaked prompt."""

    min_ratio: float = 0.2
    max_ratio: float = 5.0
    leak_ngram: int = 12
    canary: str | None = None
    pylint_min: float = 7.0
    reject_truncated: bool = True


def extract_code_block(reply: str) -> str | None:
    m = _CODE_BLOCK.search(reply)
    return m.group(1).strip("\n") if m else None


def check_output(output: str, source: str, instructions: str, finish_reason: str | None, checks: OutputChecks) -> str | None:
    if not output.strip():
        return "empty"
    if finish_reason == "length" and checks.reject_truncated:
        return "truncated"
    if checks.canary and checks.canary in output:
        return "leaked_prompt"
    words = instructions.split()
    n = checks.leak_ngram
    if len(words) >= n:
        out_norm = " ".join(output.split())
        if any(" ".join(words[i: i + n]) in out_norm for i in range(len(words) - n + 1)):
            return "leaked_prompt"
    if _REFUSAL.search(output):
        return "refusal"
    ratio = len(output) / max(1, len(source))
    if ratio < checks.min_ratio or ratio > checks.max_ratio:
        return "length_ratio"
    if len(output) >= 1000 and _REPEAT.search(output):
        return "repetition"
    return None


def syntax_ok(code: str) -> bool:
    try:
        compile(code, "<string>", "exec")
    except (SyntaxError, ValueError):  # ValueError: source with null bytes
        return False
    return True


def comment_ratio(code: str) -> float:
    """Share of Python tokens that are comments (SwallowCode's penalty input)."""
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return 0.0
    toks = [t for t in toks if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                                               tokenize.ENDMARKER)]
    return sum(t.type == tokenize.COMMENT for t in toks) / len(toks) if toks else 0.0


def pylint_score(code: str) -> float:
    """pylint's rating with SwallowCode's disabled checks, times (1 - comment ratio)."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False, encoding="utf-8") as fh:
        fh.write(code)
        path = fh.name
    try:
        proc = subprocess.run([sys.executable, "-m", "pylint", "--persistent=n", f"--disable={_PYLINT_DISABLE}",
                               "--score=y", path], capture_output=True, text=True, timeout=120)
    finally:
        os.unlink(path)
    m = _RATING.search(proc.stdout)
    score = float(m.group(1)) if m else 0.0
    ratio = comment_ratio(code)
    return 0.0 if ratio >= 1.0 else score * (1.0 - ratio)


def check_code(code: str, pylint_min: float) -> tuple[str | None, float | None]:
    """(reason or None, penalised pylint score) for a Python snippet."""
    if not syntax_ok(code):
        return "syntax_error", None
    score = pylint_score(code)
    return ("pylint_below_threshold" if score < pylint_min else None), score
