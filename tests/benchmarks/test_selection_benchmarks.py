"""The --quick modes of benchmarks/preselect_effect.py and benchmarks/cmr_holdout.py run end to end.

They assert that the pipeline ran (every arm trained and evaluated, every ratio predicted), not
which arm wins: the quick scale is far too small for that (docs/preselect_effect.md)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_roff_text_strips_markup() -> None:
    mod = _load("preselect_effect")
    src = '.\\" comment\n.TH LS 1\n.SH NAME\nls \\- list \\fBdirectory\\fR contents\n.B \\-a\n.PP\ndo not ignore'
    assert mod.roff_text(src) == "NAME\nls - list directory contents\n-a\n\ndo not ignore"


@pytest.mark.parametrize("in_process", [True, False])
def test_a_failing_command_raises_with_what_it_printed(tmp_path: Path, in_process: bool) -> None:
    # `curate run` prints its user errors on stdout (exit 2): the error must carry them, else a
    # failed experiment step says only "command failed (2)"
    commands = _load("_commands")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "input": {"paths": [str(tmp_path / "*.jsonl")]},
                               "stages": [{"stage": "no_such_stage_v1"}], "output": {"dir": str(tmp_path / "out")}}))
    cmds = commands.Commands(REPO, tmp_path / "commands.log", threads=1, in_process=in_process)
    with pytest.raises(commands.CommandError, match=r"(?s)failed \(2\): python -m curation.cli run .*no_such_stage_v1"):
        cmds("curation.cli", "run", str(bad))
    assert "curation.cli run" in (tmp_path / "commands.log").read_text()  # logged, with its time, even when failing


@pytest.mark.slow
def test_preselect_effect_quick_runs_the_loop(tmp_path: Path) -> None:
    res = _load("preselect_effect").main(["--out", str(tmp_path), "--quick"])
    assert set(res["arms"]) == {"preselect", "dclm", "perplexity", "random", "none"}
    assert len(res["family"]) >= 6 and len({m["score"] for m in res["family"]}) >= 2
    for arm, a in res["arms"].items():
        assert a["docs"] > 0 and a["tokens_seen"] > 0, arm
        for s in a["seeds"]:
            assert math.isfinite(s["target_loss"]) and math.isfinite(s["general_loss"]) and s["curve"], arm
    pool = res["arms"]["none"]["docs"]
    assert all(res["arms"][a]["docs"] < pool for a in ("preselect", "dclm", "perplexity", "random"))
    assert (tmp_path / "curves.png").stat().st_size > 10_000 and "| preselect |" in (tmp_path / "table.md").read_text()


@pytest.mark.slow
def test_cmr_holdout_quick_predicts_every_ratio(tmp_path: Path) -> None:
    res = _load("cmr_holdout").main(["--out", str(tmp_path), "--quick"])
    assert [r["ratio"] for r in res["holdout"]] == res["params"]["ratios"] and len(res["holdout"]) >= 6
    assert all(math.isfinite(r["pred_d_general"]) and math.isfinite(r["meas_d_domain"]) for r in res["holdout"])
    assert 0.0 <= res["critical"]["critical_ratio"] <= 1.0
    assert "left-out R" in (tmp_path / "table.md").read_text()
