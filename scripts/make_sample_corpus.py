"""Build the bundled sample corpus from text that ships with Python and its packages.

    python scripts/make_sample_corpus.py                       # the bundled corpus (curation/data/sample)
    python scripts/make_sample_corpus.py --out /tmp/big --max-per-domain 0 --code-max-bytes 200000

Real human-written text under permissive licences: the standard library's docstrings and source
(PSF licence), and the README descriptions and licence files of installed packages whose metadata
says MIT, BSD, Apache, PSF or ISC. Licence texts and vendored READMEs are natural near-duplicates.
Every record keeps its origin (package, version, licence, path) in its fields.
"""

from __future__ import annotations

import argparse
import ast
import email.parser
import gzip
import json
import re
import sysconfig
from collections.abc import Iterator
from pathlib import Path

PERMISSIVE = re.compile(r"\b(MIT|BSD|Apache|PSF|Python Software Foundation|ISC|Unlicense|0BSD|Zlib)\b", re.I)


def file_docstrings(path: Path, module: str, min_chars: int) -> Iterator[tuple[str, str]]:
    """(qualified name, docstring) of a module and of its classes and functions, in ``ast.walk``
    order. A file that does not parse yields nothing."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    nodes = [(module, tree)] + [
        (f"{module}.{n.name}", n) for n in ast.walk(tree)
        if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
    ]
    for name, node in nodes:
        doc = ast.get_docstring(node, clean=True)
        if doc and len(doc) >= min_chars:
            yield name, doc


def stdlib_docs(min_chars: int) -> Iterator[dict]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if any(part in rel for part in ("test", "site-packages", "idlelib", "lib2to3", "__pycache__")):
            continue
        module = rel[:-3].replace("/", ".").removesuffix(".__init__")
        for name, doc in file_docstrings(path, module, min_chars):
            yield {"id": f"pydoc:{name}", "text": doc, "domain": "python_docs",
                   "url": f"https://docs.python.org/3/library/{module.split('.')[0]}.html",
                   "license": "PSF-2.0", "origin": f"stdlib/{rel}"}


def stdlib_code(max_bytes: int) -> Iterator[dict]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="strict") if path.stat().st_size <= max_bytes else None
        if text and len(text) > 500:
            yield {"id": f"pycode:{path.name}", "text": text, "domain": "code", "url": None,
                   "license": "PSF-2.0", "origin": f"stdlib/{path.name}"}


def _licence_of(meta: email.message.Message) -> str:
    parts = [meta.get("License-Expression") or "", meta.get("License") or ""]
    parts += [c for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    return " ".join(p for p in parts if p)[:200]


def package_texts(min_chars: int) -> Iterator[dict]:
    site = Path(sysconfig.get_paths()["purelib"])
    for dist in sorted(site.glob("*.dist-info")):
        meta_path = dist / "METADATA"
        if not meta_path.exists():
            continue
        meta = email.parser.Parser().parsestr(meta_path.read_text(encoding="utf-8", errors="replace"))
        licence = _licence_of(meta)
        if not PERMISSIVE.search(licence):
            continue
        name, version = meta.get("Name", dist.name), meta.get("Version", "")
        url = meta.get("Home-page") or next(
            (u.split(",", 1)[1].strip() for u in meta.get_all("Project-URL") or [] if "," in u), None)
        body = meta.get_payload()
        if isinstance(body, str) and len(body.strip()) >= min_chars:
            yield {"id": f"readme:{name}", "text": body.strip(), "domain": "readme", "url": url,
                   "license": licence, "origin": f"{name}=={version}"}
        for lic in sorted(p for p in dist.rglob("*") if p.is_file() and re.match(r"(LICEN[CS]E|COPYING|NOTICE)", p.name, re.I)):
            text = lic.read_text(encoding="utf-8", errors="replace").strip()
            if len(text) >= min_chars:
                yield {"id": f"license:{name}/{lic.relative_to(dist).as_posix()}", "text": text, "domain": "license",
                       "url": url, "license": licence, "origin": f"{name}=={version}"}


def write_parts(records: list[dict], out: Path, domain: str, per_file: int) -> list[Path]:
    paths = []
    for i in range(0, max(len(records), 1), per_file):
        path = out / f"{domain}-{i // per_file:03d}.jsonl.gz"
        with gzip.GzipFile(path, "wb", mtime=0) as fh:  # mtime=0: byte-identical rebuilds
            for rec in records[i:i + per_file]:
                fh.write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))
        paths.append(path)
    return paths


def unique_ids(records: list[dict], seen: dict[str, int]) -> list[dict]:
    """Make ids unique: same-named functions in one module (methods of different classes) get
    ``#2``, ``#3``... in input order, so ids can serve as keys downstream."""
    for rec in records:
        n = seen.get(rec["id"], 0) + 1
        seen[rec["id"]] = n
        if n > 1:
            rec["id"] = f"{rec['id']}#{n}"
    return records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--out", default="curation/data/sample")
    ap.add_argument("--max-per-domain", type=int, default=700, help="0 = no limit")
    ap.add_argument("--per-file", type=int, default=400)
    ap.add_argument("--min-chars", type=int, default=200)
    ap.add_argument("--code-max-bytes", type=int, default=30_000)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sources = {"python_docs": stdlib_docs(args.min_chars), "code": stdlib_code(args.code_max_bytes)}
    pkg = list(package_texts(args.min_chars))
    sources["readme"] = iter([r for r in pkg if r["domain"] == "readme"])
    sources["license"] = iter([r for r in pkg if r["domain"] == "license"])
    seen: dict[str, int] = {}
    for domain, it in sources.items():
        records = unique_ids(list(it), seen)
        if args.max_per_domain and len(records) > args.max_per_domain:
            step = len(records) / args.max_per_domain  # an even spread, deterministic
            records = [records[int(i * step)] for i in range(args.max_per_domain)]
        paths = write_parts(records, out, domain, args.per_file)
        size = sum(p.stat().st_size for p in paths)
        print(f"{domain:12s} {len(records):6d} docs  {sum(len(r['text']) for r in records) / 1e6:7.2f} M chars  "
              f"{size / 1e6:6.2f} MB gz  -> {len(paths)} files")


if __name__ == "__main__":
    main()
