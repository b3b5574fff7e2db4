"""Single components on the bundled sample, one core: the word tokenizer and MinHash signatures.

    .venv/bin/python benchmarks/components.py

  tokenizer   FastEnglishTokenizer.word_tokenize (letters-only chunks skip the regex) vs one regex pass
              over the whole text (identical tokens, checked here)
  minhash     our batch numpy signatures (128 perms, 5-word shingles, shingling included) vs rensa's
              RMinHash and datasketch's MinHash.update_batch fed Python shingle strings per document
"""

from __future__ import annotations

import gzip
import json
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    import pyarrow as pa

    from curation.stages.dedup import minhash as mh
    from curation.stages.filters.word_tokenizer import FastEnglishTokenizer

    texts = []
    for f in sorted((REPO / "curation" / "data" / "sample").glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            texts += [json.loads(line)["text"] for line in fh]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"{len(texts)} docs, {mb:.2f} MB")
    tok = FastEnglishTokenizer()
    t0 = time.perf_counter()
    ref = [tok.word_tokenize_regex(t) for t in texts]
    regex_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = [tok.word_tokenize(t) for t in texts]
    fast_s = time.perf_counter() - t0
    print(f"tokenizer: one regex pass {regex_s:.3f} s, chunked fast path {fast_s:.3f} s ({regex_s / fast_s:.2f}x), "
          f"identical tokens: {got == ref}")

    arr = pa.array(texts, pa.large_string())
    t0 = time.perf_counter()
    mh.signatures(mh.shingle_hashes(arr, 5), 128, seed=1)
    ours = time.perf_counter() - t0
    rows = [f"ours (numpy, batch)   {ours:.3f} s  {mb / ours:6.2f} MB/s"]
    try:
        import rensa

        t0 = time.perf_counter()
        for s in texts:
            w = [x for x in re.split(r"\W+", s.lower()) if x]
            m = rensa.RMinHash(num_perm=128, seed=1)
            m.update([" ".join(w[i:i + 5]) for i in range(max(1, len(w) - 4))])
            m.digest()
        secs = time.perf_counter() - t0
        rows.append(f"rensa RMinHash        {secs:.3f} s  {mb / secs:6.2f} MB/s")
    except ImportError:
        rows.append("rensa not installed")
    import datasketch

    t0 = time.perf_counter()
    for s in texts:
        w = [x for x in re.split(r"\W+", s.lower()) if x]
        m = datasketch.MinHash(num_perm=128, seed=1)
        m.update_batch([" ".join(w[i:i + 5]).encode() for i in range(max(1, len(w) - 4))])
    secs = time.perf_counter() - t0
    rows.append(f"datasketch update_batch {secs:.3f} s  {mb / secs:6.2f} MB/s")
    print("minhash signatures:\n  " + "\n  ".join(rows))


if __name__ == "__main__":
    main()
