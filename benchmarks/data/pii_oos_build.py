"""Build the out-of-sample PII set (``pii_oos.jsonl``) from Debian text on this machine.

    .venv/bin/python benchmarks/data/pii_oos_build.py split                 # files per split
    .venv/bin/python benchmarks/data/pii_oos_build.py dev-hits --type ip    # what pii_v1 finds in DEV files
    .venv/bin/python benchmarks/data/pii_oos_build.py candidates --out C    # TEST candidates to label
    .venv/bin/python benchmarks/data/pii_oos_build.py assemble C LABELS     # -> benchmarks/data/pii_oos.jsonl

The rule that splits sources and the labelling guidelines are in ``pii_oos_README.md``. In short:
every text file under ``/usr/share/doc``, ``/usr/share/man`` and ``/usr/share/info`` belongs to the
*source* package that ships it (so binary packages built from one source, whose changelogs are
copies, never straddle the split); a source package is TEST when the first byte of
``sha256("pii-oos:" + name)`` is odd, DEV otherwise. Rules may be looked at and tuned on DEV files
only; the labelled set is built from TEST files only.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOTS = (Path("/usr/share/doc"), Path("/usr/share/man"), Path("/usr/share/info"))
# Documentation files by name; images, HTML/CSS/JS and example code are left out (not prose).
_DOC_NAME = re.compile(r"(?i)^(?:changelog|news|readme|authors|thanks|todo|bugs|copyright|credits|"
                       r"contributors|history|faq)[\w.\-]*$|\.(?:txt|md|rst)(?:\.gz)?$")
OUT = Path(__file__).resolve().parent / "pii_oos.jsonl"


def split_of(source_package: str) -> str:
    """``"test"`` or ``"dev"``: decided by the name alone, before any file is read."""
    return "test" if hashlib.sha256(f"pii-oos:{source_package}".encode()).digest()[0] % 2 else "dev"


def _source_packages() -> dict[str, str]:
    """Binary package (without ``:arch``) -> source package, from dpkg's database."""
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${source:Package}\n"],
                         capture_output=True, text=True, check=True).stdout
    return {b: s for b, s in (ln.split() for ln in out.splitlines() if ln.strip())}


def _file_owners(binary_to_source: dict[str, str]) -> dict[str, str]:
    """Installed path -> source package, from the ``.list`` files dpkg keeps per binary package."""
    owners: dict[str, str] = {}
    for lst in Path("/var/lib/dpkg/info").glob("*.list"):
        binary = lst.stem.split(":")[0]
        src = binary_to_source.get(binary, binary)
        for line in lst.read_text(errors="replace").splitlines():
            owners.setdefault(line, src)
    return owners


@dataclass(frozen=True)
class SourceFile:
    path: Path
    package: str  # source package
    kind: str  # debian-changelog, copyright, upstream-changelog, doc, man, info

    @property
    def split(self) -> str:
        return split_of(self.package)


def _kind(path: Path) -> str:
    s = str(path)
    if s.startswith("/usr/share/man/"):
        return "man"
    if s.startswith("/usr/share/info/"):
        return "info"
    name = path.name.lower()
    if name.startswith("changelog.debian"):
        return "debian-changelog"
    if name == "copyright":
        return "copyright"
    if name.startswith(("changelog", "news", "history")):
        return "upstream-changelog"
    return "doc"


def source_files() -> list[SourceFile]:
    """Every documentation file on the machine with its source package, sorted by path."""
    b2s = _source_packages()
    owners = _file_owners(b2s)
    files = []
    for root in ROOTS:
        for p in sorted(root.rglob("*")):
            if p.is_symlink() or not p.is_file():  # a symlinked file or doc dir is another file's copy
                continue
            if root.name == "doc" and not _DOC_NAME.search(p.name):
                continue
            if root.name == "doc":
                # /usr/share/doc/<binary>/...: the directory names the binary package.
                binary = p.relative_to(root).parts[0]
                pkg = owners.get(str(p)) or b2s.get(binary, binary)
            else:
                pkg = owners.get(str(p)) or "unowned:" + p.name.split(".")[0]
            files.append(SourceFile(p, pkg, _kind(p)))
    return files


def read_text(path: Path) -> str | None:
    """The file's text, or None for binary content."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except OSError:
            return None
    if b"\x00" in raw[:4096]:
        return None
    return raw.decode("utf-8", errors="replace")


# --- candidates (broader than any detector) ---------------------------------------------------
# Each pattern casts a wider net than pii_v1 or datatrove, so that every span either of them could
# report in a snippet is a candidate the labeller has judged.
CANDIDATE_PATTERNS: dict[str, re.Pattern[str]] = {
    "at-sign": re.compile(r"[^\s<>()\[\]{}\"',;]*@[^\s<>()\[\]{}\"',;]+"),
    "dotted": re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3,}(?!\d)"),
    "colon-hex": re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}(?![\w:])"),
    # digits with separators, >= 7 digits in all: phones, ZIP+4, dates, timestamps, serials
    "digit-run": re.compile(r"(?<![\w])[+(]?\d[\d \-.()/\u00a0]{5,30}\d(?!\w)"),
    "long-digits": re.compile(r"(?<!\w)\d{7,}(?!\w)"),
    "hex": re.compile(r"(?<![\w])[0-9a-fA-F]{16,}(?!\w)"),
    "uuid": re.compile(r"(?i)(?<![\w-])[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?![\w-])"),
    "secret-ish": re.compile(r"AKIA[A-Z0-9]{8,}|gh[pousr]_\w+|xox[abposr]-\S+|eyJ\S+|AIza\S+|[sr]k_live_\S+|"
                             r"(?i:bearer)\s+\S{12,}|-----BEGIN [A-Z ]*PRIVATE KEY-----"),
}


def _digit_count(s: str) -> int:
    return sum(c.isdigit() for c in s)


def candidate_spans(text: str) -> Iterator[tuple[int, int, str]]:
    for name, pat in CANDIDATE_PATTERNS.items():
        for m in pat.finditer(text):
            s = m.group(0)
            if name == "at-sign" and not re.search(r"[^\s@]@\w", s):
                continue
            # A full IPv6 address has 7 colons, a compressed one "::"; times (12:30:45) have 2.
            if name == "colon-hex" and ((s.count(":") < 5 and "::" not in s) or not re.search(r"[0-9A-Fa-f]", s)):
                continue
            if name == "digit-run":
                s = s.rstrip(" .-/(")
                # "+" only leads a number; "2008 +0100" is a year and a time zone.
                if _digit_count(s) < 7 or "+" in s[1:]:
                    continue
                yield m.start(), m.start() + len(s), name
                continue
            yield m.start(), m.end(), name


Finder = Callable[[str], Iterable[tuple[int, int, str]]]


def detectors() -> dict[str, Finder]:
    """The detectors whose every prediction must land on a judged candidate: datatrove and
    ``pii_v1`` with the rules the set was built against (fixed, so that a rebuild after the rules
    change draws the same snippets)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.pii import BEFORE_REV, datatrove_finder, rules_at
    from curation.stages.pii.detect import Detector

    return {"pii_v1": Detector(rules=rules_at(BEFORE_REV)).find, "datatrove": datatrove_finder()[0]}


def _line_bounds(text: str, start: int, end: int, context_lines: int) -> tuple[int, int]:
    a = start
    for _ in range(context_lines + 1):
        a = text.rfind("\n", 0, a - 1) + 1 if a > 0 else 0
    b = end
    for _ in range(context_lines + 1):
        nb = text.find("\n", b + 1 if b < len(text) and text[b] == "\n" else b)
        b = len(text) if nb < 0 else nb
    return a, b


def snippets(text: str, finders: dict[str, Finder], context_lines: int = 1,
             max_chars: int = 700) -> Iterator[tuple[str, list[tuple[int, int, str]]]]:
    """Windows of the line around each candidate (plus ``context_lines`` either side), merged where
    they overlap; the spans returned are relative to the snippet."""
    cands = set(candidate_spans(text))
    for name, f in finders.items():
        cands |= {(s, e, f"pred:{name}:{t}") for s, e, t in f(text)}
    if not cands:
        return
    windows: list[list[int]] = []
    for s, e, _ in sorted(cands):
        a, b = _line_bounds(text, s, e, context_lines)
        if b - a > max_chars:  # a very long line: a window of characters instead
            a, b = max(0, s - max_chars // 2), min(len(text), e + max_chars // 2)
        # Merge with the previous window unless that makes it too long (a list of addresses in a
        # THANKS file would become one snippet); windows may then share context lines.
        if windows and a <= windows[-1][1] and max(windows[-1][1], b) - windows[-1][0] <= max_chars:
            windows[-1][1] = max(windows[-1][1], b)
        else:
            windows.append([a, b])
    for a, b in windows:
        inside = sorted((s - a, e - a, k) for s, e, k in cands if a <= s and e <= b)
        yield text[a:b], inside


def cmd_split(_: argparse.Namespace) -> None:
    files = source_files()
    c: Counter[tuple[str, str]] = Counter((f.split, f.kind) for f in files)
    pk: dict[str, set[str]] = defaultdict(set)
    for f in files:
        pk[f.split].add(f.package)
    for split in ("dev", "test"):
        print(split, f"{len(pk[split])} source packages",
              {k: n for (s, k), n in sorted(c.items()) if s == split})


def cmd_dev_hits(args: argparse.Namespace) -> None:
    """Print what pii_v1 finds in DEV files (only DEV: this is what rules may be tuned on)."""
    from curation.stages.pii.detect import Detector

    det = Detector(types=[args.type])
    n = 0
    per_kind: Counter[str] = Counter()
    for f in source_files():
        if f.split != "dev" or (args.kind and f.kind != args.kind):
            continue
        text = read_text(f.path)
        if text is None:
            continue
        for s, e, t in det.find(text):
            n += 1
            per_kind[f.kind] += 1
            if args.show:
                ctx = text[max(0, s - 60):e + 30].replace("\n", "⏎")
                print(f"{f.kind}:{f.package}\t{text[s:e]!r}\t{ctx}")
    print(f"{n} {args.type} spans in DEV files", dict(per_kind), file=sys.stderr)


def cmd_fires(args: argparse.Namespace) -> None:
    """How often each type fires on whole files, as a new user would see it (the issue's
    measurement): spans per type, rules at ``BEFORE_REV`` vs now, for one split and file kind."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.pii import BEFORE_REV, rules_at
    from curation.stages.pii.detect import TYPES, Detector

    dets = {f"pii_v1 @{BEFORE_REV}": Detector(rules=rules_at(BEFORE_REV)), "pii_v1 now": Detector()}
    counts: dict[str, Counter[str]] = {name: Counter() for name in dets}
    n_files = 0
    for f in source_files():
        if f.split != args.split or f.kind != args.kind:
            continue
        text = read_text(f.path)
        if text is None:
            continue
        n_files += 1
        for name, det in dets.items():
            counts[name].update(t for _, _, t in det.find(text))
    print(f"{n_files} {args.split.upper()} {args.kind} files")
    for name in dets:
        print(f"  {name}: " + ", ".join(f"{t} {counts[name][t]}" for t in TYPES))


def cmd_candidates(args: argparse.Namespace) -> None:
    """Candidate snippets from TEST files, one JSON line each, deduplicated on whitespace-normalised text."""
    finders = detectors()
    seen: set[str] = set()
    n = 0
    with open(args.out, "w", encoding="utf-8") as out:
        for f in source_files():
            if f.split != "test":
                continue
            text = read_text(f.path)
            if text is None:
                continue
            for snip, cands in snippets(text, finders):
                key = " ".join(snip.split())
                if key in seen:
                    continue
                seen.add(key)
                out.write(json.dumps({"source": f"{f.kind}:{f.package}:{f.path}", "text": snip,
                                      "candidates": cands}, ensure_ascii=False) + "\n")
                n += 1
    print(f"{n} candidate snippets -> {args.out}", file=sys.stderr)


# --- sampling and labelling -------------------------------------------------------------------
# Strata by candidate class (never by what a detector predicts), first match wins; (name, test, cap).
def _stratum(text: str, cands: list[list]) -> str:
    spans = [(text[s:e], k) for s, e, k in cands if not k.startswith("pred:")]
    kinds = {k for _, k in spans}
    if kinds & {"secret-ish", "uuid", "colon-hex"}:
        return "rare"
    runs = [v for v, k in spans if k == "digit-run"]
    if any(re.fullmatch(r"\d{5}-\d{4}", v) for v in runs):
        return "zip"
    if any(v.startswith("+") for v in runs):
        return "plus"
    if "dotted" in kinds:
        return "dotted"
    if any(_digit_count(v) >= 9 and "." not in v for v in runs):
        return "phone-like"
    if "long-digits" in kinds:
        return "long-digits"
    if "hex" in kinds:
        return "hex"
    if runs:
        return "date-like"
    return "at-sign" if "at-sign" in kinds else "other"


CAPS = {"rare": 10_000, "zip": 10_000, "plus": 80, "dotted": 10_000, "phone-like": 200, "long-digits": 50,
        "hex": 50, "date-like": 30, "at-sign": 250, "other": 10_000}
PER_FILE = 3


def _clusters(text: str, cands: list[list]) -> list[dict]:
    """Overlapping candidates merged: each cluster is judged once."""
    out: list[dict] = []
    for s, e, k in sorted(cands):
        if out and s < out[-1]["end"]:
            out[-1]["end"] = max(out[-1]["end"], e)
            out[-1]["kinds"].append(k)
        else:
            out.append({"start": s, "end": e, "kinds": [k]})
    return out


def cmd_sample(args: argparse.Namespace) -> None:
    """Draw snippets per stratum with a fixed seed and cut them into clusters to label."""
    import random

    by: dict[str, list[dict]] = defaultdict(list)
    with open(args.cands, encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            by[_stratum(d["text"], d["candidates"])].append(d)
    rng = random.Random(30)
    picked = []
    for name in sorted(by):
        rows = by[name]
        rng.shuffle(rows)
        # At most PER_FILE snippets of a stratum from one file, so that one long changelog
        # (GnuTLS's git log has thousands of sign-offs) does not make up the stratum.
        per_file: Counter[str] = Counter()
        kept = []
        for d in rows:
            if len(kept) < CAPS[name] and per_file[d["source"]] < PER_FILE:
                per_file[d["source"]] += 1
                kept.append(d)
        picked += [{**d, "stratum": name} for d in kept]
        print(name, len(rows), "->", len(kept), file=sys.stderr)
    with open(args.out, "w", encoding="utf-8") as out:
        for d in picked:
            # Stable across re-draws: a judged snippet keeps its id.
            d["id"] = "s" + hashlib.sha1((d["source"] + "\0" + d["text"]).encode()).hexdigest()[:8]
            d["clusters"] = _clusters(d["text"], d.pop("candidates"))
            out.write(json.dumps(d, ensure_ascii=False) + "\n")
    print(len(picked), "snippets,", sum(len(d["clusters"]) for d in picked), "clusters", file=sys.stderr)


# A labelling aid, not a label: the engineer reads every cluster with this guess beside it and
# writes a decision wherever it is "?" or wrong (``pii_oos_README.md`` says how often that was).
_EMAIL_SHAPE = re.compile(r"[A-Za-z0-9._%+'\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
_DATE_SHAPES = re.compile(r"\(?(?:\d{4}[-/.]\d\d[-/.]\d\d|\d\d[-/.]\d\d[-/.]\d{4}|\d{4}-\d{4}|\d{4}-\d{2,6}|"
                          r"(?:19|20)\d{6})\)?")


def suggest(text: str, start: int, end: int, kinds: list[str]) -> str:
    import ipaddress

    v = text[start:end]
    ks = {k.split(":")[0] if not k.startswith("pred:") else k.split(":")[2] for k in kinds}
    if "at-sign" in ks or "email" in ks:
        m = _EMAIL_SHAPE.search(v)
        return f"email={m.group(0).rstrip('.')}" if m else "?"
    if "uuid" in ks:
        return "neg:uuid"
    if "hex" in ks:
        return "neg:hash"
    if "colon-hex" in ks:
        if re.fullmatch(r"(?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}", v):
            return "neg:mac-address"
        try:
            a = ipaddress.ip_address(v)
        except ValueError:
            return "?"
        return "?" if a.is_global else "neg:private-ip"
    if "dotted" in ks or "ip" in ks:
        m = re.search(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])", v)
        if not m:
            return "neg:version"
        try:
            a = ipaddress.ip_address(m.group(0))
        except ValueError:
            return "neg:version"
        if a in ipaddress.ip_network("192.0.2.0/24") or a in ipaddress.ip_network("198.51.100.0/24") or \
                a in ipaddress.ip_network("203.0.113.0/24"):
            return "neg:doc-example-ip"
        return "?" if a.is_global else "neg:private-ip"
    plain = v.strip("()")
    if re.fullmatch(r"\d{5}-\d{4}", plain):
        return "neg:zip"
    if re.fullmatch(r"\+?(?:19|20)\d{12}", plain):
        return "neg:timestamp"
    if _DATE_SHAPES.fullmatch(plain):
        return "neg:date"
    return "?"


def _suggestions(rows: list[dict]) -> dict[str, str]:
    return {f"{d['id']}.{j}": suggest(d["text"], c["start"], c["end"], c["kinds"])
            for d in rows for j, c in enumerate(d["clusters"])}


def cmd_show(args: argparse.Namespace) -> None:
    """One line per cluster: id, stratum, the cluster text and its line, for labelling by eye."""
    with open(args.sample, encoding="utf-8") as fh:
        rows = [json.loads(x) for x in fh]
    n = 0
    for d in rows[args.start:args.start + args.count]:
        t = d["text"]
        print(f"== {d['id']} [{d['stratum']}] {d['source'].split(':')[0]}:{d['source'].split(':')[1]}")
        for j, c in enumerate(d["clusters"]):
            s, e = c["start"], c["end"]
            a = max(0, s - args.width)
            b = min(len(t), e + args.width)
            ctx = (t[a:s] + "⟦" + t[s:e] + "⟧" + t[e:b]).replace("\n", "⏎").replace("\t", "␉")
            kinds = ",".join(sorted({k.replace("pred:", "") for k in c["kinds"]}))
            guess = suggest(t, s, e, c["kinds"])
            print(f"{d['id']}.{j}\t{guess}\t{kinds}\t{ctx}")
            n += 1
    print(n, "clusters", file=sys.stderr)


def _locate(text: str, value: str, near: int) -> tuple[int, int]:
    """The occurrence of ``value`` in ``text`` closest to offset ``near``."""
    starts = [m.start() for m in re.finditer(re.escape(value), text)]
    if not starts:
        raise ValueError(f"{value!r} not in snippet")
    s = min(starts, key=lambda x: abs(x - near))
    return s, s + len(value)


def _negative_kind(kind: str, text: str, start: int, end: int) -> str:
    """Two kinds the guess cannot tell apart, renamed by rule (kind only; still a negative)."""
    v = text[start:end].strip("()")
    if kind == "private-ip" and v.startswith("255."):
        return "netmask"
    if kind == "date" and text[max(0, start - 4):start] == "CVE-":
        return "id-number"
    return kind


def cmd_assemble(args: argparse.Namespace) -> None:
    """Sampled snippets + the engineer's decisions -> the labelled set."""
    decisions: dict[str, str] = {}
    with open(args.decisions, encoding="utf-8") as fh:
        for line in fh:
            if line.strip() and not line.startswith("#"):
                key, label = line.rstrip("\n").split("\t", 1)
                decisions[key] = label  # a later line overrides an earlier one
    with open(args.sample, encoding="utf-8") as fh:
        rows = [json.loads(x) for x in fh]
    n_clusters = n_decided = 0
    with open(args.out, "w", encoding="utf-8") as out:
        for d in rows:
            t = d["text"]
            spans: set[tuple[int, int, str]] = set()
            negatives: set[tuple[int, int, str]] = set()
            for j, c in enumerate(d["clusters"]):
                key = f"{d['id']}.{j}"
                n_clusters += 1
                label = decisions.get(key)
                n_decided += label is not None
                label = label or suggest(t, c["start"], c["end"], c["kinds"])
                if label == "?":
                    raise SystemExit(f"{key}: no decision")
                for part in label.split(";"):
                    if part.startswith("neg:"):
                        kind = _negative_kind(part[4:], t, c["start"], c["end"])
                        negatives.add((c["start"], c["end"], kind))
                        continue
                    typ, value = part.split("=", 1)
                    if typ not in ("email", "ip", "phone", "card", "secret"):
                        raise SystemExit(f"{key}: unknown type {typ!r}")
                    s, e = _locate(t, value, c["start"])
                    spans.add((s, e, typ))
            rec = {"id": d["id"], "source": ":".join(d["source"].split(":")[:2]), "stratum": d["stratum"],
                   "text": t, "spans": sorted(map(list, spans)), "negatives": sorted(map(list, negatives))}
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"{len(rows)} snippets, {n_clusters} clusters, {n_decided} with a written decision -> {args.out}",
          file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(required=True)
    p = sub.add_parser("split")
    p.set_defaults(fn=cmd_split)
    p = sub.add_parser("dev-hits")
    p.add_argument("--type", default="ip")
    p.add_argument("--kind", default="")
    p.add_argument("--show", action="store_true")
    p.set_defaults(fn=cmd_dev_hits)
    p = sub.add_parser("fires")
    p.add_argument("--split", default="test", choices=["dev", "test"])
    p.add_argument("--kind", default="debian-changelog")
    p.set_defaults(fn=cmd_fires)
    p = sub.add_parser("candidates")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_candidates)
    p = sub.add_parser("sample")
    p.add_argument("cands")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_sample)
    p = sub.add_parser("show")
    p.add_argument("sample")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--count", type=int, default=50)
    p.add_argument("--width", type=int, default=70)
    p.set_defaults(fn=cmd_show)
    p = sub.add_parser("assemble")
    p.add_argument("sample")
    p.add_argument("decisions")
    p.add_argument("--out", default=str(OUT))
    p.set_defaults(fn=cmd_assemble)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
