"""Corpus statistics with DuckDB over a run directory, and a guarded read-only SQL entry point.

Views: ``docs`` (kept documents, the shards), ``decisions`` (every dropped document with stage,
reason and details), ``quarantine`` (unreadable input lines), ``shards`` and ``stages`` (from the
manifest). User SQL must be a single SELECT. The connection is confined and locked before any view
is built (``curation.query_sandbox``): it reads only inside the run directory, within a time,
memory and spill budget, so ``read_csv('/etc/passwd')``, ``COPY ... TO`` or ``SET`` are refused.
Views are built from data: file paths are quoted string literals, column names quoted identifiers,
manifest rows bound parameters; an edited manifest cannot inject SQL.

With a time limit, ``open_run`` (so ``query`` and ``summary``, the CLI's ``curate query`` / ``curate stats``)
runs the sandbox in a worker process that is killed at the limit (``query_sandbox.SandboxProcess``): a scalar
call DuckDB cannot interrupt ends there too. Without one there is nothing to enforce, and the connection is
opened in this process as before.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from curation.errors import ConfigError
from curation.io.layout import Layout
from curation.io.manifest import RunManifest, manifest_path, read_manifest
from curation.io.regular import check_regular
from curation.io.storage import is_remote, run_path
from curation.query_sandbox import Limits, RemoteConnection, SandboxProcess, check_limits, one_line, open_sandbox

VIEWS = ("docs", "decisions", "quarantine", "shards", "stages")
#: What the views are built from: a manifest without these is refused before any SQL runs. The views read the
#: manifest as its JSON object, not as a ``RunManifest``: the service opens them and shows a manifest's other
#: values as found, however odd (``tests/security/test_html_injection.py``), where the typed record refuses them.
MANIFEST_FIELDS = ("shards", "stages", "schema", "totals", "domains")
_DUCK_TYPES = {"int64": "BIGINT", "int32": "INTEGER", "float": "FLOAT", "double": "DOUBLE", "bool": "BOOLEAN",
               "uint64": "UBIGINT"}


def _ident(name: str) -> str:
    """A SQL identifier for any string (embedded double quotes doubled)."""
    return '"' + str(name).replace('"', '""') + '"'


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _duck_type(arrow_type: Any) -> str:
    """A fixed DuckDB type name for an Arrow type string; anything unknown reads as VARCHAR."""
    return _DUCK_TYPES.get(str(arrow_type), "VARCHAR")


def _empty_select(fields: list[tuple[str, Any]]) -> str:
    cols = ", ".join(f"CAST(NULL AS {_duck_type(t)}) AS {_ident(n)}" for n, t in fields)
    return f"SELECT {cols} WHERE false"


def _root(run_dir: str | Path) -> Path:
    root = run_path(run_dir)
    return root if is_remote(root) else root.resolve()


def view_files(run_dir: str | Path, view: str) -> list[str]:
    """The parquet files the run's ``view`` (``docs`` -> shards, ``decisions``, ``quarantine``) reads, as it
    lists them."""
    root = _root(run_dir)
    return _files(root / ("shards" if view == "docs" else view))


def _files(folder: Path) -> list[str]:
    """The ``*.parquet`` files of ``folder``, each checked to be a regular file: DuckDB opens them itself, and its
    open of a FIFO planted as ``x.parquet`` would block its thread forever (no timeout interrupts an open)."""
    files = sorted(str(p) for p in folder.glob("*.parquet"))
    for f in files:
        check_regular(f)  # NotRegularFileError (a CurationError) naming the file
    return files


def check_run_files(run_dir: str | Path) -> None:
    """Every file the run's views read is still a regular file (NotRegularFileError otherwise). The service's pool
    calls it before reusing a sandbox, whose views were listed when it was opened."""
    root = _root(run_dir)
    layout = Layout(root)
    for folder in (layout.shards_dir, layout.decisions_dir, layout.quarantine_dir):
        _files(folder)


def _parquet_view(con: duckdb.DuckDBPyConnection, view: str, folder: Path, empty: str) -> None:
    """``view`` over every ``*.parquet`` in ``folder``, listed here and passed as quoted literals (file names
    are data: a quote in a name stays inside its literal, a glob character matches nothing else)."""
    files = _files(folder)
    src = (f"SELECT * FROM read_parquet([{', '.join(_sql_str(f) for f in files)}], union_by_name=true)"
           if files else empty)
    con.execute(f"CREATE VIEW {view} AS {src}")


def _fixed_empties() -> dict[str, str]:
    """The SELECTs the ``decisions`` and ``quarantine`` views fall back to when their folder holds no file."""
    # Imported here, not at the top: the schemas are pyarrow's, and a query worker (which gets these strings
    # from its parent) would otherwise import pyarrow only for them: ~50 ms of its start, ~37 MB of its memory.
    from curation.schema import DECISION_SCHEMA, QUARANTINE_SCHEMA

    return {view: _empty_select([(f.name, f.type) for f in schema])
            for view, schema in (("decisions", DECISION_SCHEMA), ("quarantine", QUARANTINE_SCHEMA))}


def _build_views(con: duckdb.DuckDBPyConnection, root: Path, manifest: dict[str, Any],
                 empties: dict[str, str] | None = None) -> None:
    layout = Layout(root)
    empties = empties or _fixed_empties()
    for view, folder in (("decisions", layout.decisions_dir), ("quarantine", layout.quarantine_dir)):
        _parquet_view(con, view, folder, empties[view])
    try:
        docs_empty = _empty_select([(c["name"], c["type"]) for c in manifest["schema"]])
        shards = [(s["path"], s["rows"], s["bytes"], s["sha256"]) for s in manifest["shards"]]
        stages = [(s["index"], s["name"], s["in"], s["out"], sum(s["dropped"].values())) for s in manifest["stages"]]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{manifest_path(root)}: malformed entry ({exc!r})") from exc
    _parquet_view(con, "docs", layout.shards_dir, docs_empty)
    con.execute("CREATE TABLE shards (path VARCHAR, rows BIGINT, bytes BIGINT, sha256 VARCHAR)")
    if shards:  # a run that kept nothing has no shards (executemany refuses an empty list)
        con.executemany("INSERT INTO shards VALUES (?, ?, ?, ?)", shards)
    con.execute('CREATE TABLE stages (idx INTEGER, stage VARCHAR, "in" BIGINT, "out" BIGINT, dropped BIGINT)')
    if stages:
        con.executemany("INSERT INTO stages VALUES (?, ?, ?, ?, ?)", stages)


def _views_setup(root: Path, manifest: dict[str, Any], empties: dict[str, str],
                 con: duckdb.DuckDBPyConnection) -> None:
    """``_build_views`` as a worker's setup (``functools.partial`` of a module-level function: it pickles)."""
    _build_views(con, root, manifest, empties)


@contextmanager
def open_run(run_dir: str | Path,
             limits: Limits | None = None) -> Iterator[tuple[duckdb.DuckDBPyConnection | RemoteConnection,
                                                            dict[str, Any]]]:
    """The run's views on a sandboxed connection (confined and locked first), and its manifest. With a time
    limit the connection lives in a worker process killed at the limit (see the module docstring)."""
    limits = limits or Limits()
    if limits.timeout_s is not None:
        box, manifest = open_run_sandbox(run_dir, limits)
        try:
            with box.session() as con:
                yield con, manifest
        finally:
            box.close()
        return
    root = _root(run_dir)
    manifest = read_manifest(root, MANIFEST_FIELDS)
    with open_sandbox(root, limits) as con:
        _build_views(con, root, manifest)
        yield con, manifest


def open_run_sandbox(run_dir: str | Path, limits: Limits | None = None) -> tuple[SandboxProcess, dict[str, Any]]:
    """A worker process holding the run's sandbox with its views built, for a caller that keeps it open (the
    service's pool) or uses it once (``open_run``), and the manifest. The caller closes it. The manifest is read
    here (a broken one is refused before any process starts) and handed to the worker, which confines and locks
    its connection before it builds the views from it."""
    limits = limits or Limits()
    check_limits(limits)
    root = _root(run_dir)
    manifest = read_manifest(root, MANIFEST_FIELDS)
    setup = functools.partial(_views_setup, root, manifest, _fixed_empties())
    return SandboxProcess(root, limits, setup), manifest


def execute_select(con: duckdb.DuckDBPyConnection | RemoteConnection,
                   sql: str) -> duckdb.DuckDBPyConnection | RemoteConnection:
    """Execute ``sql`` if it is exactly one SELECT (the guard every user query goes through, on top of the
    locked sandbox); anything else is refused with ConfigError."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise ConfigError(f"SQL does not parse: {one_line(exc)}") from exc
    if len(statements) != 1:
        raise ConfigError(f"exactly one SQL statement is allowed, got {len(statements)}")
    if statements[0].type != duckdb.StatementType.SELECT:
        raise ConfigError(f"only SELECT queries are allowed, got {statements[0].type.name}")
    return con.execute(sql)


def query(run_dir: str | Path, sql: str, limit: int | None = 10_000,
          limits: Limits | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one read-only SELECT over the run's views; anything else is refused with ConfigError."""
    with open_run(run_dir, limits) as (con, _):
        rel = execute_select(con, sql)
        cols = [d[0] for d in rel.description]
        rows = rel.fetchmany(limit) if limit else rel.fetchall()
    return cols, rows


def score_columns(manifest: RunManifest) -> list[str]:
    """Columns holding scores in [0, 1]: fastText scores and PreSelect's predictive strength."""
    return [f["name"] for f in manifest.schema if f["name"].startswith("score_") or f["name"] == "predictive_strength"]


def score_histogram(con: duckdb.DuckDBPyConnection, column: str, bins: int = 10) -> list[tuple[Any, ...]]:
    """Per domain and score bin: documents in the pool and how many were kept. The pool is the
    kept documents plus those a ``select_v1`` on this column dropped (their score is in details)."""
    bins = int(bins)
    sql = f"""
        WITH pool AS (
            SELECT domain, CAST({_ident(column)} AS DOUBLE) AS s, 1 AS kept FROM docs
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


#: Per-type PII count columns ``pii_v1`` adds (int; null where the type was not looked for).
PII_COLUMNS = ("pii_email", "pii_ip", "pii_phone", "pii_card", "pii_secret")


#: Per dedup stage with a per-source table: its drop reasons that count as removals, and the details key of the
#: similarity to the kept document whose minimum the table shows (how far its loosest removal went).
DUP_TABLES = {"near_dedup_v1": (["near_duplicate", "duplicate_of_corpus"], "jaccard"),
              "semantic_dedup_v1": (["semantic_duplicate"], "cosine")}


def near_dup_sources(con: duckdb.DuckDBPyConnection, stage: str = "near_dedup_v1") -> list[tuple[Any, ...]]:
    """Per source with removals by a dedup stage of ``DUP_TABLES`` (near-duplicates by default, or semantic
    ones): documents that reached ``stage``, removed, share, and the smallest similarity to a keeper (estimated
    Jaccard, or cosine). A source is ``source`` (the input file), ``domain`` where that is empty, as in the stage's
    own audit. Documents that reached the stage are the kept ones plus those dropped by it or by any stage at or
    after its first position (by name, so a stage name used both before and after it counts as after)."""
    reasons, key = DUP_TABLES[stage]
    sql = """
        WITH first_nd AS (SELECT min(idx) AS idx FROM stages WHERE stage = $stage),
        later AS (SELECT DISTINCT s.stage FROM stages s, first_nd WHERE s.idx >= first_nd.idx),
        pool AS (
            SELECT coalesce(nullif(source, ''), domain) AS src, 0 AS removed, CAST(NULL AS DOUBLE) AS j FROM docs
            UNION ALL
            SELECT coalesce(nullif(source, ''), domain),
                   CASE WHEN stage = $stage AND list_contains($reasons, reason) THEN 1 ELSE 0 END,
                   CASE WHEN stage = $stage THEN TRY_CAST(json_extract_string(details, $path) AS DOUBLE) END
            FROM decisions WHERE stage IN (SELECT stage FROM later))
        SELECT src AS source, count(*) AS docs_in, sum(removed) AS removed,
               round(sum(removed) / count(*), 4) AS share, round(min(j), 4) AS min_similarity
        FROM pool GROUP BY src HAVING sum(removed) > 0 ORDER BY share DESC, removed DESC, source"""
    rows = con.execute(sql, {"stage": stage, "reasons": reasons, "path": f"$.{key}"}).fetchall()
    return [(src, int(n), int(r), float(sh), mj) for src, n, r, sh, mj in rows]


def paragraph_dedup_sources(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    """Per source (``source``, else ``domain``) where ``paragraph_dedup_v1`` removed anything: kept documents it
    rewrote and the characters it removed from them (``para_dedup_chars``), and documents it dropped as
    ``boilerplate_only`` with their characters. Most characters removed first."""
    sql = """
        WITH kept AS (SELECT coalesce(nullif(source, ''), domain) AS src, count_if(para_dedup_chars > 0) AS changed,
                             coalesce(sum(para_dedup_chars), 0) AS removed FROM docs GROUP BY 1),
        dropped AS (SELECT coalesce(nullif(source, ''), domain) AS src, count(*) AS docs, sum(n_chars) AS chars
                    FROM decisions WHERE stage = 'paragraph_dedup_v1' GROUP BY 1)
        SELECT coalesce(kept.src, dropped.src) AS source, coalesce(changed, 0), coalesce(removed, 0),
               coalesce(docs, 0), coalesce(chars, 0)
        FROM kept FULL JOIN dropped ON kept.src = dropped.src
        WHERE coalesce(changed, 0) + coalesce(docs, 0) > 0
        ORDER BY coalesce(removed, 0) + coalesce(chars, 0) DESC, source"""
    return [(src, int(c), int(r), int(d), int(dc)) for src, c, r, d, dc in con.execute(sql).fetchall()]


def pii_counts(con: duckdb.DuckDBPyConnection, columns: list[str]) -> list[tuple[Any, ...]]:
    """Per PII type column of the kept documents: documents checked (non-null), documents with at
    least one, and spans found in all."""
    parts = [f"SELECT {_sql_str(c.removeprefix('pii_'))} AS type, count({_ident(c)}) AS checked, "
             f"coalesce(count_if({_ident(c)} > 0), 0) AS docs, coalesce(sum({_ident(c)}), 0) AS found FROM docs"
             for c in columns]
    rows = con.execute(" UNION ALL ".join(parts)).fetchall() if parts else []
    return sorted(((t, int(c), int(d), int(f)) for t, c, d, f in rows), key=lambda r: PII_COLUMNS.index(f"pii_{r[0]}"))


def _number(value: Any) -> int | float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def corpus_runs(manifest: RunManifest) -> list[tuple[Any, ...]]:
    """(stage, earlier run, removed, share of the documents reaching the stage) per earlier run a dedup stage
    of this run was deduplicated against (``against``), from the manifest alone: the paths it names are never
    followed, and values of the wrong type read as None (a manifest is untrusted, and ``RunManifest`` keeps its
    ``corpus`` entries as read)."""
    return [(str(entry.get("stage")), str(r.get("run")), _number(r.get("removed")), _number(r.get("share")))
            for entry in manifest.corpus if isinstance(entry, dict)
            for r in (entry.get("against") if isinstance(entry.get("against"), list) else []) if isinstance(r, dict)]


def index_summary(manifest: RunManifest) -> dict[str, Any] | None:
    """Documents, files and bytes of the run's dedup index (None without one), type-checked like ``corpus_runs``
    (``RunManifest`` keeps ``dedup_index`` as read too: ``curation.io.dedup_index`` vets it where it is used)."""
    ix = manifest.dedup_index
    if not isinstance(ix, dict):
        return None
    files = ix.get("files")
    return {"docs": _number(ix.get("docs")), "files": len(files) if isinstance(files, list) else None,
            "bytes": _number(ix.get("bytes"))}


def summary(run_dir: str | Path, limits: Limits | None = None) -> dict[str, Any]:
    """The tables ``curate stats`` prints: funnel, drop reasons, domains, quarantine."""
    # Typed, and read before the views are opened: a manifest this version did not write whole is refused
    # naming the file before any sandbox starts (``open_run`` reads it again, as the JSON its views need).
    manifest = RunManifest.read(_root(run_dir))
    ran = {s.name for s in manifest.stages.values()}
    with open_run(run_dir, limits) as (con, _):
        names = {f["name"] for f in manifest.schema}  # each entry has one: the views were built from them
        reasons = con.execute(
            "SELECT stage, reason, count(*) AS docs, sum(n_chars) AS chars FROM decisions "
            "GROUP BY ALL ORDER BY docs DESC, stage, reason").fetchall()
        domains = con.execute(
            "SELECT domain, count(*) AS docs, sum(n_chars) AS chars, round(avg(n_chars)) AS mean_chars "
            "FROM docs GROUP BY ALL ORDER BY docs DESC, domain").fetchall()
        quarantine = con.execute(
            "SELECT file, count(*) AS lines, min(error) AS first_error FROM quarantine GROUP BY ALL ORDER BY file").fetchall()
        scores = {col: score_histogram(con, col) for col in score_columns(manifest)}
        rephrase = rephrase_stats(con) if "rephrase_template" in names else []
        near = near_dup_sources(con) if "near_dedup_v1" in ran else []
        semantic = near_dup_sources(con, "semantic_dedup_v1") if "semantic_dedup_v1" in ran else []
        pii = pii_counts(con, [c for c in PII_COLUMNS if c in names])
        para = paragraph_dedup_sources(con) if "para_dedup_chars" in names else []
    tokens = {d: c.tokens for d, c in manifest.domains.items()}
    return {
        # In the file's key order (``write_json`` sorts a manifest's keys), as ``curate stats --json`` prints it.
        "totals": dict(sorted(manifest.totals.to_json().items())),
        "funnel": [(s.name, s.docs_in, s.docs_out, sum(s.dropped.values())) for s in manifest.stages.values()],
        "reasons": reasons,
        "domains": [(d, n, c, m, tokens.get(d, 0)) for d, n, c, m in domains],
        "quarantine": quarantine,
        "scores": scores,
        "rephrase": rephrase,
        "near_dup_sources": near,
        "semantic_dup_sources": semantic,
        "paragraph_dedup": para,
        "pii": pii,
        "warnings": manifest.warnings,
        "corpus": corpus_runs(manifest),
        "dedup_index": index_summary(manifest),
        "shards": len(manifest.shards),
        "token_counter": manifest.token_counter,
    }
