"""The DuckDB sandbox of ``curate stats`` / ``curate query`` holds for any run directory.

Every escape is tried for real against a real run: SQL injection through an edited manifest or
file names, DuckDB's shared ``.tmp`` spill directory, symlinks and ``..`` out of the run, and the
time, memory and spill limits. Each must end in a one-line error (exit 2 on the CLI), never a
file outside the run, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curation.cli import app
from curation.errors import ConfigError, CurationError
from curation.query_sandbox import Limits
from curation.stats import query, summary
from tests.conftest import PROSE, pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline
from tests.curation.io.test_object_store import s3  # noqa: F401  (the moto S3 server fixture)

SLOW_SQL = "SELECT sum(hash(i)) FROM range(100000000000) t(i)"  # minutes of work: only a timeout ends it
BIG_LIST_SQL = "SELECT list(i) FROM range(30000000) t(i)"  # one ~240 MB value: over a 64MB memory limit
BIG_SORT_SQL = ("SELECT i, md5(i::VARCHAR) a, md5((i + 1)::VARCHAR) b FROM range(10000000) t(i) ORDER BY a")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    write_jsonl(d / "a.jsonl", [{"id": "a1", "text": PROSE[0], "domain": "web"},
                                {"id": "a2", "text": PROSE[1], "domain": "web"},
                                {"id": "a3", "text": "too short", "domain": "web"},
                                {"id": "b1", "text": PROSE[0] + "  ", "domain": "books"},
                                {"id": "b2", "text": PROSE[2], "domain": "books"}])
    return d


@pytest.fixture(scope="module")
def base_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run with shards and decisions; tests that edit a run work on a copy."""
    out = tmp_path_factory.mktemp("runs") / "run"
    run_pipeline(pipeline_dict([str(corpus / "*")], out))
    return out


@pytest.fixture(scope="module")
def empty_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run that keeps zero documents: manifest and decisions written, no shards. The run's own
    outcome is not under test here (only the directory it leaves)."""
    out = tmp_path_factory.mktemp("runs") / "empty"
    with contextlib.suppress(CurationError):
        run_pipeline(pipeline_dict([str(corpus / "*")], out, stages=[{"stage": "text_length_v1", "min_chars": 10**9}]))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shards"] == [] and not list((out / "shards").glob("*.parquet"))
    return out


@pytest.fixture
def run_copy(base_run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "work" / "run"
    shutil.copytree(base_run, dst)
    return dst


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the run holding a secret (what an escape would read)."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret.csv").write_text("secret\nhunter2\n")
    return d


def _spill_dirs() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("curate-sql-*"))


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own temp folder: counting spill folders in the shared /tmp would also count those of
    queries other test processes run at the same moment."""
    folder = tmp_path / "private-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


# --- views are built from data, after the lock ---------------------------------------------------------


@pytest.mark.parametrize("column_template", [
    # before the fix this column name closed the identifier and ran a COPY before the connection was locked
    'x" WHERE false; COPY (SELECT 42) TO {target} (FORMAT csv); --',
    # a score_ column reaches score_histogram, which ran after the lock but may write inside the run dir
    'score_x" AS DOUBLE) FROM docs); COPY (SELECT 42) TO {inside} (FORMAT csv); --',
])
def test_manifest_column_names_cannot_inject_sql(empty_run: Path, tmp_path: Path, column_template: str) -> None:
    run = tmp_path / "run"
    shutil.copytree(empty_run, run)
    target, inside = tmp_path / "pwned.csv", run / "pwned.csv"
    column = column_template.format(target=f"'{target}'", inside=f"'{inside}'")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["schema"].append({"name": column, "type": "double"})
    (run / "manifest.json").write_text(json.dumps(manifest))

    try:
        s = summary(run)
        cols, rows = query(run, "SELECT * FROM docs")
    finally:  # checked even when the calls fail: before the fix the COPY ran, then the call crashed
        assert not target.exists() and not inside.exists()
    assert cols[-1] == column and rows == []  # the name is data: one odd but harmless column
    if column.startswith("score_"):
        assert s["scores"] == {column: []}


def test_run_dir_names_with_quotes_and_glob_characters_are_data(base_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "it's run[1]"
    shutil.copytree(base_run, run)
    shutil.copytree(base_run, tmp_path / "run1")  # what '[1]' would match as a glob
    first = sorted((run / "decisions").glob("*.parquet"))[0]
    (run / "decisions" / "x' UNION SELECT 1 --.parquet").write_bytes(first.read_bytes())  # a copy, odd name
    dropped = sum(r[2] for r in summary(base_run)["reasons"])
    s = summary(run)
    assert sum(r[2] for r in s["reasons"]) == dropped + pq.read_metadata(first).num_rows  # nothing from run1
    assert query(run, "SELECT count(*) FROM docs")[1] == [(3,)]


def test_malformed_manifest_is_a_clear_error(run_copy: Path) -> None:
    (run_copy / "manifest.json").write_text("{not json")
    with pytest.raises(ConfigError, match="manifest.json: not a valid manifest"):
        summary(run_copy)
    (run_copy / "manifest.json").write_text(json.dumps({"schema_version": 1, "shards": [], "stages": [{"name": "x"}],
                                                        "schema": [], "totals": {}, "domains": {}}))
    with pytest.raises(ConfigError, match="manifest.json: malformed entry"):
        query(run_copy, "SELECT 1")


# --- reads stay inside the run directory ---------------------------------------------------------------


def test_default_dot_tmp_spill_dir_is_not_readable(run_copy: Path, tmp_path: Path, private_tmp: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # DuckDB's default temp_directory is .tmp under the working directory
    (tmp_path / ".tmp").mkdir()
    (tmp_path / ".tmp" / "other.csv").write_text("a\nsecret\n")
    with pytest.raises(ConfigError, match="refused: Permission"):
        query(run_copy, "SELECT * FROM read_csv('.tmp/other.csv')")
    before = _spill_dirs()
    (spill,), = query(run_copy, "SELECT current_setting('temp_directory')")[1]
    assert Path(spill).parent == Path(tempfile.gettempdir()) and Path(spill).name.startswith("curate-sql-")
    assert not Path(spill).exists() and _spill_dirs() == before  # private, and removed on close


def test_symlinks_out_of_the_run_are_refused(run_copy: Path, outside: Path) -> None:
    (run_copy / "leak.csv").symlink_to(outside / "secret.csv")
    (run_copy / "leakdir").symlink_to(outside, target_is_directory=True)
    for sql in [f"SELECT * FROM read_csv('{run_copy}/leak.csv')",
                f"SELECT * FROM read_text('{run_copy}/leakdir/secret.csv')",
                f"SELECT * FROM glob('{run_copy}/leakdir/*')",
                f"SELECT * FROM read_csv('{run_copy}/*/*.csv')"]:
        with pytest.raises(ConfigError, match="refused: Permission"):
            query(run_copy, sql)
    # A view whose folder is a symlink out of the run is refused too, not read.
    shutil.copytree(run_copy / "decisions", outside / "decisions")
    shutil.rmtree(run_copy / "decisions")
    (run_copy / "decisions").symlink_to(outside / "decisions", target_is_directory=True)
    with pytest.raises(ConfigError, match="refused: Permission"):
        summary(run_copy)


@pytest.mark.parametrize("path", ["{run}/../outside/secret.csv", "{run}/shards/../../outside/secret.csv",
                                  "{run}//../outside/secret.csv", "file://{run}/../outside/secret.csv"])
def test_dotdot_paths_are_refused(run_copy: Path, outside: Path, path: str) -> None:
    shutil.copytree(outside, run_copy.parent / "outside")
    with pytest.raises(ConfigError, match="refused: Permission"):
        query(run_copy, f"SELECT * FROM read_csv('{path.format(run=run_copy)}')")


def test_files_inside_the_run_stay_readable(run_copy: Path) -> None:
    assert query(run_copy, f"SELECT count(*) FROM read_parquet('{run_copy}/shards/*.parquet')")[1] == [(3,)]
    (name,), = query(run_copy, f"SELECT file FROM glob('{run_copy}/manifest.json')")[1]
    assert name == f"{run_copy}/manifest.json"


# --- limits --------------------------------------------------------------------------------------------


def test_limits_are_set_and_locked(run_copy: Path) -> None:
    cols, rows = query(run_copy, "SELECT current_setting('memory_limit'), current_setting('threads'), "
                                 "current_setting('max_temp_directory_size'), current_setting('lock_configuration'), "
                                 "current_setting('enable_external_access'), "
                                 "current_setting('autoload_known_extensions')",
                       limits=Limits(memory_limit="512MB", threads=1, spill_limit="100MB"))
    assert rows == [("488.2 MiB", 1, "95.3 MiB", True, False, False)]


def test_timeout_interrupts_the_query(run_copy: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"time limit \(--timeout 0.5 s\)"):
        query(run_copy, SLOW_SQL, limits=Limits(timeout_s=0.5))
    assert time.monotonic() - t0 < 10


def test_a_scalar_call_past_the_limit_is_killed_and_its_spill_dir_removed(run_copy: Path, private_tmp: Path) -> None:
    # One levenshtein call has no chunk boundary for the interrupt: ~37 s uninterrupted here. Its worker process
    # is killed at the limit plus GRACE_S instead (tests/security/test_query_kill.py has the CLI and service).
    before = _spill_dirs()
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"time limit \(--timeout 1 s\)"):
        query(run_copy, "SELECT levenshtein(repeat('a', 200000), repeat('b', 200000))", limits=Limits(timeout_s=1))
    assert time.monotonic() - t0 < 8
    assert _spill_dirs() == before  # removed by the parent: the killed worker could not


def test_without_a_time_limit_the_connection_stays_in_process(run_copy: Path) -> None:
    from curation.query_sandbox import RemoteConnection
    from curation.stats import open_run

    with open_run(run_copy, Limits(timeout_s=None)) as (con, _):
        assert not isinstance(con, RemoteConnection)  # nothing to enforce: no worker to start
        assert con.execute("SELECT current_setting('lock_configuration')").fetchone() == (True,)
    with open_run(run_copy, Limits(timeout_s=5)) as (con, _):
        assert isinstance(con, RemoteConnection)
        assert con.execute("SELECT current_setting('lock_configuration')").fetchone() == (True,)


def test_memory_limit_stops_the_query(run_copy: Path) -> None:
    with pytest.raises(ConfigError, match=r"over the memory limit \(--memory-limit 64MB\)"):
        query(run_copy, BIG_LIST_SQL, limits=Limits(memory_limit="64MB"))


def test_spill_limit_stops_the_query_and_the_spill_dir_is_removed(run_copy: Path, private_tmp: Path) -> None:
    before = _spill_dirs()
    with pytest.raises(ConfigError, match="max_temp_directory_size"):
        query(run_copy, BIG_SORT_SQL, limits=Limits(memory_limit="64MB", spill_limit="1MB", threads=1))
    assert _spill_dirs() == before


# --- zero kept documents -------------------------------------------------------------------------------


def test_run_that_keeps_nothing_has_stats_and_sql(empty_run: Path) -> None:
    s = summary(empty_run)
    assert s["funnel"] == [("input", 5, 5, 0), ("text_length_v1", 5, 0, 5)]
    assert s["domains"] == [] and s["shards"] == 0
    assert [(r[0], r[1], r[2]) for r in s["reasons"]] == [("text_length_v1", "too_short", 5)]
    cols, rows = query(empty_run, "SELECT * FROM docs")
    assert rows == [] and {"id", "text", "domain", "n_chars"} <= set(cols)
    assert query(empty_run, "SELECT count(*) FROM shards")[1] == [(0,)]
    r = CliRunner().invoke(app, ["stats", str(empty_run)])
    assert r.exit_code == 0 and "Funnel" in r.output and "text_length_v1" in r.output
    r = CliRunner().invoke(app, ["query", str(empty_run), "SELECT count(*) AS n FROM docs", "--format", "json"])
    assert r.exit_code == 0 and json.loads(r.output) == [{"n": 0}]


# --- the CLI: every failure is one line and exit 2 -----------------------------------------------------


@pytest.mark.parametrize("sql,flags,match", [
    ("SELEC 1", [], "SQL does not parse: Parser Error"),
    ("SELECT * FROM nosuch", [], "Catalog Error"),
    ("SELECT nosuch FROM docs", [], "Binder Error"),
    ("SELECT \"[/red]\" FROM docs", [], "[/red]"),  # rich markup in the message is printed as text
    ("SELECT * FROM read_csv('/etc/passwd')", [], "refused: Permission"),
    ("SET threads = 64", [], "only SELECT"),
    (SLOW_SQL, ["--timeout", "0.5"], "time limit"),
    (BIG_LIST_SQL, ["--memory-limit", "64MB"], "memory limit"),
    ("SELECT 1", ["--memory-limit", "lots"], "invalid --memory-limit 'lots'"),
    ("SELECT 1", ["--threads", "0"], "--threads must be at least 1"),
])
def test_cli_errors_are_one_line_exit_2(base_run: Path, sql: str, flags: list[str], match: str) -> None:
    r = CliRunner().invoke(app, ["query", str(base_run), sql, *flags])
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
    assert r.output.startswith("error: ") and r.output.count("\n") == 1 and match in r.output, r.output


def test_cli_stats_limits(base_run: Path) -> None:
    r = CliRunner().invoke(app, ["stats", str(base_run), "--json", "--timeout", "30", "--memory-limit", "256MB",
                                 "--threads", "1", "--spill-limit", "1GB"])
    assert r.exit_code == 0 and json.loads(r.output)["totals"]["docs_out"] == 3
    r = CliRunner().invoke(app, ["stats", str(base_run), "--spill-limit", "much"])
    assert r.exit_code == 2 and r.output.startswith("error: invalid --spill-limit 'much'")


# --- object stores: the run's prefix only --------------------------------------------------------------


@pytest.mark.slow
def test_s3_run_cannot_read_other_prefixes_or_buckets(s3: Any, base_run: Path) -> None:
    s3.put(str(base_run) + "/", "runs/sql-run/", recursive=True)
    s3.put(str(base_run) + "/", "runs/sql-run-evil/", recursive=True)  # a sibling whose name extends the run's
    assert query("s3://runs/sql-run", "SELECT count(*) FROM docs")[1] == [(3,)]
    assert summary("s3://runs/sql-run")["funnel"] == summary(base_run)["funnel"]
    for sql in ["SELECT count(*) FROM read_parquet('s3://runs/sql-run-evil/shards/*.parquet')",
                "SELECT * FROM read_text('s3://runs/sql-run/../sql-run-evil/manifest.json')",
                "SELECT count(*) FROM read_json_auto('s3://corpus/sample/*.jsonl.gz')",
                "SELECT * FROM glob('s3://runs/*')"]:
        with pytest.raises(ConfigError, match="refused: Permission"):
            query("s3://runs/sql-run", sql)

