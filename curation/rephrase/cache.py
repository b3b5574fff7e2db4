"""A resumable cache of generations: a crashed or repeated run never pays for a call twice.

Keyed by (document id, chunk index, chunk text hash, template name@version, prompt hash, model,
sampling parameters, endpoint), so any change to what would be generated misses. The endpoint
(an HTTP backend's ``base_url``) is part of the key because a model name is only what a server
calls its weights: two servers may serve different weights under the same name. One SQLite file in WAL
mode, shared by the worker processes of a machine (point ``cache_dir`` at node-local disk on
multi-node clusters: SQLite locking is not reliable on network file systems). Its ``user_version`` is
``CACHE.version``: a cache file of another version (or none) is refused, not read with other keys.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from curation.io.manifest import RecordKind, check_schema
from curation.rephrase.backends import Generation

#: The cache file (``generations.sqlite``): keys as ``cache_key`` makes them, one ``gen`` table.
CACHE = RecordKind("generation cache", 1, "delete it, or point cache_dir at a new folder (its generations are "
                                           "made again)", key="user_version")


def cache_key(doc_id: str, chunk: int, chunk_text: str, template_key: str, prompt_hash: str, model: str,
              params: dict[str, Any], endpoint: str | None = None) -> str:
    """``endpoint``: the server's base URL (None for local models, whose path names the weights)."""
    text_hash = hashlib.sha256(chunk_text.encode("utf-8", "surrogatepass")).hexdigest()
    parts: list[Any] = [doc_id, chunk, text_hash, template_key, prompt_hash, model, params,
                        endpoint.rstrip("/") if endpoint else None]
    raw = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()


class GenerationCache:
    def __init__(self, directory: str | Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        path = Path(directory) / "generations.sqlite"
        self._db = sqlite3.connect(str(path), timeout=60, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # One writer at a time: a new file gets its table and version together, seen whole by the other workers.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if not self._db.execute("SELECT 1 FROM sqlite_master").fetchone():  # a new, empty file
                self._db.execute("CREATE TABLE gen (key TEXT PRIMARY KEY, text TEXT NOT NULL, tokens_in INTEGER, "
                                 "tokens_out INTEGER, finish_reason TEXT, seconds REAL)")
                self._db.execute(f"PRAGMA user_version = {int(CACHE.version)}")
                version = CACHE.version
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            self._db.close()
            raise
        try:
            check_schema({CACHE.key: version} if version else {}, CACHE, path)
        except ValueError:
            self._db.close()
            raise

    def get_many(self, keys: list[str]) -> dict[str, Generation]:
        out: dict[str, Generation] = {}
        for i in range(0, len(keys), 500):
            part = keys[i: i + 500]
            rows = self._db.execute(f"SELECT key, text, tokens_in, tokens_out, finish_reason, seconds FROM gen "
                                    f"WHERE key IN ({','.join('?' * len(part))})", part).fetchall()
            out.update({k: Generation(t, ti, to, fr, s) for k, t, ti, to, fr, s in rows})
        return out

    def put_many(self, items: dict[str, Generation]) -> None:
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO gen VALUES (?, ?, ?, ?, ?, ?)",
                             [(k, g.text, g.tokens_in, g.tokens_out, g.finish_reason, g.seconds) for k, g in items.items()])
        self._db.execute("COMMIT")
