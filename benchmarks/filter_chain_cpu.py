"""CPU time of the heuristic-filter chain in process, for one or more checkouts of this project, alternating.

    git worktree add /tmp/before COMMIT
    .venv/bin/python benchmarks/filter_chain_cpu.py /tmp/before . --rounds 2 --repeat 2
    .venv/bin/python benchmarks/filter_chain_cpu.py . --metrics both --rounds 3 --repeat 3   # cost of metrics: true

Each checkout runs in its own Python process (so each imports its own ``curation``) on the bundled sample corpus
replicated twice: Gopher repetition -> Gopher quality -> C4 -> FineWeb through ``run_chain``, best process-CPU time
of ``--repeat`` passes. Rounds alternate the checkouts (and, with ``--metrics both``, the filters' ``metrics``
option off and on), so a change of machine load hits all alike. Prints MB of text per CPU-second and the kept
count (which must agree).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

CHILD = r'''
import glob, gzip, json, sys, time
repo, repeat, on = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "on"
sys.path.insert(0, repo)
import pyarrow as pa
import curation
assert curation.__file__.startswith(repo), curation.__file__
from curation.stages.base import run_chain
from curation.stages.filters.c4_quality import C4Quality, C4QualityConfig
from curation.stages.filters.fineweb_quality import FineWebQuality, FineWebQualityConfig
from curation.stages.filters.gopher_quality import GopherQuality, GopherQualityConfig
from curation.stages.filters.gopher_repetition import GopherRepetition, GopherRepetitionConfig
rows = [json.loads(line) for f in sorted(glob.glob(repo + "/curation/data/sample/*.jsonl.gz"))
        for line in gzip.open(f, "rt")] * 2
n = len(rows)
batch = pa.table({"id": [str(i) for i in range(n)], "text": [r["text"] for r in rows], "url": [None] * n,
                  "domain": [r["domain"] for r in rows], "source": ["s"] * n,
                  "n_chars": [len(r["text"]) for r in rows]})
kw = {"metrics": True} if on else {}  # (a checkout from before the option takes no such key)
stages = [GopherRepetition(GopherRepetitionConfig(**kw)), GopherQuality(GopherQualityConfig(**kw)),
          C4Quality(C4QualityConfig(**kw)), FineWebQuality(FineWebQualityConfig(**kw))]
for s in stages:
    s.setup()
run_chain(stages, batch.slice(0, 50))  # warm caches and imports
best = float("inf")
for _ in range(repeat):
    t0 = time.process_time()
    kept, _ = run_chain(stages, batch)
    best = min(best, time.process_time() - t0)
mb = sum(len(r["text"].encode()) for r in rows) / 1e6
print(json.dumps({"metrics": on, "docs": n, "mb": round(mb, 2), "kept": kept.num_rows, "cpu_s": round(best, 3),
                  "mb_per_cpu_s": round(mb / best, 3)}))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkouts", nargs="+")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--metrics", choices=["off", "on", "both"], default="off",
                    help="the filters' metrics option (both: each checkout off, then on, every round)")
    args = ap.parse_args()
    modes = ["off", "on"] if args.metrics == "both" else [args.metrics]
    for r in range(args.rounds):
        for c in args.checkouts:
            for mode in modes:
                repo = str(Path(c).resolve())
                out = subprocess.run([sys.executable, "-c", CHILD, repo, str(args.repeat), mode], capture_output=True,
                                     text=True, check=True).stdout.strip().splitlines()[-1]
                print(f"round {r + 1} {repo}: {out}", flush=True)


if __name__ == "__main__":
    main()
