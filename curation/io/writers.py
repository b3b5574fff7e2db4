"""Parquet writers that publish atomically: ``NAME.tmp`` while open, renamed when closed.

On an object store the temp file is local and uploaded when closed (``curation.io.storage``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.io.atomic import publish
from curation.io.digest import file_digest
from curation.io.storage import is_remote, local_temp
from curation.schema import conform


class RollingParquetWriter:
    """Writes tables to ``{folder}/{prefix}{part:03d}.parquet`` files of about ``target_bytes``.

    Names are deterministic, so a rerun of the same task rewrites the same files.
    """

    def __init__(self, folder: Path, prefix: str, schema: pa.Schema, target_bytes: int | None = None,
                 compression: str = "zstd", single_name: str | None = None) -> None:
        self.folder, self.prefix, self.schema = folder, prefix, schema
        self.target_bytes, self.compression, self.single_name = target_bytes, compression, single_name
        self._writer: pq.ParquetWriter | None = None
        self._path: Path | None = None
        self._tmp: Path | None = None
        self._bytes = 0
        self._rows = 0
        self.files: list[dict[str, Any]] = []

    def _next_path(self) -> Path:
        if self.single_name:
            return self.folder / self.single_name
        return self.folder / f"{self.prefix}{len(self.files):03d}.parquet"

    def _open(self) -> None:
        if not is_remote(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
        self._path = self._next_path()
        self._tmp = local_temp(self._path)
        self._writer = pq.ParquetWriter(self._tmp, self.schema, compression=self.compression)

    def write(self, table: pa.Table) -> None:
        if len(table) == 0:
            return
        table = conform(table, self.schema)
        if self._writer is None:
            self._open()
        self._writer.write_table(table, row_group_size=max(1, min(len(table), 64 * 1024)))
        self._bytes += table.nbytes
        self._rows += len(table)
        if self.target_bytes is not None and self._bytes >= self.target_bytes:
            self._finish()

    def _finish(self) -> None:
        assert self._writer is not None and self._path is not None and self._tmp is not None
        self._writer.close()
        # Size and digest come from the local temp file: no read-back from an object store.
        size, digest = self._tmp.stat().st_size, file_digest(self._tmp)
        publish(self._tmp, self._path)
        self.files.append({"path": self._path, "rows": self._rows, "bytes": size, "sha256": digest})
        self._writer, self._path, self._tmp, self._bytes, self._rows = None, None, None, 0, 0

    def close(self, write_empty: bool = False) -> list[dict[str, Any]]:
        """Publish the open file; with ``write_empty`` an empty file is written if nothing was."""
        if self._writer is None and write_empty and not self.files:
            self._open()
        if self._writer is not None:
            self._finish()
        return self.files

    def abort(self) -> None:
        if self._writer is not None and self._tmp is not None:
            self._writer.close()
            self._tmp.unlink(missing_ok=True)
            self._writer, self._tmp = None, None
