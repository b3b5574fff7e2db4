"""Corpus statistics with DuckDB over a run directory, and a guarded read-only SQL entry point.

Views: ``docs`` (kept documents, the shards), ``decisions`` (every dropped document with stage,
reason and details), ``quarantine`` (unreadable input lines), ``shards`` and ``stages`` (from the
manifest). User SQL must be a single SELECT; the connection can read only inside the run
directory (``enable_external_access=false`` plus ``allowed_directories``) and its configuration
is locked, so ``read_csv('/etc/passwd')``, ``COPY ... TO`` or ``SET`` are refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb

from curation.errors import ConfigError
from curation.io.storage import is_remote, run_path
from curation.schema import DECISION_SCHEMA, QUARANTINE_SCHEMA

VIEWS = ("docs", "decisions", "quarantine", "shards", "stages")


def _empty_select(schema: Any) -> str:
    cols = ", ".join(f"CAST(NULL AS {_duck_type(f.type)}) AS \"{f.name}\"" for f in schema)
    return f"SELECT {cols} WHERE false"


def _duck_type(arrow_type: Any) -> str:
    s = str(arrow_type)
    return {"int64": "BIGINT", "int32": "INTEGER", "float": "FLOAT", "double": "DOUBLE", "bool": "BOOLEAN",
            "uint64": "UBIGINT"}.get(s, "VARCHAR")


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _root(run_dir: str | Path) -> Path:
    root = run_path(run_dir)
    return root if is_remote(root) else root.resolve()


def connect(run_dir: str | Path) -> duckdb.DuckDBPyConnection:
    """Open an in-memory DuckDB with the run's views, confined to the run directory."""
    root = _root(run_dir)
    manifest_path = root / "manifest.json"
    if not manifest_path.exists():
        raise ConfigError(f"{root} has no manifest.json: not a finished run (rerun `curate run` to finish it)")
    manifest = json.loads(manifest_path.read_text())
    con = duckdb.connect(":memory:")
    if is_remote(root):  # DuckDB reads the object store through the same fsspec filesystem
        con.register_filesystem(root.fs)  # type: ignore[attr-defined]
    for view, sub, schema in (("decisions", "decisions", DECISION_SCHEMA), ("quarantine", "quarantine", QUARANTINE_SCHEMA)):
        files = sorted((root / sub).glob("*.parquet"))
        src = (f"SELECT * FROM read_parquet({_sql_str(str(root / sub / '*.parquet'))}, union_by_name=true)"
               if files else _empty_select(schema))
        con.execute(f"CREATE VIEW {view} AS {src}")
    if manifest["shards"]:
        con.execute(f"CREATE VIEW docs AS SELECT * FROM read_parquet({_sql_str(str(root / 'shards' / '*.parquet'))}, "
                    "union_by_name=true)")
    else:
        cols = ", ".join(f"CAST(NULL AS {_duck_type(c['type'])}) AS \"{c['name']}\"" for c in manifest["schema"])
        con.execute(f"CREATE VIEW docs AS SELECT {cols} WHERE false")
    con.execute("CREATE TABLE shards (path VARCHAR, rows BIGINT, bytes BIGINT, sha256 VARCHAR)")
    if manifest["shards"]:  # a run that kept no document has none (executemany refuses an empty list)
        con.executemany("INSERT INTO shards VALUES (?, ?, ?, ?)",
                        [(s["path"], s["rows"], s["bytes"], s["sha256"]) for s in manifest["shards"]])
    con.execute('CREATE TABLE stages (idx INTEGER, stage VARCHAR, "in" BIGINT, "out" BIGINT, dropped BIGINT)')
    con.executemany("INSERT INTO stages VALUES (?, ?, ?, ?, ?)",
                    [(s["index"], s["name"], s["in"], s["out"], sum(s["dropped"].values())) for s in manifest["stages"]])
    # From here on only files under the run directory can be read, and nothing can be reconfigured.
    con.execute(f"SET allowed_directories = [{_sql_str(str(root) + '/')}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def query(run_dir: str | Path, sql: str, limit: int | None = 10_000) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one read-only SELECT over the run's views; anything else is refused with ConfigError."""
    con = connect(run_dir)
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise ConfigError(f"SQL does not parse: {exc}") from exc
    if len(statements) != 1:
        raise ConfigError(f"exactly one SQL statement is allowed, got {len(statements)}")
    if statements[0].type != duckdb.StatementType.SELECT:
        raise ConfigError(f"only SELECT queries are allowed, got {statements[0].type.name}")
    try:
        rel = con.execute(sql)
        cols = [d[0] for d in rel.description]
        rows = rel.fetchmany(limit) if limit else rel.fetchall()
    except duckdb.PermissionException as exc:
        raise ConfigError(f"refused: {exc}") from exc
    finally:
        con.close()
    return cols, rows


def score_columns(manifest: dict[str, Any]) -> list[str]:
    """Columns holding scores in [0, 1]: fastText scores and PreSelect's predictive strength."""
    return [f["name"] for f in manifest["schema"] if f["name"].startswith("score_") or f["name"] == "predictive_strength"]


def score_histogram(con: duckdb.DuckDBPyConnection, column: str, bins: int = 10) -> list[tuple[Any, ...]]:
    """Per domain and score bin: documents in the pool and how many were kept. The pool is the
    kept documents plus those a ``select_v1`` on this column dropped (their score is in details)."""
    sql = f"""
        WITH pool AS (
            SELECT domain, CAST("{column}" AS DOUBLE) AS s, 1 AS kept FROM docs
            UNION ALL
            SELECT domain, TRY_CAST(json_extract_string(details, '$.score') AS DOUBLE), 0 FROM decisions
            WHERE json_extract_string(details, '$.column') = ?)
        SELECT domain, LEAST(FLOOR(s * {bins}), {bins - 1}) / {bins} AS bin, count(*) AS docs, sum(kept) AS kept
        FROM pool WHERE s IS NOT NULL GROUP BY ALL ORDER BY domain, bin"""
    return [(d, round(float(b), 4), int(n), int(k)) for d, b, n, k in con.execute(sql, [column]).fetchall()]


def rephrase_stats(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    """Per template: rewrites kept and rejected, tokens in/out, backend seconds, cached chunks."""
    sql = """
        WITH rows AS (
            SELECT rephrase_template AS template, 1 AS kept, rephrase_tokens_in AS tin, rephrase_tokens_out AS tout,
                   rephrase_seconds AS secs, rephrase_cached_chunks AS cached
            FROM docs WHERE rephrase_template IS NOT NULL
            UNION ALL
            SELECT json_extract_string(details, '$.template'), 0,
                   TRY_CAST(json_extract_string(details, '$.tokens_in') AS BIGINT),
                   TRY_CAST(json_extract_string(details, '$.tokens_out') AS BIGINT),
                   TRY_CAST(json_extract_string(details, '$.seconds') AS DOUBLE), 0
            FROM decisions WHERE stage = 'rephrase_v1' AND reason LIKE 'rephrase_%')
        SELECT template, count(*) AS rewrites, sum(kept) AS kept, sum(tin) AS tokens_in, sum(tout) AS tokens_out,
               round(sum(secs), 3) AS seconds, sum(cached) AS cached_chunks
        FROM rows GROUP BY ALL ORDER BY template"""
    return con.execute(sql).fetchall()


def summary(run_dir: str | Path) -> dict[str, Any]:
    """The tables ``curate stats`` prints: funnel, drop reasons, domains, quarantine."""
    root = _root(run_dir)
    con = connect(root)
    manifest = json.loads((root / "manifest.json").read_text())
    try:
        reasons = con.execute(
            "SELECT stage, reason, count(*) AS docs, sum(n_chars) AS chars FROM decisions "
            "GROUP BY ALL ORDER BY docs DESC, stage, reason").fetchall()
        domains = con.execute(
            "SELECT domain, count(*) AS docs, sum(n_chars) AS chars, round(avg(n_chars)) AS mean_chars "
            "FROM docs GROUP BY ALL ORDER BY docs DESC, domain").fetchall()
        quarantine = con.execute(
            "SELECT file, count(*) AS lines, min(error) AS first_error FROM quarantine GROUP BY ALL ORDER BY file").fetchall()
        scores = {col: score_histogram(con, col) for col in score_columns(manifest)}
        rephrase = rephrase_stats(con) if any(f["name"] == "rephrase_template" for f in manifest["schema"]) else []
    finally:
        con.close()
    tokens = {d: v["tokens"] for d, v in manifest["domains"].items()}
    return {
        "totals": manifest["totals"],
        "funnel": [(s["name"], s["in"], s["out"], sum(s["dropped"].values())) for s in manifest["stages"]],
        "reasons": reasons,
        "domains": [(d, n, c, m, tokens.get(d, 0)) for d, n, c, m in domains],
        "quarantine": quarantine,
        "scores": scores,
        "rephrase": rephrase,
        "shards": len(manifest["shards"]),
        "token_counter": manifest["token_counter"],
    }
