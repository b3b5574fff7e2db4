"""``train`` is a typer app like ``curate``; every module entry point parses through it and so
refuses unknown flags (exit 2 naming them) instead of ignoring them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import REPO
from training.cli import app


def _cfg(tmp: Path, run: Path) -> Path:
    cfg = yaml.safe_load((REPO / "training" / "configs" / "tiny.yaml").read_text())
    cfg["data"].update(runs=[str(run)], seq_len=32, batch_size=2)
    cfg.update(out_dir=str(tmp / "out"), steps=2, eval_every=2, checkpoint_every=2)
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_python_m_training_cli_run_refuses_unknown_flag_and_keeps_overrides(sample_run: Path, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, sample_run)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    bad = subprocess.run([sys.executable, "-m", "training.cli", "run", str(cfg), "--bogus"], capture_output=True,
                         text=True, cwd=REPO, env=env, timeout=300)
    assert bad.returncode == 2 and "--bogus" in bad.stderr, bad.stdout[-2000:] + bad.stderr[-2000:]
    assert not (tmp_path / "out").exists()  # refused before any training
    ok = subprocess.run([sys.executable, "-m", "training.cli", "run", str(cfg), "-o", f"out_dir={tmp_path / 'o2'}",
                         "--set", "steps=1"], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    assert json.loads(ok.stdout.strip().splitlines()[-1])["rank"] == 0
    assert (tmp_path / "o2" / "log.jsonl").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [
    ["run", "cfg.yaml", "--bogus"],
    ["cmr", "fit", "run", "--general", "g", "--domain", "d", "--out", "f.json", "--bogus"],
    ["skills-graph", "linear", "cfg.yaml", "--skills", "a", "--out", "g.json", "--bogus"],
    ["ray", "cfg.yaml", "--bogus"],
])
def test_every_command_refuses_unknown_flags(argv: list[str]) -> None:
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 2 and "No such option: --bogus" in res.output, res.output


@pytest.mark.parametrize("module", ["training.train", "training.cmr", "training.skills_graph", "training.ray_launch"])
def test_one_door_per_command_the_modules_have_no_entry_points(module: str) -> None:
    """``train ...`` (``python -m training.cli``) is the only way in: the modules behind it run nothing as programs."""
    r = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert r.returncode == 0 and r.stdout == "", (r.stdout[-500:], r.stderr[-500:])
    assert not hasattr(__import__(module, fromlist=["main"]), "main")


def test_train_app_lists_commands_and_reports_config_errors_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and all(c in res.output for c in ("run", "ray", "cmr", "skills-graph"))
    cfg = tmp_path / "c.yaml"
    cfg.write_text((REPO / "training" / "configs" / "tiny.yaml").read_text())
    res = runner.invoke(app, ["run", str(cfg), "-o", "bogus_key=1"])
    assert res.exit_code == 2 and "unknown key(s) 'bogus_key'" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(app, ["skills-graph", "cubic", str(cfg), "--skills", "a", "--out", str(tmp_path / "g")])
    assert res.exit_code == 2 and "'cubic' is not one of" in res.output


@pytest.mark.parametrize("corrupt", [
    lambda m: '{"shards": [',  # cut short: not JSON
    lambda m: json.dumps({**m, "shards": [{**m["shards"][0], "path": "../elsewhere.parquet"}]}),  # leaves the run
])
def test_train_run_on_a_corrupt_manifest_exits_2_with_one_error_line(sample_run: Path, tmp_path: Path,
                                                                      corrupt) -> None:  # type: ignore[no-untyped-def]
    """The loader's ``ManifestError`` is curation's (a ``CurationError``): one ``error:`` line naming the manifest,
    exit 2, no traceback."""
    run = tmp_path / "run"
    shutil.copytree(sample_run, run)
    manifest = run / "manifest.json"
    manifest.write_text(corrupt(json.loads(manifest.read_text())))
    res = CliRunner().invoke(app, ["run", str(_cfg(tmp_path, run))])
    assert res.exit_code == 2, res.output
    assert res.stdout == "" and len(res.stderr.splitlines()) == 1, res.output
    assert res.stderr.startswith(f"error: {manifest}: "), res.stderr
