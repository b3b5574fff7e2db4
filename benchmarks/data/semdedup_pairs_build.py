"""Build the labelled pair set for semantic dedup (``semdedup_pairs.jsonl``) from text on this machine.

    .venv/bin/python benchmarks/data/semdedup_pairs_build.py candidates        # -> /tmp/semdedup_pairs_candidates.jsonl
    .venv/bin/python benchmarks/data/semdedup_pairs_build.py show --category man_neighbours --start 0 --count 20
    .venv/bin/python benchmarks/data/semdedup_pairs_build.py assemble           # candidates + labels -> the set

Candidate pairs come from offline sources, each pair from one *construction* (its ``category``): the same
manual page as roff source and as ``man`` renders it; the same manual section as GNU info and as HTML;
a Python docstring and ``help()``'s rendering of it; licence files of the same licence from different
packages; and, as hard negatives, the nearest other page / section / docstring / licence by TF-IDF
cosine (never by the embedding model under test, so the set is not chosen for or against it).
A construction only proposes a pair; its label is the engineer's judgement after reading it, recorded
in ``semdedup_pairs_labels.tsv`` (pair id, label, note) under the guidelines in
``semdedup_pairs_README.md``. ``assemble`` joins the two and refuses a candidate without a label.
"""

from __future__ import annotations

import argparse
import gzip
import html
import inspect
import json
import math
import os
import pydoc
import random
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

HERE = Path(__file__).resolve().parent
#: Candidates are regenerated, not kept: the labelled set holds every kept pair's texts, construction and label.
CANDIDATES = Path(os.environ.get("SEMDEDUP_CANDIDATES", "/tmp/semdedup_pairs_candidates.jsonl"))
LABELS = HERE / "semdedup_pairs_labels.tsv"
OUT = HERE / "semdedup_pairs.jsonl"
SEED = 30
#: Texts are kept whole up to this many characters (longer documents are not drawn).
MAX_CHARS = 8000


@dataclass
class Doc:
    source: str  # where it came from (path, object name), for the record
    text: str
    key: str = ""  # what identifies its subject (page name, node, object, licence class)


def _pair(category: str, a: Doc, b: Doc, proposed: int, why: str) -> dict[str, Any]:
    return {"category": category, "proposed": proposed, "why": why, "a_source": a.source, "b_source": b.source,
            "a": a.text, "b": b.text}


# -- TF-IDF nearest neighbours (the hard negatives' proposer) -----------------------------------------------

_WORD = re.compile(r"[a-z][a-z0-9_]+")


def tfidf_neighbours(texts: list[str], top: int) -> list[tuple[float, int, int]]:
    """The ``top`` most similar pairs (i < j) by TF-IDF cosine of lowercased words, each text's best
    neighbour only (so one prolific family does not fill the list)."""
    from scipy.sparse import csr_matrix

    vocab: dict[str, int] = {}
    rows, cols, vals = [], [], []
    for i, t in enumerate(texts):
        for w, c in Counter(_WORD.findall(t.lower())).items():
            rows.append(i)
            cols.append(vocab.setdefault(w, len(vocab)))
            vals.append(1.0 + math.log(c))
    m = csr_matrix((vals, (rows, cols)), shape=(len(texts), len(vocab)))
    df = np.bincount(m.indices, minlength=len(vocab))
    m = m.multiply(np.log(len(texts) / df)[None, :]).tocsr()
    norms = np.sqrt(m.multiply(m).sum(1)).A.ravel()
    m = csr_matrix(m.multiply(1 / np.maximum(norms, 1e-12)[:, None]))
    sims = (m @ m.T).toarray()
    np.fill_diagonal(sims, -1)
    best: dict[tuple[int, int], float] = {}
    for i in range(len(texts)):
        j = int(sims[i].argmax())
        best[(min(i, j), max(i, j))] = float(sims[i, j])
    ranked = sorted(((s, i, j) for (i, j), s in best.items()), reverse=True)
    return ranked[:top]


# -- manual pages ----------------------------------------------------------------------------------------

MAN_ROOT = Path("/usr/share/man")


def _man_source(path: Path) -> str:
    return gzip.decompress(path.read_bytes()).decode("utf-8", "replace")


def _man_render(path: Path) -> str:
    """The page as ``man`` shows it (80 columns, no hyphenation or justification, no overstrike)."""
    env = {**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": "0", "LANG": "C.UTF-8"}
    out = subprocess.run(["man", "--nh", "--nj", "-E", "UTF-8", "-l", str(path)], capture_output=True, env=env,
                         timeout=30, check=False).stdout  # man's warnings on odd macros are not failures
    text = subprocess.run(["col", "-bx"], input=out, capture_output=True, timeout=30, check=True).stdout.decode("utf-8", "replace")
    return text.strip()


def _man_pair(p: Path) -> tuple[Doc, Doc] | None:
    """(roff source, rendered) of a page: not a ``.so`` redirect, source 1.5-12 kB with comments under
    10% of it, rendered 800-7,000 characters; else None."""
    src = _man_source(p)
    if not 1500 <= len(src) <= 12000 or src.lstrip().startswith(".so"):
        return None
    comments = sum(len(ln) for ln in src.splitlines() if ln.startswith(('.\\"', "'\\\"")))
    if comments > 0.1 * len(src):
        return None
    rendered = _man_render(p)
    if not 800 <= len(rendered) <= 7000:
        return None
    name = p.name.removesuffix(".gz")
    return Doc(str(p), src, name), Doc(f"man -l {p}", rendered, name)


def man_pool(n: int, rng: random.Random, gcloud_share: float = 0.2) -> list[tuple[Doc, Doc]]:
    """``n`` (roff source, rendered) pages of English sections 1, 5 and 8 (regular files), at most
    ``gcloud_share`` of them Google Cloud SDK pages (16,631 of the 18,657 here: unchecked, they would
    be nearly all of the pool)."""
    files = sorted(p for sec in ("man1", "man5", "man8") for p in (MAN_ROOT / sec).glob("*.gz")
                   if p.is_file() and not p.is_symlink())
    rng.shuffle(files)
    out: list[tuple[Doc, Doc]] = []
    gcloud = 0
    for p in files:
        if len(out) >= n:
            break
        is_gcloud = p.name.startswith("gcloud")
        if is_gcloud and gcloud >= gcloud_share * n:
            continue
        pair = _man_pair(p)
        if pair is None:
            continue
        gcloud += is_gcloud
        out.append(pair)
    return out


def gcloud_tracks(n: int, rng: random.Random) -> list[tuple[Doc, Doc]]:
    """``n`` (GA page, alpha or beta page) of the same gcloud command, both rendered: one command
    documented for two release tracks."""
    man1 = MAN_ROOT / "man1"
    ga = sorted(p for p in man1.glob("gcloud_*.1.gz") if not p.name.startswith(("gcloud_alpha_", "gcloud_beta_")))
    rng.shuffle(ga)
    out: list[tuple[Doc, Doc]] = []
    for p in ga:
        if len(out) >= n:
            break
        track = rng.choice(["alpha", "beta"])
        q = man1 / p.name.replace("gcloud_", f"gcloud_{track}_", 1)
        if not q.exists():
            continue
        a, b = _man_pair(p), _man_pair(q)
        if a is None or b is None:
            continue
        out.append((a[1], b[1]))
    return out


def _man_body(rendered: str) -> str:
    """A rendered page without its first and last line (the NAME(1) header and the footer, which
    name the page and would make every neighbour list start with name look-alikes)."""
    lines = rendered.splitlines()
    return "\n".join(lines[1:-1])


# -- GNU info vs HTML --------------------------------------------------------------------------------------


class _Text(HTMLParser):
    """Visible text of an HTML page, block elements on their own lines, ``<pre>`` kept as is."""

    BLOCK: ClassVar[set[str]] = {"p", "div", "br", "li", "dt", "dd", "tr", "h1", "h2", "h3", "h4", "h5", "pre", "table", "hr", "ul",
             "ol", "dl", "blockquote"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style", "head"):
            self.skip += 1
        if tag == "pre":
            self.pre += 1
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head"):
            self.skip = max(0, self.skip - 1)
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data if self.pre else re.sub(r"\s+", " ", data))

    def text(self) -> str:
        lines = [ln.strip() if not ln.startswith(" ") else ln.rstrip() for ln in "".join(self.parts).splitlines()]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_text(markup: str) -> str:
    p = _Text()
    p.feed(markup)
    return p.text()


def _norm_title(t: str) -> str:
    t = html.unescape(t)
    t = re.sub(r"^[\d.A-Z]*\d[\d.]*\s+", "", t.strip())  # "1.2 Command Line Options" -> "Command Line Options"
    return re.sub(r"[^a-z0-9]+", " ", t.lower()).strip()


def info_nodes(path: Path) -> dict[str, str]:
    """Node title (normalised) -> its text as ``info`` shows it (without the ``File: ... Node:`` line)."""
    raw = gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
    out: dict[str, str] = {}
    for chunk in raw.split("\x1f")[1:]:
        head, _, body = chunk.lstrip("\n").partition("\n")
        m = re.search(r"Node: ([^,]+)", head)
        if not m or head.startswith(("Tag Table", "End Tag")):
            continue
        out[_norm_title(m.group(1))] = body.strip()
    return out


def html_sections(path: Path) -> dict[str, str]:
    """Texinfo's single-page HTML split at its headings: title (normalised) -> section text, the text
    up to the next heading of any level (as an info node holds only its own text, not its children's)."""
    markup = path.read_text(errors="replace")
    heads = list(re.finditer(r"<h([1-4])[^>]*>(.*?)</h\1>", markup, re.DOTALL))
    out: dict[str, str] = {}
    for k, m in enumerate(heads):
        end = heads[k + 1].start() if k + 1 < len(heads) else len(markup)
        title = _norm_title(re.sub(r"<[^>]+>", "", m.group(2)))
        out.setdefault(title, html_text(markup[m.start(): end]))
    return out


def info_html_pool() -> list[tuple[Doc, Doc]]:
    """(info node, HTML section) of the same title in libffi's, bc's and time's manuals, both 300-7,000
    characters."""
    out: list[tuple[Doc, Doc]] = []
    libffi = Path("/usr/share/doc/libffi8/html")
    manuals = [("/usr/share/info/libffi.info.gz", {_norm_title(p.stem.replace("-", " ")): html_text(p.read_text())
                                                   for p in sorted(libffi.glob("*.html"))}, str(libffi)),
               ("/usr/share/info/bc.info.gz", html_sections(Path("/usr/share/doc/bc/bc.html")),
                "/usr/share/doc/bc/bc.html"),
               ("/usr/share/info/time.info.gz", html_sections(Path("/usr/share/doc/time/time.html")),
                "/usr/share/doc/time/time.html")]
    for info, sections, where in manuals:
        for title, node in info_nodes(Path(info)).items():
            sec = sections.get(title)
            if title in ("top", "index", "concept index") or sec is None:
                continue
            if 300 <= len(node) <= 7000 and 300 <= len(sec) <= 7000:
                out.append((Doc(f"{info} node '{title}'", node, f"{Path(info).stem}:{title}"),
                            Doc(f"{where} section '{title}'", sec, f"{Path(info).stem}:{title}")))
    return out


# -- docstrings ------------------------------------------------------------------------------------------


def _objects() -> Iterator[tuple[str, Any]]:
    import itertools
    import os as os_mod

    import numpy
    import pyarrow.compute as pc
    import torch

    mods = [("numpy", numpy), ("numpy.linalg", numpy.linalg), ("numpy.fft", numpy.fft),
            ("pyarrow.compute", pc), ("torch", torch), ("itertools", itertools), ("os", os_mod)]
    for prefix, mod in mods:
        for name in sorted(dir(mod)):
            if name.startswith("_"):
                continue
            obj = getattr(mod, name, None)
            if callable(obj) and not inspect.isclass(obj):
                yield f"{prefix}.{name}", obj
    gen = numpy.random.default_rng()
    for name in sorted(dir(gen)):
        if not name.startswith("_"):
            yield f"numpy.random.Generator.{name}", getattr(gen, name)


def docstring_pool() -> list[tuple[Doc, Doc]]:
    """(raw docstring, ``help()`` text) of functions with 500-6,000 character docstrings; an object
    reachable under several names is taken once (its first name)."""
    seen: set[int] = set()
    seen_doc: set[str] = set()
    out: list[tuple[Doc, Doc]] = []
    # Held in a list so every object stays alive: a bound method (numpy.random.Generator's) is made anew
    # by each getattr, and a freed one's id() can be reused by the next, which made the pool vary by run.
    objects = list(_objects())
    for name, obj in objects:
        doc = getattr(obj, "__doc__", None)
        if not isinstance(doc, str) or id(obj) in seen:
            continue
        seen.add(id(obj))
        raw = inspect.cleandoc(doc)
        if not 500 <= len(raw) <= 6000 or raw in seen_doc:
            continue
        seen_doc.add(raw)
        try:
            rendered = pydoc.render_doc(obj, renderer=pydoc.plaintext)
        except Exception:  # noqa: BLE001, S112 - an object pydoc cannot render is left out
            continue
        if len(rendered) > MAX_CHARS:
            continue
        out.append((Doc(f"{name}.__doc__", raw, name), Doc(f"pydoc.render_doc({name})", rendered, name)))
    return out


# -- licences --------------------------------------------------------------------------------------------

LICENCE_ROOTS = [*Path(".venv/lib").glob("python3*/site-packages"), Path("/usr/lib/python3/dist-packages")]


def licence_class(text: str) -> str | None:
    """The one licence a file holds, by its operative phrases; None for none, several or unknown."""
    t = re.sub(r"\s+", " ", text).lower()
    found = []
    if "permission is hereby granted, free of charge" in t:
        found.append("MIT")
    if "permission to use, copy, modify, and/or distribute" in t or "permission to use, copy, modify, and distribute this software for any purpose with or without fee" in t:
        found.append("ISC")
    if "redistribution and use in source and binary forms" in t:
        found.append("BSD-3" if ("endorse or promote" in t) else "BSD-2")
    if "apache license" in t and "version 2.0" in t and "terms and conditions for use" in t:
        found.append("Apache-2.0")
    if "mozilla public license version 2.0" in t:
        found.append("MPL-2.0")
    if "python software foundation license" in t:
        found.append("PSF")
    if "gnu lesser general public license" in t and "terms and conditions" in t:
        found.append("LGPL")
    elif "gnu general public license" in t and "terms and conditions" in t:
        found.append("GPL")
    return found[0] if len(found) == 1 else None


def licence_pool() -> list[Doc]:
    """Licence files of Python packages (``*.dist-info``/``*.egg-info``: LICENSE*, COPYING*) holding one
    licence, 400-12,000 characters, whitespace-distinct; plus Debian's common-licenses."""
    out: list[Doc] = []
    seen: set[str] = set()
    paths = []
    for root in LICENCE_ROOTS:
        for meta in sorted(root.glob("*-info")):
            paths += sorted(p for p in meta.rglob("*") if p.is_file() and re.match(r"(?i)(licen[cs]e|copying)", p.name))
    paths += sorted(p for p in Path("/usr/share/common-licenses").iterdir() if p.is_file())
    for p in paths:
        text = p.read_text(errors="replace").strip()
        norm = " ".join(text.split())
        cls = licence_class(text)
        if cls is None or not 400 <= len(text) <= 40000 or norm in seen:
            continue
        if cls not in ("Apache-2.0", "GPL", "LGPL", "MPL-2.0", "PSF") and len(text) > 12000:
            continue
        seen.add(norm)
        out.append(Doc(str(p), text, cls))
    return out


# -- READMEs of two versions of a package ----------------------------------------------------------------


def _description(meta_dir: Path) -> str | None:
    for name in ("METADATA", "PKG-INFO"):
        f = meta_dir / name
        if f.is_file():
            raw = f.read_text(errors="replace")
            _, _, body = raw.partition("\n\n")
            if body.strip():
                return body.strip()
            m = re.search(r"^Description: (.*?)(?=^\S|\Z)", raw, re.DOTALL | re.MULTILINE)
            if m:
                return re.sub(r"\n {8}", "\n", m.group(1)).strip()
    return None


def readme_versions() -> list[tuple[Doc, Doc]]:
    def pkgs(root: Path) -> dict[str, tuple[str, Path]]:
        out = {}
        for d in root.iterdir():
            m = re.match(r"(.+?)-([0-9][^-]*?)\.(dist-info|egg-info)$", d.name)
            if m:
                out[m.group(1).lower().replace("_", "-")] = (m.group(2), d)
        return out

    old, new = pkgs(Path("/usr/lib/python3/dist-packages")), pkgs(next(Path(".venv/lib").glob("python3*/site-packages")))
    out = []
    for name in sorted(set(old) & set(new)):
        a, b = _description(old[name][1]), _description(new[name][1])
        if a and b and 300 <= len(a) <= 20000 and 300 <= len(b) <= 20000:
            out.append((Doc(f"{old[name][1]} description", a, name), Doc(f"{new[name][1]} description", b, name)))
    return out


# -- the candidates --------------------------------------------------------------------------------------


def candidates() -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    pairs: list[dict[str, Any]] = []

    # Manual pages: the same page as source and as rendered; the nearest other page as a hard negative
    # (half of them across formats, so that format alone never tells a pair's label).
    pool = man_pool(700, rng)
    for src, ren in rng.sample(pool, 60):
        pairs.append(_pair("man_source_rendered", src, ren, 1, "the same page: roff source and man's rendering"))
    for s, i, j in tfidf_neighbours([_man_body(r.text) for _, r in pool], 80):
        a = pool[i][1] if rng.random() < 0.5 else pool[i][0]
        pairs.append(_pair("man_neighbours", a, pool[j][1], 0, f"nearest other page by TF-IDF cosine {s:.3f}"))
    for ga, track in gcloud_tracks(25, rng):
        pairs.append(_pair("man_release_tracks", ga, track, 1, "one gcloud command's page for two release tracks"))

    # GNU info vs HTML: the same section; the next section of the same manual as a hard negative.
    ih = info_html_pool()
    for node, sec in ih:
        pairs.append(_pair("info_html_same", node, sec, 1, "the same manual section as info and as HTML"))
    for k, (node, _) in enumerate(ih):
        other = ih[k + 1][1] if k + 1 < len(ih) and ih[k + 1][0].key.split(":")[0] == node.key.split(":")[0] \
            else ih[k - 1][1]
        pairs.append(_pair("info_html_other", node, other, 0, "an adjacent section of the same manual"))

    # Docstrings: the raw docstring vs help(); the nearest other docstring as a hard negative.
    ds = docstring_pool()
    for raw, ren in rng.sample(ds, 50):
        pairs.append(_pair("docstring_rendered", raw, ren, 1, "a docstring and help()'s rendering of it"))
    for s, i, j in tfidf_neighbours([r.text for r, _ in ds], 60):
        a = ds[i][1] if rng.random() < 0.5 else ds[i][0]
        pairs.append(_pair("docstring_neighbours", a, ds[j][0], 0, f"nearest other docstring by TF-IDF cosine {s:.3f}"))

    # Licences: the same licence from two packages; two different licences (by class pairs).
    lic = licence_pool()
    by: dict[str, list[Doc]] = {}
    for d in lic:
        by.setdefault(d.key, []).append(d)
    same_quota = {"MIT": 16, "BSD-3": 10, "Apache-2.0": 6, "BSD-2": 5, "ISC": 3}
    for cls, n in same_quota.items():
        docs = by.get(cls, [])
        combos = [(a, b) for k, a in enumerate(docs) for b in docs[k + 1:]]
        for a, b in rng.sample(combos, min(n, len(combos))):
            pairs.append(_pair("licence_same", a, b, 1, f"both {cls}"))
    diff_quota = {("MIT", "ISC"): 6, ("MIT", "BSD-2"): 6, ("BSD-2", "BSD-3"): 8, ("MIT", "BSD-3"): 6,
                  ("Apache-2.0", "MPL-2.0"): 2, ("Apache-2.0", "BSD-3"): 4, ("ISC", "BSD-2"): 3, ("GPL", "LGPL"): 4,
                  ("MIT", "PSF"): 2, ("Apache-2.0", "GPL"): 2}
    for (c1, c2), n in diff_quota.items():
        combos = [(a, b) for a in by.get(c1, []) for b in by.get(c2, [])]
        for a, b in rng.sample(combos, min(n, len(combos))):
            pairs.append(_pair("licence_different", a, b, 0, f"{c1} vs {c2}"))

    for a, b in readme_versions():
        pairs.append(_pair("readme_versions", a, b, 1, "a package's description in two versions"))

    for k, p in enumerate(pairs):
        p["id"] = f"p{k:04d}"
    return pairs


def _plain(text: str) -> list[str]:
    """Words of a text with roff font escapes and request lines' dots dropped (for the review diff)."""
    text = re.sub(r"\\f[BIRP5]|\\&|\\[,/]", "", text).replace("\\-", "-")
    return [w for w in re.findall(r"\S+", text) if not re.fullmatch(r"\.[A-Z]{1,2}", w)]


def show(rows: list[dict[str, Any]], width: int, diff: int = 0) -> None:
    """Each pair's figures and the head of both texts; with ``diff``, the first ``diff`` differing word
    runs (what the reviewer reads to tell a re-rendering or a renamed copy from another subject)."""
    import difflib

    for p in rows:
        wa, wb = set(_WORD.findall(p["a"].lower())), set(_WORD.findall(p["b"].lower()))
        jw = len(wa & wb) / max(len(wa | wb), 1)
        print(f"=== {p['id']} {p['category']} proposed={p['proposed']} ({p['why']}) len {len(p['a'])}/{len(p['b'])} "
              f"word-set J {jw:.2f}")
        print(f"--- A {p['a_source']}\n{p['a'][:width]}")
        print(f"--- B {p['b_source']}\n{p['b'][:width]}")
        if diff:
            a, b = _plain(p["a"]), _plain(p["b"])
            sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
            ops = [(" ".join(a[i1:i2])[:90], " ".join(b[j1:j2])[:90]) for op, i1, i2, j1, j2 in sm.get_opcodes()
                   if op != "equal"]
            print(f"--- word diff: ratio {sm.ratio():.2f}, {len(ops)} differing runs")
            for x, y in ops[:diff]:
                print(f"    - {x!r}\n    + {y!r}")


def assemble() -> None:
    labels: dict[str, tuple[int, str]] = {}
    for line in LABELS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        pid, label, *note = line.split("\t")
        labels[pid] = (int(label), note[0] if note else "")
    rows = [json.loads(x) for x in CANDIDATES.read_text().splitlines()]
    missing = [r["id"] for r in rows if r["id"] not in labels]
    if missing:
        sys.exit(f"{len(missing)} candidates have no label: {missing[:10]}")
    with OUT.open("w") as fh:
        for r in rows:
            label, note = labels[r["id"]]
            if label < 0:  # left out (unusable: an extraction error, an exact copy)
                continue
            fh.write(json.dumps({"id": r["id"], "category": r["category"], "label": label, "note": note,
                                 "proposed": r["proposed"], "why": r["why"],
                                 "a_source": r["a_source"], "b_source": r["b_source"], "a": r["a"], "b": r["b"]},
                                ensure_ascii=False) + "\n")
    print(f"wrote {OUT}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("candidates")
    sh = sub.add_parser("show")
    sh.add_argument("--category")
    sh.add_argument("--ids", default="")
    sh.add_argument("--start", type=int, default=0)
    sh.add_argument("--count", type=int, default=20)
    sh.add_argument("--width", type=int, default=400)
    sh.add_argument("--diff", type=int, default=0, help="show this many differing word runs")
    sub.add_parser("assemble")
    args = ap.parse_args()
    if args.cmd == "candidates":
        rows = candidates()
        with CANDIDATES.open("w") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"{len(rows)} candidates -> {CANDIDATES}: {dict(Counter(r['category'] for r in rows))}")
    elif args.cmd == "show":
        rows = [json.loads(x) for x in CANDIDATES.read_text().splitlines()]
        ids = set(args.ids.split(",")) if args.ids else None
        rows = [r for r in rows if (ids is None or r["id"] in ids) and (args.category in (None, r["category"]))]
        show(rows[args.start: args.start + args.count], args.width, args.diff)
    else:
        assemble()


if __name__ == "__main__":
    main()
