"""Where every file of an export lives, and the rule that turns a domain name into a file name.

    OUT/
      export.json                 identity, written first: source fingerprint, format, tokenizer (a rerun with
                                  another identity is refused)
      _parts/NNNNN/               scratch of source shard NNNNN (its part files, done.json last); removed once
                                  export_manifest.json is written
      megatron/PREFIX.bin/.idx    format megatron: one Megatron-Core indexed dataset per domain
      mds/PREFIX/index.json       format mds: one MDS dataset per domain, a sub-folder NNNNN/ per source shard
      jsonl/PREFIX/NNNNN.jsonl.EXT  format jsonl: one file per domain and source shard
      index/PREFIX.parquet        the document index sidecar (every format): token range -> document id, source
      blend.txt                   the Megatron blend string (format megatron)
      export_manifest.json        written last: the commit point of the export

Domain names come from the input data, so they never become paths as they are: ``prefix_name`` keeps
``[A-Za-z0-9._-]`` and appends a hash of the name whenever it had to change anything.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from curation.errors import ConfigError

FORMATS = ("megatron", "mds", "jsonl")
#: Folders holding an export's published files (``curate verify`` flags anything unlisted in them).
OUTPUT_DIRS = ("megatron", "mds", "jsonl", "index")
EXPORT_MANIFEST = "export_manifest.json"
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def prefix_name(domain: str) -> str:
    """A file name for ``domain``: itself when it is plain (``web``, ``python_docs``), else its safe characters and
    8 hex digits of its sha256 (``a/b`` -> ``a_b-<hash>``), so two domains never share a name by sanitising."""
    safe = _SAFE.sub("_", domain)[:80]
    if safe == domain and safe and not safe.startswith("."):
        return safe
    return f"{safe.lstrip('.') or 'domain'}-{hashlib.sha256(domain.encode()).hexdigest()[:8]}"


def prefix_names(domains: list[str]) -> dict[str, str]:
    """``prefix_name`` of every domain, refusing the (crafted) case of two domains mapping to one name."""
    out = {d: prefix_name(d) for d in domains}
    if len(set(out.values())) != len(out):
        raise ConfigError(f"two domains map to one file name: {sorted(out.items(), key=lambda kv: kv[1])}")
    return out


@dataclass(frozen=True)
class ExportLayout:
    """Paths of an export directory (local)."""

    root: Path

    @property
    def identity(self) -> Path:
        return self.root / "export.json"

    @property
    def manifest(self) -> Path:
        return self.root / EXPORT_MANIFEST

    @property
    def parts_dir(self) -> Path:
        return self.root / "_parts"

    def part(self, task: int) -> Path:
        return self.parts_dir / f"{task:05d}"

    def part_marker(self, task: int) -> Path:
        return self.part(task) / "done.json"

    def megatron_prefix(self, prefix: str) -> str:
        """The prefix as a blend names it, relative to the export (``megatron/web``)."""
        return f"megatron/{prefix}"

    def mds_dir(self, prefix: str) -> Path:
        return self.root / "mds" / prefix

    def jsonl_file(self, prefix: str, task: int, ext: str) -> Path:
        return self.root / "jsonl" / prefix / f"{task:05d}.jsonl.{ext}"

    def index(self, prefix: str) -> Path:
        return self.root / "index" / f"{prefix}.parquet"

    @property
    def blend(self) -> Path:
        return self.root / "blend.txt"

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()
