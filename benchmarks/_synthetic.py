"""A seeded synthetic web-like corpus with known duplicates, for the full-pipeline scale benchmark.

Documents (lengths log-normal around 1 kB, mean about 2 kB, clipped to 100 B - 1 MB):

- ``prose`` (about 60%): English prose sentences of the bundled sample corpus (no code), drawn at random;
- ``foreign`` (about 8%): German, French or Spanish sentences from small built-in word lists;
- ``boilerplate`` (about 6%): navigation/menu lines repeated many times (the repetition filter's target);
- ``lowq`` (about 6%): word salad with symbols and no function words (the quality filters' target);
- ``exact`` (about 10%): a byte-identical copy of an earlier document;
- ``near`` (about 10%): a copy of an earlier document with 1-3% of its words replaced (Jaccard ~0.8-0.95).

The ground truth (``truth.jsonl``: id, kind, and ``of``, the original a copy was made from) lets
the benchmark score duplicate removal. Everything is a function of ``(n, seed)``.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

_FOREIGN = {
    "de": ("der die das und ist nicht ein eine zu mit auf für von dem den sich auch es wird werden wir ihr "
           "sie haben hat über nach bei wie noch nur schon wenn aber oder weil dass heute morgen immer Stadt "
           "Zeit Jahr Menschen Arbeit Haus Wasser Leben Welt Kinder Schule Regierung Wirtschaft"),
    "fr": ("le la les et est pas un une de du des dans pour avec sur que qui il elle nous vous ils sont avons "
           "été fait plus tout comme mais ou donc car aujourd'hui toujours ville temps année gens travail "
           "maison eau vie monde enfants école gouvernement économie"),
    "es": ("el la los las y es no un una de del en para con por que quien él ella nosotros ellos son hemos "
           "sido hecho más todo como pero o porque hoy siempre ciudad tiempo año gente trabajo casa agua "
           "vida mundo niños escuela gobierno economía"),
}
_MENU = ["Home", "About", "Contact", "Login", "Sign up", "Privacy", "Terms", "Cart", "Help", "Blog", "News",
         "Careers", "Search", "Menu", "Subscribe", "Share", "Follow us", "Cookies"]


# Web prose, not code: a capitalised sentence of words, digits and light punctuation. Docstring sentences
# full of ``x=1`` or ``{}`` would make the quality filters drop nearly every "prose" page, which no web crawl does.
_PROSE = re.compile(r"[A-Z][A-Za-z0-9 ,;:'\"()\-]*[a-z)][.!?]")
_FUNCTION_WORD = re.compile(r"\b(the|of|and|to|that|with|be|have|is|in)\b")


def english_sentences() -> list[str]:
    out: set[str] = set()
    for f in sorted((REPO / "curation" / "data" / "sample").glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                text = json.loads(line)["text"]
                out.update(s.strip() for s in re.split(r"(?<=[.!?])\s+", text)
                           if 30 < len(s) < 300 and s.count(" ") >= 5 and _PROSE.fullmatch(s.strip())
                           and _FUNCTION_WORD.search(s))
    return sorted(out)


class Generator:
    """Draws documents; ``docs`` holds every text made so far (the pool copies are drawn from)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.sentences = english_sentences()
        self.vocab = sorted({w for s in self.sentences[:20000] for w in s.split() if w.isalpha()})
        self.foreign = {k: v.split() for k, v in _FOREIGN.items()}

    def length(self) -> int:
        return int(np.clip(self.rng.lognormal(np.log(1000), 1.2), 100, 1_000_000))

    def prose(self, n: int) -> str:
        parts, size = [], 0
        while size < n:
            s = self.sentences[int(self.rng.integers(len(self.sentences)))]
            parts.append(s)
            size += len(s) + 1
        # A paragraph break every few sentences, as web text has.
        return "\n\n".join(" ".join(parts[i:i + 5]) for i in range(0, len(parts), 5))

    def foreign_text(self, n: int) -> str:
        words = self.foreign[["de", "fr", "es"][int(self.rng.integers(3))]]
        sents, size = [], 0
        while size < n:
            k = int(self.rng.integers(6, 16))
            s = " ".join(words[int(i)] for i in self.rng.integers(0, len(words), k)).capitalize() + "."
            sents.append(s)
            size += len(s) + 1
        return " ".join(sents)

    def boilerplate(self, n: int) -> str:
        site = " ".join(self.vocab[int(i)] for i in self.rng.integers(0, len(self.vocab), 2))
        menu = [_MENU[int(i)] for i in self.rng.choice(len(_MENU), 6, replace=False)]
        line = f"{site} | " + " | ".join(menu)
        lines, size = [], 0
        while size < n:
            lines.append(line if self.rng.random() < 0.8 else f"© {site} All rights reserved.")
            size += len(line) + 1
        return "\n".join(lines)

    def lowq(self, n: int) -> str:
        out, size = [], 0
        while size < n:
            w = self.vocab[int(self.rng.integers(len(self.vocab)))]
            tok = w if self.rng.random() < 0.6 else "#" * int(self.rng.integers(1, 6)) + w.upper() + "$$"
            out.append(tok)
            size += len(tok) + 1
            if self.rng.random() < 0.2:
                out.append("\n")
        return " ".join(out)

    def near(self, text: str) -> str:
        words = text.split(" ")
        k = max(1, int(len(words) * self.rng.uniform(0.01, 0.03)))
        for p in self.rng.choice(len(words), size=min(k, len(words)), replace=False):
            words[int(p)] = self.vocab[int(self.rng.integers(len(self.vocab)))]
        return " ".join(words)


def make_corpus(n: int, folder: Path, seed: int = 0, docs_per_file: int = 5000) -> dict[str, float]:
    """Write ``n`` documents as ``part-XXXXX.jsonl`` files plus ``truth.jsonl``; returns sizes."""
    g = Generator(seed)
    folder.mkdir(parents=True, exist_ok=True)
    texts: list[str] = []  # originals only (copies are drawn from these)
    origin: list[str] = []
    n_bytes = 0
    fh = None
    with open(folder / "truth.jsonl", "w", encoding="utf-8") as truth:
        for i in range(n):
            if i % docs_per_file == 0:
                if fh is not None:
                    fh.close()
                fh = open(folder / f"part-{i // docs_per_file:05d}.jsonl", "w", encoding="utf-8")
            r = g.rng.random()
            of = None
            if texts and r < 0.10:
                kind, j = "exact", int(g.rng.integers(len(texts)))
                text, of = texts[j], origin[j]
            elif texts and r < 0.20:
                kind, j = "near", int(g.rng.integers(len(texts)))
                text, of = g.near(texts[j]), origin[j]
            else:
                kind = ["prose", "foreign", "boilerplate", "lowq"][int(np.searchsorted([0.75, 0.85, 0.925], g.rng.random(), side="right"))]
                text = getattr(g, "foreign_text" if kind == "foreign" else kind)(g.length())
                texts.append(text)
                origin.append(f"d{i}")
            domain = ["news", "forum", "blog", "docs"][i % 4]
            rec = {"id": f"d{i}", "text": text, "domain": domain, "url": f"https://example.{domain}/{i}"}
            line = json.dumps(rec, ensure_ascii=False)
            fh.write(line + "\n")  # type: ignore[union-attr]
            n_bytes += len(line.encode()) + 1
            truth.write(json.dumps({"id": f"d{i}", "kind": kind, "of": of}) + "\n")
    if fh is not None:
        fh.close()
    return {"docs": n, "bytes": n_bytes, "files": (n + docs_per_file - 1) // docs_per_file}


def read_truth(folder: Path) -> dict[str, tuple[str, str | None]]:
    out = {}
    with open(folder / "truth.jsonl", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            out[r["id"]] = (r["kind"], r["of"])
    return out
