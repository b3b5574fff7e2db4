# python benchmarks/preselect_effect.py --out runs/preselect_effect            # the full run (docs/preselect_effect.md)
# python benchmarks/preselect_effect.py --out /tmp/pe --quick                  # CI smoke: the loop end to end
# python benchmarks/preselect_effect.py --out /tmp/pe --target my_target.jsonl # your own target (JSONL or a folder of text)
"""PreSelect at micro scale, powered: does data selected by predictive strength teach a small model better?

The design, its gates and decision rules are in docs/preselect_effect.md (written before the run).
Everything runs through the project's own commands (``curate run``, ``curate train-scorer``,
``curate fit-skills``, ``train run``, ``train eval``, ``train export-hf``, ``train natural-mixture``).

1. Sources, built deterministically from what a Debian machine of this kind has offline. Pool: five
   natural sources (docstrings, stdlib code, READMEs, licence files, Debian changelogs) and a labelled
   known-bad control (``shuffled``: words shuffled within each line, line breaks and indents kept;
   ``truncated``: a 10-40% prefix cut mid-word), built from pool documents only. General held-out:
   every 20th natural document. Target: man pages of every section, sampled by a hash of the resolved
   path, each name family (``gcloud_*``, ``git-*``...) capped at 5% of the target, split dev/test by
   resolved path; ``--target`` replaces them. The pool is decontaminated against target test.
2. A shared base model trained on the pool, accepted only once its target dev loss is below a fixed
   level (past the plateau); every arm continues from it (low seed variance).
3. Family: 6 models that differ in data: the base continued the same steps on six mixes (the pool's
   natural mix, and each natural source emphasised in turn), four seeds each: the mean of two seeds
   orders the family and labels the data (each model's loss on a document is its two seeds' mean), the
   other two check that the order reproduces; S (``predictive_strength_v1``) on full documents of the
   pool; three fastText scorers (paper settings) on three disjoint thirds of the labels.
4. One scoring run over the pool (every scorer, reference LMs, random scores, embedding clusters);
   each arm a ``select_v1`` run keeping the same share of characters.
5. Per arm, selection and seed: continue the base for the same steps, evaluate on every target test
   page and on the general held-out set.
6. Mechanism: continue the base briefly on each embedding cluster; Spearman rho between a cluster's
   teaching value and each scorer's cluster mean.
Output under ``--out``: results.json, report.md, contrasts.png, mechanism.png, commands.log.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import random
import re
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _selection_stats as st  # noqa: E402
from benchmarks._commands import CommandError, Commands  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NATURAL = ("python_docs", "code", "readme", "license", "changelog")
JUNK = ("shuffled", "truncated")
TARGET = "target"


def _corpus_module() -> Any:
    spec = importlib.util.spec_from_file_location("make_sample_corpus", REPO / "scripts" / "make_sample_corpus.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _h(s: str) -> int:
    return int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "little")


_ROFF_ESC = re.compile(r"\\f[BIRPC]|\\f\(..|\\f\[[^]]*\]|\\\(..|\\\[[^]]*\]|\\[&%e|^~0:c]|\\s[-+]?\d|\\\*.")


def roff_text(src: str) -> str:
    """Plain text of a man page: requests dropped (their arguments kept for headings and fonts)."""
    out = []
    for line in src.splitlines():
        if line.startswith(('.\\"', "'\\\"", '.TH', '.so', '.de', '.ds', '.nr', '.ig', '.if', '.ie', '.el')):
            continue
        if line.startswith((".", "'")):
            parts = line.split(None, 1)
            line = parts[1].replace('"', "") if len(parts) > 1 and parts[0][1:] in (
                "SH", "SS", "B", "I", "BI", "IB", "BR", "RB", "IR", "RI", "TP", "IP") else ""
        line = _ROFF_ESC.sub("", line).replace("\\-", "-").replace("\\\\", "\\")
        out.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def site_docs(min_chars: int, limit_chars: int, max_chars: int | None) -> list[dict]:
    """Docstrings of the installed packages (site-packages), package by package in name order, each cut to
    ``max_chars`` (``cut_document``), until ``limit_chars``: the stdlib alone has about 1 MB of docstrings."""
    mod = _corpus_module()
    root = Path(sysconfig.get_paths()["purelib"])
    docs, total = [], 0
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if any(part in rel for part in ("test", "__pycache__", "_vendor")):
            continue
        module = rel[:-3].replace("/", ".").removesuffix(".__init__")
        for name, doc in mod.file_docstrings(path, module, min_chars):
            doc = cut_document(doc, max_chars)
            docs.append({"id": f"pydoc:{name}", "text": doc, "domain": "python_docs", "origin": f"site-packages/{rel}"})
            total += len(doc)
        if total >= limit_chars:
            break
    return docs


def stdlib_code(max_bytes: int, limit_chars: int, max_chars: int | None, site_packages: bool = False) -> list[dict]:
    """Standard-library modules (subpackages included, tests not), then with ``site_packages`` the installed
    packages' modules, files up to ``max_bytes``, each cut to ``max_chars`` (``cut_document``), until
    ``limit_chars``."""
    roots = [("stdlib", "pycode", Path(sysconfig.get_paths()["stdlib"]))]
    if site_packages:
        roots.append(("site-packages", "pkgcode", Path(sysconfig.get_paths()["purelib"])))
    docs, total = [], 0
    for name, prefix, root in roots:
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if any(part in rel for part in ("test", "site-packages", "idlelib", "lib2to3", "__pycache__", "_vendor",
                                            "vendored", "__editable__", "_pb2")):
                continue
            if path.stat().st_size > max_bytes:
                continue
            text = cut_document(path.read_text(encoding="utf-8", errors="replace"), max_chars)
            if len(text) > 500:
                docs.append({"id": f"{prefix}:{rel}", "text": text, "domain": "code", "origin": f"{name}/{rel}"})
                total += len(text)
            if total >= limit_chars:
                return docs
    return docs


def debian_docs(pattern: str, domain: str, limit_chars: int, max_chars: int | None) -> list[dict]:
    """Files under /usr/share/doc matching ``pattern`` (gzipped or plain), each cut to ``max_chars``
    (``cut_document``), until ``limit_chars``: Debian ``copyright`` files are licence boilerplate,
    ``changelog.Debian`` files terse release notes."""
    docs, total = [], 0
    for path in sorted(Path("/usr/share/doc").glob(pattern)):
        if not path.is_file():
            continue
        try:
            raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
        except (OSError, EOFError):
            continue
        text = cut_document(raw.decode("utf-8", errors="replace").strip(), max_chars)
        if len(text) >= 200:
            docs.append({"id": f"{domain}:{path.relative_to('/usr/share/doc').as_posix()}", "text": text,
                         "domain": domain, "origin": str(path)})
            total += len(text)
        if total >= limit_chars:
            break
    return docs


def man_family(name: str) -> str:
    """The family of a man page: its name up to the first ``-``, ``_`` or ``.`` (``gcloud_compute_x`` -> gcloud)."""
    return re.split(r"[-_.]", name, maxsplit=1)[0]


def man_pages(limit_chars: int, family_cap: float) -> list[dict]:
    """Man pages of every section in hash order of their resolved paths (symlinks and ``.so`` aliases
    count once), roff stripped, until ``limit_chars``; no name family above ``family_cap`` of it."""
    seen, docs, total, per_family = set(), [], 0, {}
    paths = {p.resolve() for p in Path("/usr/share/man").glob("man[1-8]/*.gz")}
    for path in sorted(paths, key=lambda p: _h(str(p))):
        try:
            text = roff_text(gzip.open(path, "rt", encoding="utf-8", errors="replace").read())
        except (OSError, EOFError):
            continue
        text = text[:20000]
        fam = man_family(path.name)
        if len(text) < 800 or _h(text) in seen or per_family.get(fam, 0) + len(text) > family_cap * limit_chars:
            continue
        seen.add(_h(text))
        per_family[fam] = per_family.get(fam, 0) + len(text)
        docs.append({"id": f"man:{path.name}", "text": text, "domain": TARGET, "origin": str(path)})
        total += len(text)
        if total >= limit_chars:
            break
    return docs


def user_target(path: Path, limit_chars: int) -> list[dict]:
    """``--target``: a JSONL file (``text`` field, ``id`` optional) or a folder of text files."""
    docs = []
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            if f.is_file():
                docs.append({"id": f"target:{f.relative_to(path).as_posix()}", "origin": str(f.resolve()),
                             "text": f.read_text(encoding="utf-8", errors="replace")})
    else:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    text = rec["text"]
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise SystemExit(f"--target {path}: line {i}: no JSON object with a text field ({exc})") from None
                docs.append({"id": f"target:{rec.get('id', i)}", "origin": f"{path}:{i}", "text": str(text)})
    docs = [{**d, "domain": TARGET} for d in sorted(docs, key=lambda d: _h(d["origin"])) if len(d["text"]) >= 200]
    out, total = [], 0
    for d in docs:
        if total >= limit_chars:
            break
        out.append(d)
        total += len(d["text"])
    if len(out) < 4:
        raise SystemExit(f"--target {path}: {len(out)} documents of 200+ characters; at least 4 are needed")
    return out


def cut_document(text: str, max_chars: int | None) -> str:
    """``text`` cut to at most ``max_chars`` at its last line break (else its last space) in the second half of
    the limit, so that a cut natural document does not end mid-word like the ``truncated`` control; a limit of
    None keeps every document whole."""
    if max_chars is None or len(text) <= max_chars:
        return text
    head = text[: max_chars + 1]
    for sep in ("\n", " "):
        at = head.rfind(sep)
        if at >= max_chars // 2:
            return head[:at].rstrip()
    return text[:max_chars]


def degrade(docs: list[dict], kind: str, seed: int) -> list[dict]:
    """Known-bad copies. ``shuffled``: words shuffled within each line, line breaks and leading indents
    kept (the damage is in the words, not in the layout a scorer could key on); ``truncated``: a random
    10-40% prefix, cut mid-word."""
    out = []
    for d in docs:
        rng = random.Random(_h(f"{seed}/{kind}/{d['id']}"))
        if kind == "shuffled":
            lines = []
            for line in d["text"].split("\n"):
                words = line.split()
                rng.shuffle(words)
                lines.append(line[: len(line) - len(line.lstrip())] + " ".join(words))
            text = "\n".join(lines)
        else:
            text = d["text"][: max(200, int(len(d["text"]) * rng.uniform(0.1, 0.4)))]
        out.append({**d, "id": f"{kind}:{d['id']}", "text": text, "domain": kind})
    return out


def fill_shares(candidates: dict[str, list[dict]], cap: int, refill: bool) -> dict[str, list[dict]]:
    """Each source's documents, in order, until its share of ``cap`` characters. With ``refill``, the characters
    that sources short of their share lack are offered evenly to the sources that have more documents, in turn,
    until the pool holds ``cap`` per source (overshooting by less than one document) or every source has run out."""
    taken: dict[str, int] = {}
    for dom, docs in candidates.items():
        total, i = 0, 0
        while i < len(docs) and total < cap:
            total += len(docs[i]["text"])
            i += 1
        taken[dom] = i
    need = cap * len(candidates) - sum(len(d["text"]) for dom, i in taken.items() for d in candidates[dom][:i])
    while refill and need > 0:
        donors = [dom for dom in candidates if taken[dom] < len(candidates[dom])]
        if not donors:
            break
        share = need / len(donors)
        for dom in donors:
            got, docs = 0, candidates[dom]
            while taken[dom] < len(docs) and got < min(share, need):
                got += len(docs[taken[dom]]["text"])
                taken[dom] += 1
            need -= got
    return {dom: list(candidates[dom][:i]) for dom, i in taken.items()}


def write_jsonl(path: Path, docs: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(path, "wb", mtime=0) as fh:
        for d in docs:
            fh.write((json.dumps(d, ensure_ascii=False) + "\n").encode())


def build_sources(src: Path, p: dict[str, Any], target: Path | None) -> dict[str, Any]:
    """Pool files per domain, general held-out, target dev/test; returns what went where."""
    mod = _corpus_module()
    pool_chars = int(p["pool_mb"] * 1e6)
    cap = int(pool_chars * (1 - p["junk_share"]) / len(NATURAL))
    # every document is cut before it counts towards its source: no document may be a large part of its source
    # (round 7: one README of 144k characters was 7.6% of the readme source and, degraded, 23% of `shuffled`)
    top = p["doc_max_chars"]
    pkg = [{**d, "text": cut_document(d["text"], top)} for d in mod.package_texts(200)]
    stdlib_docs = [{**d, "text": cut_document(d["text"], top)} for d in mod.stdlib_docs(200)]
    # every reader stops at twice the most a source can hold (the hash order below then picks it from all of it):
    # its share, or with refill every natural source's share, so that a refilled source is a hash-ordered sample too
    refill = p.get("refill_short_sources", False)
    lim = 2 * cap * (len(NATURAL) if refill else 1)
    raw = {"python_docs": stdlib_docs + site_docs(200, lim - sum(len(d["text"]) for d in stdlib_docs), top),
           "code": stdlib_code(60_000, lim, top, p.get("code_site_packages", False)),
           "readme": [r for r in pkg if r["domain"] == "readme"] + debian_docs("*/README*", "readme", lim, top),
           "license": [r for r in pkg if r["domain"] == "license"] + debian_docs("*/copyright", "license", lim, top),
           "changelog": debian_docs("*/changelog.Debian*", "changelog", lim, top)}
    stats: dict[str, Any] = {"pool": {}, "general_test": {}}
    general, candidates = [], {}
    for dom in NATURAL:
        docs = sorted(raw[dom], key=lambda d: _h(d["id"]))  # a deterministic shuffle
        held = [d for i, d in enumerate(docs) if i % 20 == 0][: max(5, cap // 20 // 2000)]
        candidates[dom] = [d for i, d in enumerate(docs) if i % 20 != 0]
        general += held
        stats["general_test"][dom] = {"docs": len(held), "chars": sum(len(d["text"]) for d in held)}
    pools = fill_shares(candidates, cap, refill)
    # the known-bad control is made from pool documents only: no degraded copy of a held-out document
    junk_cap = int(pool_chars * p["junk_share"] / len(JUNK))
    sources = {"shuffled": pools["python_docs"] + pools["readme"],
               "truncated": pools["python_docs"] + pools["readme"] + pools["code"]}
    for kind in JUNK:
        bad, total = [], 0
        for d in sorted(degrade(sources[kind], kind, 0), key=lambda d: _h(d["id"])):
            if total >= junk_cap:
                break
            bad.append(d)
            total += len(d["text"])
        pools[kind] = bad
    for dom, pool in pools.items():
        write_jsonl(src / "pool" / f"{dom}.jsonl.gz", pool)
        stats["pool"][dom] = {"docs": len(pool), "chars": sum(len(d["text"]) for d in pool)}
    write_jsonl(src / "general_test.jsonl.gz", general)
    pages = user_target(target, 2 * int(p["target_mb"] * 1e6)) if target else \
        man_pages(2 * int(p["target_mb"] * 1e6), p["family_cap"])
    dev = [d for d in pages if _h(d["origin"]) % 2 == 0]
    test = [d for d in pages if _h(d["origin"]) % 2 == 1]
    write_jsonl(src / "target_dev.jsonl.gz", dev)
    write_jsonl(src / "target_test.jsonl.gz", test)
    fams: dict[str, int] = {}
    for d in pages:
        fams[man_family(Path(d["origin"]).name)] = fams.get(man_family(Path(d["origin"]).name), 0) + len(d["text"])
    stats["target"] = {"source": str(target) if target else "man pages", "dev_docs": len(dev), "test_docs": len(test),
                       "dev_chars": sum(len(d["text"]) for d in dev), "test_chars": sum(len(d["text"]) for d in test),
                       "largest_family_share": max(fams.values()) / max(1, sum(fams.values())),
                       "largest_family": max(fams, key=fams.__getitem__)}
    return stats


class Runner(Commands):
    """The project's commands (``benchmarks/_commands.py``) plus ``curate run`` of a pipeline dict."""

    def __init__(self, out: Path, threads: int, in_process: bool) -> None:
        super().__init__(REPO, out / "commands.log", threads, in_process)
        self.out = out

    def curate_run(self, name: str, inputs: list[str], stages: list[dict], out: Path) -> float:
        cfg = {"name": name, "input": {"paths": inputs, "id_field": "id", "domain_field": "domain", "batch_size": 200},
               "stages": stages, "output": {"dir": str(out)}, "executor": {"kind": "local"}}
        path = self.out / "pipelines" / f"{name}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(cfg, indent=1))
        return self("curation.cli", "run", str(path))[1]


def last_json(stdout: str) -> Any:
    return json.loads([ln for ln in stdout.splitlines() if ln.startswith("{")][-1])


PARAMS = {  # fixed before any evaluation (docs/preselect_effect.md); --quick shrinks everything to a smoke test
    "full": {"pool_mb": 12.0, "junk_share": 0.1, "target_mb": 0.6, "family_cap": 0.05, "keep": 0.15,
             # every natural document cut to 8,000 characters at a line break (round 8): the largest document is
             # then a few percent of its source at most (round 7: 23% of `shuffled`)
             "doc_max_chars": 8000,
             "seq_len": 128, "batch_size": 16, "d_model": 64, "n_layer": 2, "base_steps": 1500, "base_lr": 3e-3,
             # a base is kept once its target dev loss is at most this (nats/byte): round 3's plateaued base had
             # 2.878, rounds 1-2's bases 2.60-2.67 on test; up to base_tries seeds, else the run stops
             "base_max_dev": 2.75, "base_tries": 3,
             # ten random selections (round 7): the A/A contrast is five against five, and gate 4's yardstick (the
             # A/A detectable difference) no longer rests on two selections against three
             "arm_steps": 300, "arm_lr": 1e-3, "seeds": 5, "randoms": 10,
             # random selections keep 15% of each source (select_v1 group_by): round 4's pool-wide random 15%s
             # differed in domain mix, and so in target loss, by more than the learner's seeds
             "random_group_by": "domain", "bimodal_min_side": 2,
             # the screen's factor calibrated so that it flags a round whose 13 screened selections all have
             # unimodal Gaussian seeds at most 5% of the time (0.05 / 13 per selection); round 6's fixed factor 2
             # fires on one such selection 9-18% of the time at seed SDs of 0.015-0.02
             "bimodal_null_quantile": 0.996,
             # every arm's share lands on the document boundary nearest it (select_v1 boundary: nearest): one
             # document of the control `shuffled` is 23% of it, and round 5's random selections that drew it kept 33%
             "boundary": "nearest",
             # scorer k trains on the labels of parts != k and is measured on part k (cross-fitting), each class
             # capped at 10% of the labelled documents: round 5's 21% at S = 1 drew negatives up to S = 0.87
             "class_share": 0.1, "positive_min": 1.0,  # positives: S = 1, as in the paper
             # the family differs in data: the base continued family_steps on each mix (None: the pool's natural
             # mix; a source: that source at family_emphasis of the tokens, the rest in natural proportions).
             # Round 3 showed a family differing only in compute ranks 97% of documents alike once it is ordered.
             "family": [None, "python_docs", "code", "readme", "license", "changelog"], "family_steps": 300,
             # the emphasised source at 90% of the tokens (round 8): at 60%, licences and changelogs were 0.001-0.008
             # apart on the target and the order would reproduce (tau >= 0.8) with probability 0.56-0.87 (rounds 4-7
             # and a pilot on round 7's pool and base); at 90% every adjacent pair was 0.024+ apart, probability
             # 0.99 on that pool (benchmarks/preselect_family_pilot.py)
             "family_emphasis": 0.9,
             # four seeds per model: the mean of seeds 0-1 orders the family and labels the data, seeds 2-3 check it
             "family_seeds": 4, "order_seeds": 2, "label_docs": 6000, "scorers": 3, "bucket": 2_000_000, "ml_steps": 200,
             "clusters": 40, "cluster_sample": 4000, "cluster_steps": 40, "cluster_seeds": 2,
             "cluster_eval_tokens": 100_000, "general_eval_tokens": 50_000, "deadline_min": None},
    "quick": {"pool_mb": 1.0, "junk_share": 0.1, "target_mb": 0.06, "family_cap": 0.05, "keep": 0.15,
              "doc_max_chars": 8000,
              "seq_len": 64, "batch_size": 8, "d_model": 32, "n_layer": 1, "base_steps": 40, "base_lr": 3e-3,
              "base_max_dev": None, "base_tries": 1,
              "arm_steps": 10, "arm_lr": 1e-3, "seeds": 2, "randoms": 5, "random_group_by": "domain",
              "bimodal_min_side": 2, "bimodal_null_quantile": 0.996, "boundary": "nearest", "class_share": 0.1,
              # ten steps leave the family too alike for any document to order it perfectly (S = 1): the smoke test
              # takes S >= 0.9 (one discordant pair of 15) as positive so that the loop still runs end to end
              "positive_min": 0.9,
              "family": [None, "python_docs", "code", "readme", "license", "changelog"], "family_steps": 10,
              "family_emphasis": 0.9,
              "family_seeds": 4, "order_seeds": 2, "label_docs": 300, "scorers": 3, "bucket": 100_000, "ml_steps": 10,
              "clusters": 4, "cluster_sample": 200, "cluster_steps": 5, "cluster_seeds": 2,
              "cluster_eval_tokens": 5_000, "general_eval_tokens": 5_000, "deadline_min": None},
    # a lent GPU: a ~5M-parameter learner and a larger pool; stops launching runs at 8 minutes
    "gpu": {"pool_mb": 90.0, "junk_share": 0.1, "target_mb": 2.0, "family_cap": 0.05, "keep": 0.15,
            # a 90 MB pool from what a machine has offline: documents cut at 60,000 characters (0.4% of a 16 MB share,
            # as 8,000 is of the CPU scale's 2.2 MB), code from the installed packages as well as the standard
            # library, and the share a short source (READMEs: about 3.4 MB here) lacks refilled from the others;
            # docstrings and code then share files, so the pool is also decontaminated against the general set
            "doc_max_chars": 60000, "code_site_packages": True, "refill_short_sources": True,
            "decontaminate_general": True,
            "seq_len": 256, "batch_size": 64, "d_model": 256, "n_layer": 6, "base_steps": 1500, "base_lr": 1e-3,
            "base_max_dev": None, "base_tries": 1,  # no CPU-scale level applies: the first base is kept, its loss reported
            "arm_steps": 800, "arm_lr": 5e-4, "seeds": 3, "randoms": 5, "random_group_by": "domain",
            "bimodal_min_side": 2, "bimodal_null_quantile": 0.996, "boundary": "nearest", "class_share": 0.1,
            "positive_min": 1.0,
            "family": [None, "python_docs", "code", "readme", "license", "changelog"], "family_steps": 400,
            "family_emphasis": 0.9,
            "family_seeds": 4, "order_seeds": 2, "label_docs": 20000, "scorers": 3, "bucket": 2_000_000, "ml_steps": 400,
            "clusters": 40, "cluster_sample": 5000, "cluster_steps": 60, "cluster_seeds": 2,
            "cluster_eval_tokens": 200_000, "general_eval_tokens": 100_000, "deadline_min": 8.0},
}
GATE_SEED_SD = 0.02      # learner seed SD of target loss (nats/byte), within a selection
GATE_AUC = 0.7           # each PreSelect scorer's held-out AUC
GATE_TAU = 0.8           # family order on the target, seed 0 vs seed 1
GATE_ML_MDE = 3.0        # Moore-Lewis must beat random by more than this many detectable differences
MARGIN = 0.01            # equivalence margin (nats/byte) for a negative result


class Deadline(Exception):
    """--deadline-min passed: stop launching runs, write what finished."""


class Stopped(Exception):
    """A step the design depends on cannot be done (e.g. no PreSelect negatives): report why, write what finished."""


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "preselect_effect")
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny pool, models and runs (CI)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: the GPU scale (5M-parameter learner, a pool of up to 90 MB from the machine's own "
                         "files), stops by itself at 8 minutes")
    ap.add_argument("--target", type=Path, default=None, help="JSONL (text field) or folder of text: the target")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per command (1: these models are too small to gain from more, and a second "
                         "thread fights any other job on a 2-core machine)")
    ap.add_argument("--deadline-min", type=float, default=None, help="stop launching training runs after this")
    ap.add_argument("--seed-offset", type=int, default=0,
                    help="added to every seed (base, family, labels, scorers, random selections, learner, clusters): "
                         "a replication on fresh seeds")
    ap.add_argument("--in-process", action=argparse.BooleanOptionalAction, default=True,
                    help="run the commands in this interpreter (default) instead of one python per command")
    args = ap.parse_args(argv)
    p = dict(PARAMS["quick" if args.quick else "gpu" if args.device == "cuda" else "full"])
    p["seeds"] = args.seeds or p["seeds"]
    deadline = args.deadline_min if args.deadline_min is not None else p["deadline_min"]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    run = Runner(out, args.threads, args.in_process)
    t_start = time.time()

    def check_deadline() -> None:
        if deadline is not None and time.time() - t_start > 60 * deadline:
            raise Deadline()

    res: dict[str, Any] = {"params": p, "device": args.device, "seed_offset": args.seed_offset, "finished": False}
    try:
        experiment(run, p, out, args, res, check_deadline)
        res["finished"] = True
    except Deadline:
        res["stopped_at_deadline_min"] = deadline
    except Stopped as exc:
        res["stopped"] = str(exc)
    res["wall_s"] = time.time() - t_start
    analyse(res)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    (out / "report.md").write_text(report(res))
    plots(res, out)
    print(report(res))
    print(f"wall time {res['wall_s']:.0f} s; results in {out}")
    return res


def experiment(run: Runner, p: dict[str, Any], out: Path, args: argparse.Namespace, res: dict[str, Any],
               check_deadline: Any) -> None:
    src, runs = out / "src", out / "runs"
    res["sources"] = build_sources(src, p, args.target)
    test_file = src / "target_test.jsonl.gz"
    filters = [{"stage": "text_length_v1", "min_chars": 200}, {"stage": "exact_dedup_v1"},
               {"stage": "near_dedup_v1", "threshold": 0.8,
                # licence files are near-copies of a few templates: most of that source going is intended
                "on_mass_removal": "warn"},
               {"stage": "decontaminate_v1", "eval_files": [{"path": str(test_file)}] + (
                   [{"path": str(src / "general_test.jsonl.gz")}] if p.get("decontaminate_general") else [])}]
    run.curate_run("pool", [str(src / "pool" / "*.jsonl.gz")], filters, runs / "pool")
    for name in ("target_dev", "target_test", "general_test"):
        run.curate_run(name, [str(src / f"{name}.jsonl.gz")], [], runs / name)
    pool = runs / "pool"
    pool_shards = str(pool / "shards" / "*.parquet")
    manifest = json.loads((pool / "manifest.json").read_text())
    res["pool"] = {"docs": manifest["totals"]["docs_out"],
                   "by_domain": {d: v["chars"] for d, v in manifest["domains"].items()},
                   "decontaminated": manifest.get("funnel", {}).get("decontaminate_v1")}
    pool_chars = sum(res["pool"]["by_domain"].values())
    run("training.cli", "natural-mixture", str(pool), "--out", str(out / "mix_pool.json"))

    def train(name: str, steps: int, seed: int, extra: list[str], lr: float) -> Path:
        cfg = {"data": {"runs": [str(pool)], "ratios_file": str(out / "mix_pool.json"), "seq_len": p["seq_len"],
                        "batch_size": p["batch_size"], "tokenizer": "bytes", "seed": seed},
               "model": {"n_layer": p["n_layer"], "n_head": 2, "d_model": p["d_model"]},
               "schedule": {"kind": "cosine", "lr": lr, "warmup_steps": min(20, max(1, steps // 10))},
               "steps": steps, "eval_every": max(1, steps // 5), "eval_batches": 2, "checkpoint_every": 10**9,
               "seed": seed, "out_dir": str(out / "train" / name)}
        path = out / "train" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cfg))
        run("training.cli", "run", str(path), *[x for o in extra for x in ("-o", o)])
        return out / "train" / name / "checkpoint.pt"

    def evaluate(ckpt: Path, name: str, max_tokens: int | None = None) -> dict[str, Any]:
        a = ["--max-tokens", str(max_tokens)] if max_tokens else []
        return last_json(run("training.cli", "eval", str(ckpt), "--runs", str(runs / name), *a)[0])

    # -- the shared base, and the reference models ---------------------------------------------
    o = args.seed_offset
    base = pick_base(train, evaluate, p, o, res)
    natural = json.loads((out / "mix_pool.json").read_text())["ratios"]
    family: list[dict[str, Any]] = []
    n_order = p["order_seeds"]  # seeds 0..n_order-1 label the data, the rest check that the order reproduces
    for fseed in range(p["family_seeds"]):
        for k, source in enumerate(p["family"]):
            # the base continued on mix k: models that differ in the data they saw, as the paper's family did
            ratios = family_mix(natural, source, p["family_emphasis"])
            ck = train(f"family_s{fseed}_m{k}", p["family_steps"], 100 + o + fseed,
                       [f"init_from={base}", f"data.ratios={json.dumps(ratios)}", "data.ratios_file=null"],
                       p["arm_lr"])
            dev = evaluate(ck, "target_dev")["all"]["loss"]
            m = {"name": f"m{k}s{fseed}", "model": k, "seed": fseed, "mix": source or "natural", "ratios": ratios,
                 "steps": p["family_steps"], "target_dev_loss": dev, "score": -dev}
            if fseed < n_order:
                run("training.cli", "export-hf", str(ck), str(ck.parent / "hf"))
                m["path"] = str(ck.parent / "hf")
            family.append(m)
    res["family"] = family
    n_models = len(p["family"])

    def mean_score(seeds: range) -> list[float]:
        return [float(np.mean([m["score"] for m in family if m["model"] == k and m["seed"] in seeds]))
                for k in range(n_models)]
    order_scores = mean_score(range(n_order))
    check_scores = mean_score(range(n_order, p["family_seeds"]))
    res["family_scores"] = {"order": order_scores, "check": check_scores}
    res["family_tau"] = st.kendall_tau(order_scores, check_scores) if p["family_seeds"] > n_order else None
    labellers = [m for m in family if m["seed"] < n_order]
    # the reference model of the perplexity arm: the best by the order seeds' mean, its first seed
    best = next(m for m in labellers if m["model"] == int(np.argmax(order_scores)) and m["seed"] == 0)
    # windows of seq_len advancing by 7/8 of it: every token has at least seq_len/8 of context, 1.14x the cost
    lm = {"stage": "lm_loss_v1", "block_size": p["seq_len"], "stride": p["seq_len"] * 7 // 8, "device": args.device,
          "batch_size": 32}
    # Moore-Lewis: the base continued on target dev is the target LM, the base itself the pool LM
    ml_ck = train("ml_target", p["ml_steps"], o, [f"init_from={base}", f"data.runs=[{runs / 'target_dev'}]",
                                                  f"data.ratios={{\"{TARGET}\": 1.0}}", "data.ratios_file=null"],
                  p["arm_lr"])
    for ck in (ml_ck, base):
        run("training.cli", "export-hf", str(ck), str(ck.parent / "hf"))

    # -- PreSelect labels and scorers, the DCLM scorer ---------------------------------------
    label_fraction = min(1.0, p["label_docs"] / res["pool"]["docs"] * 1.05)
    label_stages = [{"stage": "random_score_v1", "name": "label", "seed": 1 + o},
                    {"stage": "select_v1", "column": "score_label", "top_fraction": label_fraction},
                    {**lm, "models": [{"name": m["name"], "path": m["path"]} for m in labellers]},
                    # each model's loss on a document is the mean over its order seeds, its score their mean score
                    {"stage": "predictive_strength_v1", "models": [
                        {"name": f"m{k}s0", "score": order_scores[k], "replicas": [f"m{k}s{j}" for j in range(1, n_order)]}
                        for k in range(n_models)]}]
    run.curate_run("labels", [pool_shards], label_stages, runs / "labels")
    n_sc = p["scorers"]
    res["labels"] = label_stats(runs / "labels")
    try:
        scorers = [train_scorer(run, out / f"scorer_ps{k}", ["--run", str(runs / "labels"), "--holdout-part",
                                                             f"{k}/{n_sc}", "--max-class-share", str(p["class_share"]),
                                                             "--positive-min", str(p["positive_min"])],
                                p, k + o) for k in range(n_sc)]
    except CommandError as exc:  # e.g. every labelled document has S = 1: nothing to contrast them with
        said = [ln for ln in str(exc).splitlines() if ln.startswith("error:")] or str(exc).splitlines()[:1]
        raise Stopped(f"a PreSelect scorer could not be trained: {said[0]}") from None
    dclm = train_scorer(run, out / "scorer_dclm", ["--positive", str(src / "target_dev.jsonl.gz"),
                                                   "--negative", pool_shards], p, o)
    labelled = _docs(runs / "labels", ["id", "text", "predictive_strength"])
    for k, sc in enumerate(scorers):
        sc["rank_auc"] = rank_auc(labelled, Path(sc["path"]), (k, n_sc), p["positive_min"])
    res["scorers"] = {"preselect": scorers, "dclm": dclm}

    # -- the arms: each a curation run over the pool, scoring then keeping the same share ------
    keep = p["keep"]
    selections: dict[str, list[dict[str, Any]]] = {}

    def select(arm: str, name: str, stages: list[dict[str, Any]], column: str, lowest: bool = False,
               fraction: float = keep, group_by: str | None = None) -> None:
        d = runs / f"sel_{name}"
        sel = {"stage": "select_v1", "column": column, "top_fraction": fraction, "lowest": lowest,
               "boundary": p["boundary"], **({"group_by": group_by} if group_by else {})}
        run.curate_run(f"sel_{name}", [pool_shards], [*stages, sel], d)
        selections.setdefault(arm, []).append({"name": name, "run": str(d), "ratios_from": str(d)})

    def ft(name: str) -> dict[str, Any]:
        return {"stage": "fasttext_score_v1", "models": [{"name": name, "path": str(out / f"scorer_{name}")}]}

    for k in range(p["randoms"]):
        select("random", f"random{k}", [{"stage": "random_score_v1", "name": f"r{k}", "seed": 10 + o + k}], f"score_r{k}",
               group_by=p["random_group_by"])
    for k in range(n_sc):
        select("preselect", f"preselect{k}", [ft(f"ps{k}")], f"score_ps{k}")
    for k in range(n_sc):  # random documents at PreSelect's domain proportions
        selections.setdefault("domain_matched", []).append(
            {"name": f"domain_matched{k}", "run": selections["random"][k]["run"],
             "ratios_from": selections["preselect"][k]["run"]})
    # S is known on the labelled sample only, and a second run would not see the labels run's columns (a run
    # reads text, id and domain from its input): the top of the sample by S, as many characters as the other
    # arms keep of the pool, is picked here with select_v1's own threshold rule and run through `curate run`.
    # S takes 16 values (15 model pairs), and a threshold cannot split a tie: rounds 4-6 kept every document
    # at the crossing level, 1.2-2.0x the other arms' characters. Ties are broken by a hash of the id, far
    # below the 1/15 step between S values, so the arm keeps the same share as the others.
    from curation.stages.scoring.random_score import id_uniform
    from curation.stages.scoring.select import top_fraction_threshold

    lab = _docs(runs / "labels", ["id", "text", "domain", "n_chars", "predictive_strength"])
    s_lab = lab["predictive_strength"].astype(float) + 1e-6 * id_uniform(lab["id"].tolist(), seed=7 + o)
    thr = top_fraction_threshold(s_lab, lab["n_chars"].astype(float), min(1.0, keep * pool_chars / lab["n_chars"].sum()),
                                 p["boundary"])
    write_jsonl(src / "preselect_direct.jsonl.gz", [{"id": i, "text": t, "domain": d} for i, t, d, v in zip(
        lab["id"], lab["text"], lab["domain"], s_lab) if v >= thr])
    d = runs / "sel_preselect_direct"
    run.curate_run("sel_preselect_direct", [str(src / "preselect_direct.jsonl.gz")], [], d)
    selections["preselect_direct"] = [{"name": "preselect_direct", "run": str(d), "ratios_from": str(d), "threshold": thr}]
    select("moore_lewis", "moore_lewis", [
        {**lm, "models": [{"name": "mltarget", "path": str(ml_ck.parent / "hf")}, {"name": "mlpool", "path": str(base.parent / "hf")}]},
        {"stage": "cross_entropy_diff_v1", "target": "mltarget", "general": "mlpool", "name": "moore_lewis"}],
        "score_moore_lewis")
    select("dclm", "dclm", [ft("dclm")], "score_dclm")
    select("perplexity", "perplexity", [{**lm, "models": [{"name": "ref", "path": best["path"]}]}], "bpc_ref", lowest=True)
    res["selections"] = {arm: [describe_selection(s, res["pool"]["by_domain"]) for s in sels]
                         for arm, sels in selections.items()}

    # -- the learner: continue the base on each selection, same steps, same seeds --------------
    eval_domains = [TARGET, *NATURAL]

    def mixture(sel: dict[str, Any]) -> Path:
        """The ratios file a selection trains with: its own proportions, or (domain_matched) another run's,
        restricted to the domains the trained-on run has (renormalised by the loader)."""
        mix = out / "mixes" / f"{sel['name']}.json"
        if not mix.exists():
            mix.parent.mkdir(exist_ok=True)
            ratios = last_json(run("training.cli", "natural-mixture", sel["ratios_from"], "--out", str(mix))[0])["ratios"]
            if sel["ratios_from"] != sel["run"]:
                own = last_json(run("training.cli", "natural-mixture", sel["run"], "--out", str(mix))[0])["ratios"]
                sel["missing_domains"] = sorted(set(ratios) - set(own))
                mix.write_text(json.dumps({"ratios": {d: r for d, r in ratios.items() if d in own}}) + "\n")
        return mix
    res["arms"] = {arm: [{"name": s["name"], "seeds": []} for s in sels] for arm, sels in selections.items()}
    order = ["random", "preselect", "moore_lewis", "domain_matched", "preselect_direct", "dclm", "perplexity"]
    for seed in range(o, o + p["seeds"]):  # seed-major: a deadline leaves every arm with the same seeds
        for arm in order:
            for sel, rec in zip(selections[arm], res["arms"][arm]):
                check_deadline()
                mix = mixture(sel)
                ck = train(f"{sel['name']}_s{seed}", p["arm_steps"], seed, [
                    f"init_from={base}", f"data.runs=[{sel['run']}]", f"data.ratios_file={mix}",
                    f"eval_runs=[{runs / 'target_test'}, {runs / 'general_test'}]",
                    f"eval_domains=[{', '.join(eval_domains)}]"], p["arm_lr"])
                tgt = evaluate(ck, "target_test")
                gen = evaluate(ck, "general_test", p["general_eval_tokens"])
                log = [json.loads(x) for x in (ck.parent / "log.jsonl").read_text().splitlines()]
                rec["seeds"].append({"seed": seed, "target_loss": tgt["all"]["loss"], "target_tokens": tgt["all"]["tokens"],
                                     "general_loss": float(np.mean([v["loss"] for v in gen["domains"].values()])),
                                     "curve": [{"step": c["step"], "target": c["eval"][TARGET]} for c in log if "eval" in c]})

    # -- mechanism: what each cluster teaches, against what each scorer says of it ------------
    run("curation.cli", "fit-skills", pool_shards, "--k", str(p["clusters"]), "--sample", str(p["cluster_sample"]),
        "--out", str(out / "clusters.json"), "--seed", str(o), "--max-tokens", "64")
    names = [f"ps{k}" for k in range(n_sc)]
    scores = runs / "scores"
    run.curate_run("scores", [pool_shards], [
        {"stage": "fasttext_score_v1", "models": [{"name": n, "path": str(out / f"scorer_{n}")} for n in names + ["dclm"]]},
        {"stage": "random_score_v1", "name": "r0", "seed": 10 + o},
        {"stage": "skill_tag_v1", "source": "embedding", "centroids": str(out / "clusters.json"), "column": "cluster",
         "max_tokens": 64}],
        scores)
    clusters = cluster_table(scores, names)
    res["mechanism"] = {"clusters": clusters}
    base_t = evaluate(base, "target_test", p["cluster_eval_tokens"])["all"]["loss"]
    res["mechanism"]["base_target_loss"] = base_t
    for seed in range(o, o + p["cluster_seeds"]):
        for c in clusters:
            check_deadline()
            ck = train(f"cluster_{c['cluster']}_s{seed}", p["cluster_steps"], seed, [
                f"init_from={base}", f"data.runs=[{scores}]", "data.group_by=cluster",
                f"data.ratios={{\"{c['cluster']}\": 1.0}}", "data.ratios_file=null"], p["arm_lr"])
            c.setdefault("target_loss", []).append(evaluate(ck, "target_test", p["cluster_eval_tokens"])["all"]["loss"])
            c["teaching"] = base_t - float(np.mean(c["target_loss"]))  # loss removed: higher teaches more


def pick_base(train: Any, evaluate: Any, p: dict[str, Any], o: int, res: dict[str, Any]) -> Path:
    """The shared base: trained with seed ``o``, then ``o + 1000``, ... (at most ``base_tries``) until one's target
    dev loss is at most ``base_max_dev`` (None: the first is kept). Every try is recorded; none passing stops the
    run, since arms continued from a base on its plateau split by seed (round 3)."""
    tries = []
    for t in range(p["base_tries"]):
        name = "base" if t == 0 else f"base_try{t}"
        ck = train(name, p["base_steps"], o + 1000 * t, [], p["base_lr"])
        dev = evaluate(ck, "target_dev")["all"]["loss"]
        tries.append({"seed": o + 1000 * t, "target_dev_loss": dev})
        if p["base_max_dev"] is None or dev <= p["base_max_dev"]:
            res["base"] = {"tries": tries, "seed": o + 1000 * t, "target_dev_loss": dev,
                           "target_loss": evaluate(ck, "target_test")["all"]["loss"]}
            return ck
    res["base"] = {"tries": tries}
    raise Stopped(f"no base reached target dev loss {p['base_max_dev']} in {len(tries)} tries: "
                  + ", ".join(f"seed {x['seed']}: {x['target_dev_loss']:.4f}" for x in tries))


def family_mix(natural: dict[str, float], source: str | None, emphasis: float) -> dict[str, float]:
    """A family model's training mix: the pool's natural ratios, or ``source`` at ``emphasis`` of the tokens and
    every other domain at its natural share of the rest."""
    if source is None:
        return dict(natural)
    rest = 1.0 - natural[source]
    return {d: emphasis if d == source else (1.0 - emphasis) * r / rest for d, r in natural.items()}


def train_scorer(run: Runner, out: Path, data: list[str], p: dict[str, Any], seed: int) -> dict[str, Any]:
    """``curate train-scorer`` with the paper's settings (epoch 3, lr 0.1, bigrams, dim 100, 2M buckets
    at full scale); returns its card's held-out metrics."""
    run("curation.cli", "train-scorer", str(out), *data, "--bucket", str(p["bucket"]), "--valid-fraction", "0.2",
        "--seed", str(seed))
    card = json.loads((out / "card.json").read_text())
    return {"path": str(out), **{k: card["metrics"].get(k) for k in ("train_docs", "valid_docs", "valid_auc", "valid_accuracy")},
            "data": card.get("data")}


def _docs(run_dir: Path, columns: list[str]) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    import pyarrow as pa

    t = pa.concat_tables([pq.read_table(f, columns=columns) for f in sorted((run_dir / "shards").glob("*.parquet"))])
    return {c: t.column(c).to_numpy(zero_copy_only=False) for c in columns}


def label_stats(labels: Path) -> dict[str, Any]:
    d = _docs(labels, ["predictive_strength"])
    s = d["predictive_strength"].astype(float)
    s = s[~np.isnan(s)]
    return {"docs": int(len(s)), "s_one": int((s >= 1.0).sum()), "s_mean": float(s.mean()) if len(s) else None,
            "s_hist": np.histogram(s, bins=5, range=(0, 1))[0].tolist()}


def rank_auc(d: dict[str, np.ndarray], scorer: Path, part: tuple[int, int], positive_min: float = 1.0) -> float:
    """A scorer's AUC of S >= ``positive_min`` (its positives) against every other document of its held-out part
    (``d``: the labels run's id, text and predictive_strength), not only the lowest-S negatives it is measured
    on: whether it ranks the top of S above the middle (descriptive, no gate)."""
    import fasttext

    from curation.scoring.classifier import _auc, positive_probability
    from curation.scoring.data import in_part

    s = d["predictive_strength"].astype(float)
    m = in_part(d["id"].tolist(), part) & ~np.isnan(s)
    p = positive_probability(fasttext.load_model(str(scorer / "model.bin")), d["text"][m].tolist())
    return _auc((s[m] >= positive_min).astype(float), p)


def describe_selection(sel: dict[str, Any], pool_by_domain: dict[str, int]) -> dict[str, Any]:
    """Characters kept per domain, and junk retention: the known-bad control's share of the selection
    divided by its share of the pool (1 = kept like any document, 0 = all removed)."""
    by = {d: v["chars"] for d, v in json.loads((Path(sel["ratios_from"]) / "manifest.json").read_text())["domains"].items()}
    total, pool_total = sum(by.values()), sum(pool_by_domain.values())
    junk = sum(by.get(d, 0) for d in JUNK) / max(1, total)
    return {**sel, "chars": total, "by_domain": by,
            "junk_retention": st.junk_retention(junk, sum(pool_by_domain.get(d, 0) for d in JUNK) / pool_total)}


def cluster_table(scores: Path, scorer_names: list[str]) -> list[dict[str, Any]]:
    """Per embedding cluster: documents, characters, and the mean of every score column over its documents."""
    cols = ["cluster", "n_chars", "domain", "score_dclm", *[f"score_{n}" for n in scorer_names], "score_r0"]
    d = _docs(scores, cols)
    out = []
    for c in sorted(set(d["cluster"].tolist())):
        m = d["cluster"] == c
        rec: dict[str, Any] = {"cluster": c, "docs": int(m.sum()), "chars": int(d["n_chars"][m].sum()),
                               "junk_share": float(np.isin(d["domain"][m], JUNK).mean())}
        for col in cols[3:]:
            rec[col] = float(np.nanmean(d[col][m].astype(float)))
        out.append(rec)
    return out


def loss_matrix(res: dict[str, Any], arm: str, key: str = "target_loss") -> np.ndarray:
    """(selections, seeds) of an arm, over the seeds every run of every arm finished."""
    n = min(len(r["seeds"]) for recs in res["arms"].values() for r in recs)
    return np.array([[s[key] for s in r["seeds"][:n]] for r in res["arms"][arm]], dtype=float)


def analyse(res: dict[str, Any]) -> None:
    """Gates, contrasts against random, decisions and the mechanism rho, as pre-registered."""
    if not res.get("arms") or min(len(r["seeds"]) for recs in res["arms"].values() for r in recs) < 2:
        res["analysis"] = {"note": "fewer than two seeds finished in every arm: nothing to compare"}
        return
    rnd = loss_matrix(res, "random")
    aa = st.aa_contrast(rnd)
    contrasts = {arm: st.hierarchical_diff(loss_matrix(res, arm), rnd) for arm in res["arms"] if arm != "random"}
    general = {arm: st.hierarchical_diff(loss_matrix(res, arm, "general_loss"), rnd) for arm in res["arms"] if arm != "random"}
    mde = st.min_detectable_difference(contrasts["preselect"]["se"])
    # gate 4 asks for an effect the evaluation itself can see: the A/A contrast's detectable difference
    # (the preselect contrast's SE also grows with disagreement between scorers, which is not the evaluation's)
    mde_aa = st.min_detectable_difference(aa["se"])
    min_side = res["params"]["bimodal_min_side"]
    within = [st.seed_spread(row, min_gap=GATE_SEED_SD, min_side=min_side,
                             null_quantile=res["params"].get("bimodal_null_quantile"))
              for arm in ("random", "preselect") for row in loss_matrix(res, arm)]
    seed_sd = float(np.sqrt(np.mean([w["sd"] ** 2 for w in within])))
    aucs = [s["valid_auc"] for s in res["scorers"]["preselect"]]
    tau = res.get("family_tau")
    gates = {
        f"scorer AUC >= {GATE_AUC} (each PreSelect scorer)": all(a is not None and a >= GATE_AUC for a in aucs),
        f"learner seed SD <= {GATE_SEED_SD}, no bimodal selection": seed_sd <= GATE_SEED_SD and not any(w["bimodal"] for w in within),
        "A/A contrast (random vs random) covers 0": bool(aa["covers_zero"]),
        f"Moore-Lewis beats random by > {GATE_ML_MDE:g}x the detectable difference":
            contrasts["moore_lewis"]["diff"] < -GATE_ML_MDE * mde_aa,
        f"family order reproduces on a second seed (Kendall tau >= {GATE_TAU})": tau is not None and tau >= GATE_TAU,
    }
    decisions = {arm: st.decide(c, aa, gates, MARGIN) for arm, c in contrasts.items()}
    # the second primary contrast: does PreSelect choose better documents than random ones at its own domain
    # proportions, i.e. anything beyond which sources it favours?
    beyond = st.hierarchical_diff(loss_matrix(res, "preselect"), loss_matrix(res, "domain_matched"))
    decisions["preselect vs domain_matched"] = st.decide(beyond, aa, gates, MARGIN)
    mech = res.get("mechanism", {})
    rho = {}
    clusters = [c for c in mech.get("clusters", []) if "teaching" in c]
    if len(clusters) >= 4:
        teach = [c["teaching"] for c in clusters]
        for col in [k for k in clusters[0] if k.startswith("score_")]:
            rho[col] = st.spearman_ci(teach, [c[col] for c in clusters])
        rho["junk_share"] = st.spearman_ci(teach, [c["junk_share"] for c in clusters])
    res["analysis"] = {"aa": aa, "contrasts": contrasts, "general_contrasts": general, "beyond_domain": beyond,
                       "mde": mde, "mde_aa": mde_aa, "seed_sd": seed_sd,
                       "seed_spread": within, "gates": gates, "decisions": decisions, "mechanism_rho": rho,
                       "seeds_used": int(rnd.shape[1])}


def _ci(c: dict[str, Any], key: str = "ci95") -> str:
    return f"{c['diff']:+.4f} [{c[key][0]:+.4f}, {c[key][1]:+.4f}]"


def report(res: dict[str, Any]) -> str:
    a = res.get("analysis", {})
    state = "finished" if res["finished"] else f"stopped: {res['stopped']}" if "stopped" in res else "stopped at the deadline"
    lines = [f"# PreSelect effect ({state}; {res['wall_s'] / 60:.1f} min; device {res['device']})", ""]
    if "base" in res:
        lines += ["Base tries (target dev loss): " + ", ".join(f"seed {x['seed']} {x['target_dev_loss']:.4f}"
                                                          for x in res["base"]["tries"])
                  + (f"; kept seed {res['base']['seed']}, target test loss {res['base']['target_loss']:.4f}."
                     if "seed" in res["base"] else "; none kept."), ""]
    if "sources" in res:
        t = res["sources"]["target"]
        lines += [f"Target ({t['source']}): dev {t['dev_docs']} docs / {t['dev_chars']:,} chars, test {t['test_docs']} docs / "
                  f"{t['test_chars']:,} chars; largest name family {t['largest_family']} at {100 * t['largest_family_share']:.1f}%.",
                  f"Pool after filters and decontamination: {res['pool']['docs']:,} docs, "
                  f"{sum(res['pool']['by_domain'].values()):,} chars; by domain: "
                  + ", ".join(f"{d} {c:,}" for d, c in sorted(res["pool"]["by_domain"].items())), ""]
    if "family" in res:
        lines += ["Family (target dev loss, nats/byte): "
                  + "; ".join(f"seed {s}: " + ", ".join(f"{m['mix']} {m['target_dev_loss']:.4f}"
                                                         for m in res["family"] if m["seed"] == s)
                              for s in sorted({m["seed"] for m in res["family"]}))
                  + ". Mean target score (minus dev loss) of the order seeds: "
                  + ", ".join(f"{v:.4f}" for v in res["family_scores"]["order"])
                  + "; of the check seeds: " + ", ".join(f"{v:.4f}" for v in res["family_scores"]["check"])
                  + f". Kendall tau between the two: {res['family_tau']}", ""]
    if "labels" in res:
        lines += [f"PreSelect labels: {res['labels']}", ""]
    if "scorers" in res:
        lines += ["Scorers (held-out AUC): " + ", ".join(
            f"ps{k} {s['valid_auc']:.3f} ({s['train_docs']} train, {s['valid_docs']} held-out docs; S = 1 against "
            f"every S < 1 of the held-out part {s.get('rank_auc', float('nan')):.3f})"
            for k, s in enumerate(res["scorers"]["preselect"]))
                  + f"; dclm {res['scorers']['dclm']['valid_auc']:.3f}.", ""]
    if "note" in a or not a:
        return "\n".join(lines + [a.get("note", "no analysis"), ""])
    lines += [f"Seeds used: {a['seeds_used']}; pooled within-selection seed SD {a['seed_sd']:.4f}; "
              f"smallest detectable difference (80% power, 5% two-sided): preselect - random {a['mde']:.4f}, "
              f"A/A {a['mde_aa']:.4f} nats/byte (gate 4 uses the A/A one); "
              f"A/A (random vs random) {_ci(a['aa'])}.", "", "| gate | holds |", "|---|---|"]
    lines += [f"| {g} | {'yes' if ok else 'NO'} |" for g, ok in a["gates"].items()]
    lines += ["", "| arm | selections | target loss (mean) | vs random: diff [95% CI] | 90% CI | general vs random [95% CI] "
              "| junk retention | decision |", "|---|---|---|---|---|---|---|---|"]
    for arm, recs in res["arms"].items():
        m = loss_matrix(res, arm)
        junk = np.mean([s["junk_retention"] for s in res["selections"][arm]])
        if arm == "random":
            lines.append(f"| random | {len(recs)} | {m.mean():.4f} | (reference) | | | {junk:.2f} | |")
            continue
        c, g = a["contrasts"][arm], a["general_contrasts"][arm]
        lines.append(f"| {arm} | {len(recs)} | {m.mean():.4f} | {_ci(c)} | [{c['ci90'][0]:+.4f}, {c['ci90'][1]:+.4f}] | "
                     f"{_ci(g)} | {junk:.2f} | {a['decisions'][arm]} |")
    b = a["beyond_domain"]
    lines += ["", f"Preselect vs domain_matched (beyond domain choice): {_ci(b)}, 90% CI [{b['ci90'][0]:+.4f}, "
              f"{b['ci90'][1]:+.4f}]; decision: {a['decisions']['preselect vs domain_matched']}"]
    if a["mechanism_rho"]:
        lines += ["", f"Mechanism: {len(res['mechanism']['clusters'])} clusters; Spearman rho between a cluster's teaching "
                  "value (target loss removed by continuing the base on it) and each score's cluster mean:", "",
                  "| score | rho [95% CI] |", "|---|---|"]
        lines += [f"| {k} | {v['rho']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}] |" for k, v in a["mechanism_rho"].items()]
    return "\n".join(lines) + "\n"


def plots(res: dict[str, Any], out: Path) -> None:
    a = res.get("analysis", {})
    if "contrasts" not in a:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(a["contrasts"])
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(arms) + 1.5))
    for i, arm in enumerate(arms):
        c = a["contrasts"][arm]
        ax.errorbar(c["diff"], i, xerr=[[c["diff"] - c["ci95"][0]], [c["ci95"][1] - c["diff"]]], fmt="o", capsize=4)
    half = (a["aa"]["ci95"][1] - a["aa"]["ci95"][0]) / 2
    ax.axvspan(-half, half, color="grey", alpha=0.2, label="A/A 95% half-width")
    ax.axvline(0, color="k", lw=0.8)
    ax.axvline(-a["mde"], color="r", ls="--", lw=0.8, label="detectable difference")
    ax.set(yticks=range(len(arms)), yticklabels=arms, xlabel="target loss minus random (nats/byte), 95% CI")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "contrasts.png", dpi=100)
    plt.close(fig)
    clusters = [c for c in res.get("mechanism", {}).get("clusters", []) if "teaching" in c]
    if clusters:
        cols = ["score_ps0", "score_ps1", "score_dclm", "junk_share"]
        fig, axs = plt.subplots(1, len(cols), figsize=(4 * len(cols), 3.5))
        for ax, col in zip(axs, cols):
            # ranks: fastText probabilities of a lightly trained scorer differ in the 5th decimal
            x = np.argsort(np.argsort([c[col] for c in clusters]))
            ax.scatter(x, [c["teaching"] for c in clusters], s=12)
            r = a["mechanism_rho"].get(col)
            ax.set(xlabel=f"cluster rank by mean {col}", ylabel="teaching value (nats/byte)",
                   title=f"{col}: rho {r['rho']:+.2f}" if r else col)
        fig.tight_layout()
        fig.savefig(out / "mechanism.png", dpi=100)
        plt.close(fig)


if __name__ == "__main__":
    main()
