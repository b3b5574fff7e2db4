"""``curate serve``: one FastAPI process over a runs root (disk or bucket) and a Ray cluster.

The service is a thin layer: it reuses the CLI's config validation, the run-directory readers in
``curation/io``, the DuckDB query sandbox and Ray's job API; it owns only its job table.
"""
