"""``curate verify EXPORT``: is an export exactly what its ``export_manifest.json`` says?

Every listed file is re-hashed (size and sha256; paths must be plain relative paths inside the export), no
unlisted file may sit in ``megatron/``, ``mds/``, ``jsonl/``, ``index/``; ``export.json`` must carry the
manifest's fingerprint; and per domain the counts must agree across the manifest, the sidecar index and the
output itself: Megatron ``.idx`` (read from its documented format) and ``.bin`` size, the MDS ``index.json``
sample counts, the JSON lines. The mixture may name only exported domains, and the blend string must be it.
"""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curation.export.blend import blend_string
from curation.export.index import read_index
from curation.export.layout import OUTPUT_DIRS, ExportLayout
from curation.export.megatron import read_idx
from curation.io.digest import stream_digest
from curation.io.manifest import safe_shard_path
from curation.io.regular import NotRegularFileError, open_regular, read_text
from curation.io.storage import is_remote, run_path
from curation.verify import Report


@dataclass
class ExportReport(Report):
    """``Report`` of an export: files re-hashed, documents and tokens agreed on."""

    documents: int = 0
    tokens: int = 0

    def summary(self) -> str:
        return (f"OK {self.root}: {self.shards} export files ({self.bytes} bytes) match their size and sha256; "
                f"{self.documents} documents and {self.tokens} tokens agree across manifest, index and outputs")


def _check_files(lay: ExportLayout, manifest: dict[str, Any], report: ExportReport) -> dict[str, Path]:
    """Re-hash every listed file; returns the safe, intact ones by relative path."""
    good: dict[str, Path] = {}
    listed: set[str] = set()
    for i, entry in enumerate(manifest.get("files") or []):
        rel = entry.get("path") if isinstance(entry, dict) else None
        try:
            path = Path(safe_shard_path(lay.root, rel))
        except ValueError as exc:
            report.problems.append(f"{exc} (files[{i}])")
            continue
        listed.add(rel)
        if not path.exists():
            report.problems.append(f"{rel}: missing (export_manifest.json lists it)")
            continue
        try:
            with open_regular(path, "rb") as fh:
                size, sha = stream_digest(fh)
        except NotRegularFileError as exc:
            report.problems.append(f"{rel}: {exc}")
            continue
        if size != entry.get("bytes"):
            report.problems.append(f"{rel}: size {size} bytes, export_manifest.json says {entry.get('bytes')}")
        elif sha != entry.get("sha256"):
            report.problems.append(f"{rel}: sha256 {sha[:16]}.. differs from export_manifest.json "
                                   f"{str(entry.get('sha256'))[:16]}..")
        else:
            good[rel] = path
            report.shards += 1
            report.bytes += size
    for folder in OUTPUT_DIRS:
        base = lay.root / folder
        for p in sorted(base.rglob("*")) if base.is_dir() else []:
            if not p.is_dir() and lay.rel(p) not in listed:
                report.problems.append(f"{lay.rel(p)}: unexpected file (not listed in export_manifest.json files)")
    if lay.blend.exists() and lay.rel(lay.blend) not in listed:
        report.problems.append("blend.txt: unexpected file (not listed in export_manifest.json files)")
    return good


def _count_output(fmt: str, lay: ExportLayout, prefix: str, good: dict[str, Path], dtype: str,
                  index: Any, report: ExportReport) -> None:
    """The output's own document (and, for megatron, token) counts against the sidecar index."""
    n_tokens = index.column("token_end").to_numpy() - index.column("token_start").to_numpy()
    if fmt == "megatron":
        idx, binf = good.get(f"megatron/{prefix}.idx"), good.get(f"megatron/{prefix}.bin")
        if idx is None or binf is None:
            report.problems.append(f"megatron/{prefix}: .bin or .idx missing or damaged")
            return
        try:
            code, lengths, _, _ = read_idx(idx)
        except ValueError as exc:
            report.problems.append(str(exc))
            return
        if code != dtype or not np.array_equal(lengths, n_tokens):
            report.problems.append(f"megatron/{prefix}.idx: dtype {code} or sequence lengths differ from the index")
        if binf.stat().st_size != int(n_tokens.sum()) * np.dtype(dtype).itemsize:
            report.problems.append(f"megatron/{prefix}.bin: {binf.stat().st_size} bytes, not "
                                   f"{int(n_tokens.sum())} tokens of {dtype}")
    elif fmt == "mds":
        mds_index = good.get(f"mds/{prefix}/index.json")
        samples = sum(s.get("samples", 0) for s in json.loads(read_text(mds_index))["shards"]) if mds_index else -1
        if samples != len(index):
            report.problems.append(f"mds/{prefix}/index.json: {samples} samples, the index has {len(index)}")
    else:
        lines = 0
        for rel, path in good.items():
            if rel.startswith(f"jsonl/{prefix}/"):
                lines += _count_lines(path)
        if lines != len(index):
            report.problems.append(f"jsonl/{prefix}/: {lines} lines, the index has {len(index)}")


def _count_lines(path: Path) -> int:
    with open_regular(path, "rb") as raw:
        if path.suffix == ".gz":
            return sum(1 for _ in gzip.GzipFile(fileobj=raw))
        import zstandard

        return sum(1 for _ in io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw)))  # type: ignore


def _check_domains(lay: ExportLayout, manifest: dict[str, Any], good: dict[str, Path], report: ExportReport) -> None:
    fmt, dtype = manifest.get("format"), manifest.get("dtype")
    domains = manifest.get("domains") if isinstance(manifest.get("domains"), dict) else {}
    for domain, info in sorted(domains.items()):
        rel, prefix = info.get("index"), info.get("prefix")
        if rel not in good:
            report.problems.append(f"domain {domain!r}: its index {rel!r} is missing or damaged")
            continue
        index = read_index(good[rel])
        ends = index.column("token_end").to_numpy()
        tokens = int(ends[-1]) if len(ends) else 0
        if (len(index), tokens) != (info.get("documents"), info.get("tokens")):
            report.problems.append(f"{rel}: {len(index)} documents / {tokens} tokens, export_manifest.json says "
                                   f"{info.get('documents')} / {info.get('tokens')}")
        _count_output(str(fmt), lay, str(prefix), good, str(dtype), index, report)
        report.documents += len(index)
        report.tokens += tokens
    totals = manifest.get("totals") or {}
    if (totals.get("documents"), totals.get("tokens")) != (report.documents, report.tokens):
        report.problems.append(f"export_manifest.json: totals {totals} != the domains' sums")
    weights = (manifest.get("mixture") or {}).get("weights") or {}
    extra = sorted(set(weights) - set(domains))
    if extra:
        report.problems.append(f"export_manifest.json: mixture names domains {extra} that were not exported")
    elif fmt == "megatron":
        blend = blend_string(weights, {d: f"megatron/{v.get('prefix')}" for d, v in domains.items()})
        if manifest.get("blend") != blend:
            report.problems.append("export_manifest.json: blend is not the mixture's blend string")


def export_root(path: str | Path) -> Path | None:
    """The export folder ``path`` names (resolved), or None when it is no export: exports are local folders
    holding ``export.json`` or ``export_manifest.json`` (one of them is enough: a half-written export is
    still an export, and ``verify_export`` says what is missing)."""
    root = run_path(path)
    if is_remote(root):
        return None
    root = Path(root).resolve()
    return root if (root / "export_manifest.json").exists() or (root / "export.json").exists() else None


def verify_export(root: Path) -> ExportReport:
    """Check an export directory against its manifest (see the module docstring)."""
    lay = ExportLayout(root)
    report = ExportReport(str(root), has_run_json=False)
    if not lay.manifest.exists():
        report.problems.append("export_manifest.json: missing: the export is incomplete (rerun `curate export` "
                               "to finish it)")
        return report
    try:
        manifest = json.loads(read_text(lay.manifest))
        identity = json.loads(read_text(lay.identity)) if lay.identity.exists() else None
    except (ValueError, OSError) as exc:
        report.problems.append(f"export_manifest.json or export.json: unreadable ({exc})")
        return report
    if not isinstance(manifest, dict) or manifest.get("kind") != "curation-export":
        report.problems.append("export_manifest.json: not an export manifest")
        return report
    if not isinstance(identity, dict) or identity.get("fingerprint") != manifest.get("fingerprint"):
        report.problems.append("export.json: missing, or its fingerprint differs from export_manifest.json")
    good = _check_files(lay, manifest, report)
    _check_domains(lay, manifest, good, report)
    return report
