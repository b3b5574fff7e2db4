"""Skill-ordered shards: plan a Skill-It schedule offline and write a run's documents in curriculum order.

    curate skill-order runs/quickstart runs/ordered --graph graph.json --losses losses.json \
        --rounds 4 --chars-per-round 200000

Round ``t`` uses the Skill-It mixture p_t = softmax(eta * A @ sum of the last ``window`` loss vectors),
computed by ``curation.skillit_rule`` exactly as the online sampler (``training.skillit``) does it: a
0/1 graph's off-diagonal ones count 0.5 there too, so round 0 equals the sampler's first update for
the same initial losses. Without a model in the loop, the losses of later rounds are *predicted* with the
linearised model the rule is derived from, L_{t+1} = L_t * (1 - alpha * A^T p_t) (clipped at 0), so
the schedule shifts towards skills whose prerequisites have been covered. Each round's documents
(drawn per skill in a seeded order, never reused) go to one shard, ``shards/round-RRR.parquet``, and
the manifest (``curation.io.manifest.OrderedRunManifest``, ``kind: skill-ordered``) lists the rounds in
order with their planned mixture and the characters actually written per skill, so any loader that reads
the shards in order follows the schedule: the training loader does (``train run`` with the output as its
one run and no ratios). The source may be a ``curate run`` run or skill-ordered output itself.

Either run may be a local folder or an object-store URL (``s3://bucket/ordered``). Each shard is published
whole, as the executors publish theirs (``curation.io.writers``), and the manifest last, so a reader never
sees a half-written shard and an interrupted run leaves no manifest.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from curation.io.atomic import write_json
from curation.io.layout import Layout
from curation.io.manifest import (
    OrderedDomainCount,
    OrderedRound,
    OrderedRunManifest,
    RunManifest,
    ShardEntry,
    SkillSchedule,
    read_any_manifest,
    shard_paths,
)
from curation.io.storage import is_remote, read_parquet, run_path
from curation.io.writers import RollingParquetWriter
from curation.skillit_rule import SkillGraph, mixture_step, recent


def plan_mixtures(a: np.ndarray, losses: np.ndarray, rounds: int, eta: float, window: int,
                  alpha: float) -> list[np.ndarray]:
    """Per-round mixtures over training skills, with predicted losses between rounds.

    ``a`` is the weighted matrix (``SkillGraph.A``): a raw 0/1 matrix here would plan with full-weight
    off-diagonal edges, unlike the online sampler.
    """
    history = [losses.astype(np.float64)]
    out = []
    for _ in range(rounds):
        p = mixture_step(a, recent(history, window), eta)
        out.append(p)
        history.append(np.clip(history[-1] * (1 - alpha * a.T @ p), 0.0, None))
    return out


def skill_order(run: str | Path, out: str | Path, graph: dict[str, Any], losses: dict[str, float], rounds: int,
                chars_per_round: int, eta: float = 0.5, window: int = 3, alpha: float = 0.1, column: str = "skill",
                seed: int = 0) -> OrderedRunManifest:
    layout = Layout(run_path(out))  # a local folder or an object-store URL (s3://...)
    if layout.manifest.exists():
        raise FileExistsError(f"{out} already holds a manifest; choose a new directory")
    # The plan first: a bad graph, loss file or window fails before any shard is read.
    g = SkillGraph.from_dict(graph, source="graph")
    initial = g.loss_vector(losses, source="losses")
    mixtures = plan_mixtures(g.A, initial, rounds, eta, window, alpha)
    source = read_any_manifest(run)
    if not source.shards:
        raise ValueError(f"{run}: the run kept 0 documents (every document was dropped; see its decisions): "
                         "nothing to order")
    table = pa.concat_tables([read_parquet(p) for p in shard_paths(run, source)])
    if column not in table.column_names:
        raise ValueError(f"{run}: no column {column!r} (tag skills first with skill_tag_v1, or use column: domain)")
    skills = g.train_skills
    rng = np.random.default_rng(seed)
    col = table.column(column).to_numpy(zero_copy_only=False)
    chars = table.column("n_chars").to_numpy()
    pools = {s: list(rng.permutation(np.flatnonzero(col == s))) for s in skills}
    rounds_out: list[OrderedRound] = []
    shards: list[ShardEntry] = []
    domains: dict[str, OrderedDomainCount] = {}
    for r, p in enumerate(mixtures):
        take: list[int] = []
        written: dict[str, int] = {}
        for s, share in zip(skills, p):
            budget, got = share * chars_per_round, 0
            # Whole documents: take the next one while that ends closer to the budget than stopping.
            while pools[s] and (got + int(chars[pools[s][-1]])) - budget < budget - got:
                i = int(pools[s].pop())
                take.append(i)
                got += int(chars[i])
            written[s] = got
        if not take:
            break  # every pool is empty
        order = rng.permutation(len(take))
        rows = table.take(pa.array(np.asarray(take)[order], pa.int64()))
        # Published whole (rename, or one upload to an object store) with size and digest taken
        # from the local temp file, as the executors write their shards.
        name = f"round-{r:03d}.parquet"
        writer = RollingParquetWriter(layout.shards_dir, "", rows.schema, single_name=name)
        try:
            writer.write(rows)
            (written_file,) = writer.close()
        except BaseException:
            writer.abort()
            raise
        rel = f"{layout.shards_dir.name}/{name}"
        shards.append(ShardEntry(rel, written_file["rows"], written_file["bytes"], written_file["sha256"]))
        _count_domains(domains, rows)
        total = sum(written.values()) or 1
        rounds_out.append(OrderedRound(r, rel, dict(zip(skills, map(float, p))), written,
                                       {s: c / total for s, c in written.items()}))
    result = OrderedRunManifest(
        name=f"{source.name or 'run'}-skill-ordered", created_unix=round(time.time(), 3), source_run=_source(run),
        # Skill-ordered output has no fingerprint of its own to name as the source's.
        source_fingerprint=source.fingerprint if isinstance(source, RunManifest) else None,
        schedule=SkillSchedule(eta=eta, window=window, alpha=alpha, column=column, chars_per_round=chars_per_round,
                               graph=graph, weighted_a=g.A.tolist(),
                               initial_losses=dict(zip(g.eval_skills, map(float, initial)))),
        rounds=rounds_out, shards=shards, domains=domains)
    write_json(layout.manifest, result.to_json())  # written last: the commit point
    return result


def _source(run: str | Path) -> str:
    """The source run as recorded in the manifest: an absolute local path, or the URL."""
    root = run_path(run)
    return str(root) if is_remote(root) else str(root.resolve())


def _count_domains(dom: dict[str, OrderedDomainCount], rows: pa.Table) -> None:
    """Add one shard's documents and characters per domain (from the rows written, not read back)."""
    for d, n in zip(rows.column("domain").to_pylist(), rows.column("n_chars").to_pylist()):
        e = dom.setdefault(d, OrderedDomainCount())
        e.docs += 1
        e.chars += int(n)
