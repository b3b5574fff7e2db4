"""Templates, chunking, output checks, SwallowCode gates and the ProX executor on exact inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from curation.errors import ConfigError
from curation.io.manifest import SchemaVersionError
from curation.rephrase.backends import Generation
from curation.rephrase.cache import CACHE, GenerationCache, cache_key
from curation.rephrase.checks import OutputChecks, check_code, check_output, comment_ratio, extract_code_block
from curation.rephrase.chunking import chunk_text, join_chunks
from curation.rephrase.prox import document_decision, execute, number_lines
from curation.rephrase.templates import BUILTIN, load_templates
from tests.conftest import PROSE


def words(s: str) -> int:
    return len(s.split())


def test_builtin_templates_and_user_yaml(tmp_path: Path) -> None:
    assert {"wrap_easy", "wrap_medium", "wrap_hard", "wrap_qa", "swallowmath", "swallowcode_sgcr", "swallowcode_scor",
            "prox_chunk"} <= set(BUILTIN)
    msgs = BUILTIN["wrap_qa"].messages("Some text.")
    assert msgs[0]["role"] == "system" and msgs[1]["content"].endswith("Some text.") and "Question:" in msgs[1]["content"]
    (tmp_path / "t.yaml").write_text("templates:\n  - {name: pirate, version: 1, system: 'Be a pirate.', user: 'Say: {text}'}\n")
    ts = load_templates(tmp_path / "t.yaml")
    assert ts["pirate"].key == "pirate@1" and ts["pirate"].prompt_hash() != BUILTIN["wrap_qa"].prompt_hash()
    (tmp_path / "bad.yaml").write_text("templates:\n  - {name: wrap_qa, version: 1, system: s, user: '{text}'}\n")
    with pytest.raises(ConfigError, match="version > 1"):
        load_templates(tmp_path / "bad.yaml")
    (tmp_path / "nop.yaml").write_text("templates:\n  - {name: x, version: 1, system: s, user: 'no placeholder'}\n")
    with pytest.raises(ConfigError, match="placeholder"):
        load_templates(tmp_path / "nop.yaml")


def test_chunks_respect_budget_and_reassemble_exactly() -> None:
    text = "\n\n".join(PROSE) + "\n\nA final short paragraph.\n"
    chunks = chunk_text(text, 60, words)
    assert len(chunks) > 3 and all(c.tokens <= 60 for c in chunks)
    assert "".join(c.text + c.sep for c in chunks) == text  # nothing lost, nothing added
    assert join_chunks([c.text for c in chunks], chunks) == text
    one = chunk_text("short text", 300, words)
    assert [c.text for c in one] == ["short text"] and one[0].sep == ""
    lines = chunk_text("a b\nc d\ne f\n", 4, words, mode="lines")
    assert [c.text for c in lines] == ["a b\nc d", "e f"]


def test_output_checks() -> None:
    ck = OutputChecks(canary="ZX-CANARY-91")
    src = "The cat sat on the mat and looked at the birds outside the window."
    instr = "For the following paragraph give me a diverse paraphrase of the same in high quality English language as in sentences on Wikipedia:"
    assert check_output("A cat was sitting on a mat, watching birds through the window.", src, instr, "stop", ck) is None
    assert check_output("  ", src, instr, "stop", ck) == "empty"
    assert check_output("A cat sat.", src, instr, "length", ck) == "truncated"
    assert check_output("I'm sorry, but I cannot help with that request today.", src, instr, "stop", ck) == "refusal"
    assert check_output("cat", src, instr, "stop", ck) == "length_ratio"
    assert check_output("ok ZX-CANARY-91 the cat sat on the mat", src, instr, "stop", ck) == "leaked_prompt"
    leak = "give me a diverse paraphrase of the same in high quality English language as in sentences on Wikipedia"
    assert check_output(leak, src * 3, instr, "stop", ck) == "leaked_prompt"
    looped = "x" * 10 + ("this sentence repeats itself over and over again without any end in sight, " * 2) * 8
    assert check_output(looped, looped, instr, "stop", OutputChecks(max_ratio=10)) == "repetition"


GOOD = '''"""Small, typed helpers for temperatures."""


def celsius_to_fahrenheit(celsius: float) -> float:
    """Convert a temperature from Celsius to Fahrenheit."""
    return celsius * 9.0 / 5.0 + 32.0


def fahrenheit_to_celsius(fahrenheit: float) -> float:
    """Convert a temperature from Fahrenheit to Celsius."""
    return (fahrenheit - 32.0) * 5.0 / 9.0
'''


def test_code_gates_on_real_snippets() -> None:
    assert check_code("def broken(:\n    return 1\n", 7.0) == ("syntax_error", None)
    reason, score = check_code(GOOD, 7.0)
    assert reason is None and score is not None and score >= 9.0
    sloppy = "import os, sys\ndef f(a,b):\n  x=1\n  y=2\n  return a\nprint(f(1,2))\n"
    reason, score = check_code(sloppy, 7.0)
    assert reason == "pylint_below_threshold" and score < 7.0
    assert comment_ratio("# a\n# b\n") == 1.0 and check_code("# only comments\n", 0.1)[1] == 0.0
    assert extract_code_block("Here:\n```python\nx = 1\n```\nDone") == "x = 1"


def test_prox_program_execution_and_fallbacks() -> None:
    text = "Home | About | Login\nThe river floods every spring.\nFarmers plant after the water recedes.\nCopyright 2024"
    assert number_lines("a\nb").startswith("[000] a\n[001] b")
    res = execute("remove_lines(line_start=0, line_end=0)\nnormalize(source_str=\"2024\", target_str=\"\")\n"
                  "remove_lines(line_start=3, line_end=3)\nkeep_chunk()", text)
    assert res.text == "The river floods every spring.\nFarmers plant after the water recedes." and res.errors == 0
    bad = execute("remove_lines(line_start=0\nnot_a_call\nexplode()", text)
    assert bad.errors == 3
    assert document_decision(text, bad.text, bad.errors) == (None, text)  # >= 2 errors: original text
    assert document_decision(text, execute("remove_lines(all=True)", text).text, 0)[0] == "prox_dropped"
    long = " ".join(["word"] * 100)
    assert document_decision(long, "only five words left here", 0)[0] == "prox_dropped"
    assert document_decision("a b c d e f g h i j k l", "a b c d e f g h i j", 0)[0] == "prox_too_short"


def test_cache_keys_separate_endpoints_serving_the_same_model_name(tmp_path: Path) -> None:
    args = ("d0", 0, "Some text.", "wrap_easy@1", "prompt-hash", "served-name", {"temperature": 0.2})
    a = cache_key(*args, endpoint="http://10.0.0.1:8000/v1")
    b = cache_key(*args, endpoint="http://10.0.0.2:8000/v1")
    cache = GenerationCache(tmp_path)
    cache.put_many({a: Generation("written by server A", 3, 4, "stop", 0.1)})
    assert cache.get_many([b]) == {}  # server B's lookup never sees A's generation
    assert cache.get_many([a])[a].text == "written by server A"
    assert cache_key(*args, endpoint="http://10.0.0.1:8000/v1/") == a  # a trailing slash is the same endpoint
    assert cache_key(*args) == cache_key(*args, endpoint=None) not in (a, b)  # local models: no endpoint


def test_a_cache_file_of_another_version_is_refused_with_the_one_message(tmp_path: Path) -> None:
    """A new cache file gets this version (SQLite ``user_version``) and reads back; a file written before caches
    had one (same table, ``user_version`` 0, keys made another way) or of another version is refused, naming it."""
    import sqlite3

    key = cache_key("d0", 0, "Some text.", "wrap_easy@1", "prompt-hash", "local-model", {})
    GenerationCache(tmp_path / "new").put_many({key: Generation("kept", 1, 2, "stop", 0.1)})
    assert GenerationCache(tmp_path / "new").get_many([key])[key].text == "kept"  # reopened: this version's
    path = tmp_path / "old" / "generations.sqlite"
    path.parent.mkdir()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE gen (key TEXT PRIMARY KEY, text TEXT NOT NULL, tokens_in INTEGER, "
                   "tokens_out INTEGER, finish_reason TEXT, seconds REAL)")
    for version, found in ((0, "no user_version"), (CACHE.version + 1, f"user_version {CACHE.version + 1}")):
        with sqlite3.connect(path) as db:
            db.execute(f"PRAGMA user_version = {version}")
        with pytest.raises(SchemaVersionError) as e:
            GenerationCache(path.parent)
        assert str(e.value) == (f"{path}: generation cache written by another version of this project ({found}); "
                                f"this version reads only user_version {CACHE.version}: {CACHE.remedy}")


def test_builtin_templates_keep_their_prompt_hashes() -> None:
    """The built-ins are read from builtin_templates.yaml; their texts (hence cache keys) are pinned, so a
    reformatted YAML that changes one character of a prompt fails here instead of silently invalidating caches."""
    from curation.rephrase.templates import BUILTIN

    assert {k: t.prompt_hash() for k, t in BUILTIN.items()} == {
        "wrap_easy": "4bf574f89fb7f398", "wrap_medium": "ef49d649c93f9043", "wrap_hard": "b2ad5d49d58d4495",
        "wrap_qa": "6e5737f393950cad", "swallowmath": "02d9595ba361ba13", "swallowcode_sgcr": "feefe8317ac3970f",
        "swallowcode_scor": "5c057ed4bae0f113", "prox_chunk": "fa404a62d34146ff"}
    assert BUILTIN["swallowcode_scor"].extract == "code_block" and BUILTIN["prox_chunk"].extract == "program"
