"""MixtureLoader: packed fixed-length sequences from curation shards, domains sampled by token ratios, or a
skill-ordered run's documents in curriculum order.

How it is deterministic and resumable:

* **Index.** Each run's ``manifest.json`` lists its shards; the loader reads only the ``domain``
  column of each shard to build, per domain, the ordered list of ``(shard, row)`` documents.
  Manifests are untrusted (curation's ``RunManifest`` vets them, ``training/data/manifest.py`` locates their
  shards): shard paths must stay inside the run, and every shard's size must match before it is read. With
  ``verify_hashes`` (the default) every read of a shard (the index's domain column, and each later load of its
  text after the small cache dropped it) reads the whole file once, checks its sha256 against the manifest and
  parses those same bytes: a shard swapped for other bytes of the same size at any point of a training
  run is refused, naming the file. (Verifying once at startup would be cheaper but leaves the
  rest of the run open: shards are re-read from storage whenever they leave the cache.)
* **Split without overlap.** Per domain and epoch the documents are permuted with a seed fixed by
  ``(seed, domain, epoch)``; document ``i`` of that order belongs to stream
  ``i % (world_size * num_workers)``. Stream ``rank * num_workers + w`` is worker ``w`` of ``rank``.
  So no document (and so no sequence) is read by two ranks or workers in an epoch.
* **Packing.** A stream tokenises its documents in order, appends EOS after each, and cuts the
  token run into ``seq_len + 1`` windows (inputs and shifted targets); a document may span two
  sequences, never two streams. A domain whose documents run out starts its next epoch.
* **Mixing.** Sequence ``s`` of a rank comes from the domain drawn by an RNG seeded with
  ``(seed, rank, s)``, with probabilities = the token ratios (all sequences have the same number
  of tokens, so sequence shares are token shares); it is taken from worker ``s % num_workers``.
* **Curriculum.** When ``runs`` is one skill-ordered run (``curate skill-order`` output: the manifest's ``kind``
  says so), there is nothing to mix: its documents are one group in the manifest's order (round 0's shard row by
  row, then round 1's, ...), never permuted, split among the streams and packed as above, so every stream reads
  the rounds in order. Ratios do not apply (given ones are refused, as are other runs beside it and
  ``set_ratios``); after the last round a stream starts the curriculum again (its next epoch). A sequence's label
  (what ``next_batch`` returns per row, ``tokens_by_domain``, ``realised_shares``) is the round of its first token,
  ``round-000``, ...: the shard of each buffered token travels with the buffer, and into ``state_dict``.
* **State.** ``state_dict()`` holds the sequence counter and, per stream and domain, the epoch,
  the position in the permutation and the leftover tokens: loading it continues sample for
  sample. It also records the manifests' fingerprints, ratios, world size, workers, seq_len and
  tokenizer, and ``load_state_dict`` refuses any change with a message naming it. The state carries
  ``schema_version`` (``STATE``): one of another version is refused (``check_schema``), never guessed at.
* **Metadata conditioning** (``meco``, ``training/data/meco.py``). While ``conditioning`` is on, a
  document's metadata prefix is packed before its tokens and a parallel mask marks the prefix
  tokens; their targets become ``IGNORE_INDEX``. The mask travels with the buffer (a prefix cut by
  a sequence boundary stays masked on both sides) and into ``state_dict`` as ``[start, end)``
  runs. Turning conditioning off drops the buffered prefix tokens, so no prefix is seen after
  the switch; the flag is part of the state.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from curation.errors import ConfigError
from curation.io.manifest import ManifestError, RecordKind, check_schema
from curation.io.storage import read_parquet

from training.data.manifest import RunShard, check_size, read_verified, run_shards
from training.data.meco import IGNORE_INDEX, MecoConfig, field_value, mask_of, runs_of
from training.data.tokenizer import Tokenizer, make_tokenizer


#: The loader's ``state_dict`` (in a checkpoint's ``loaders``).
STATE = RecordKind("loader state", 1, "restart training from a checkpoint written by this version, or from scratch "
                                      "(`init_from` keeps the model's weights)")


@dataclass(kw_only=True)
class LoaderConfig:
    """``runs``: curation run directories (their manifests). ``ratios``: domain -> weight (token
    share, normalised; domains absent from the runs are an error); none for one skill-ordered run, which is read
    as a curriculum (see the module doc). ``group_by``: the column naming
    a document's domain (``domain``, or a skill column written by a curation stage).
    ``ratios_file``: a JSON/YAML ``{ratios: {...}}`` whose ratios replace ``ratios``; it is read by
    ``resolved()`` (``training.train.load_config`` and ``MixtureLoader`` call it), never on construction."""

    runs: list[str]
    ratios: dict[str, float] = field(default_factory=dict)
    ratios_file: str | None = None  # JSON/YAML {ratios: {...}} (e.g. from `train cmr predict --mixture`)
    seq_len: int = 256
    batch_size: int = 8
    tokenizer: str = "bytes"
    token_column: str | None = None  # pre-tokenised list<int> column written by a curation stage
    group_by: str = "domain"
    seed: int = 0
    verify_hashes: bool = True  # sha256 of the bytes of every shard read, against its manifest (see the module doc)
    meco: MecoConfig | None = None  # metadata prefix (masked in the loss) until the cooldown

    def __post_init__(self) -> None:
        if isinstance(self.meco, dict):  # LoaderConfig(**asdict(other)) hands the nested config as a dict
            self.meco = MecoConfig(**self.meco)
        # A file's ratios are checked when resolved() reads them; no ratios is for a curriculum, and the loader,
        # which reads the runs' manifests, refuses it for a mixture.
        if self.ratios and not self.ratios_file:
            check_ratios(self.ratios)

    def resolved(self) -> LoaderConfig:
        """This config with ``ratios`` read from ``ratios_file`` (itself when there is none).

        ``ratios_file`` stays set, so the logged config says where the ratios came from.

        Raises:
            ValueError: the file is missing, unparsable, has no ``ratios`` mapping or bad weights.
        """
        if not self.ratios_file:
            return self
        return replace(self, ratios=read_ratios_file(self.ratios_file))


def check_ratios(ratios: dict[str, float]) -> None:
    """Refuse an empty mixture, a negative weight or an all-zero one."""
    if not ratios or any(v < 0 for v in ratios.values()) or sum(ratios.values()) <= 0:
            raise ValueError(f"ratios must be non-negative with a positive sum, got {ratios}")


def read_ratios_file(path: str) -> dict[str, float]:
    """The ``ratios`` mapping (domain -> weight) of a JSON/YAML mixture file, checked."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"ratios_file {path}: cannot read it: {exc}") from exc
    ratios = data.get("ratios") if isinstance(data, dict) else None
    if not isinstance(ratios, dict):
        raise ValueError(f"ratios_file {path}: expected a mapping with a 'ratios' mapping of domain -> weight")
    try:
        out = {str(k): float(v) for k, v in ratios.items()}
    except (TypeError, ValueError) as exc:
        raise ValueError(f"ratios_file {path}: ratios: weights must be numbers ({exc})") from exc
    try:
        check_ratios(out)
    except ValueError as exc:
        raise ValueError(f"ratios_file {path}: {exc}") from None
    return out


@dataclass
class _DomainCursor:
    epoch: int = 0
    pos: int = 0  # next index into this stream's share of the epoch's permutation
    buffer: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)  # with meco: 1 where buffer holds a prefix token
    origin: list[int] = field(default_factory=list)  # in a curriculum: the shard of each buffered token


def _columns_of(path: str) -> list[str] | str:
    """A shard's column names for an error message ("?" when they cannot be read either)."""
    try:
        import pyarrow.parquet as pq

        from curation.io.regular import open_regular

        if "://" in path:
            return "?"
        with open_regular(path, "rb") as fh:
            return pq.read_schema(fh).names
    except (OSError, ValueError):
        return "?"


class _Shards:
    """Reads documents by (shard, row) with a small per-shard cache of the text column (and the
    metadata column when ``meta_column`` is set): ``get`` gives ``(text or tokens, metadata)``."""

    def __init__(self, shards: list[RunShard], text_column: str, meta_column: str | None = None,
                 verify_hashes: bool = True) -> None:
        self.shards = shards
        self.verify_hashes = verify_hashes
        self.columns = [text_column] + ([meta_column] if meta_column else [])
        self._cache: dict[int, list[tuple[Any, Any]]] = {}

    def get(self, shard: int, row: int) -> tuple[Any, Any]:
        if shard not in self._cache:
            if len(self._cache) >= 8:
                self._cache.pop(next(iter(self._cache)))
            sh = self.shards[shard]
            try:
                table = _read_shard(sh, self.columns, self.verify_hashes)  # a replaced shard is caught here
            except ManifestError:
                raise
            except (KeyError, ValueError) as e:  # pyarrow: ArrowInvalid (a ValueError) for a missing column
                names = _columns_of(sh.path)
                raise ManifestError(f"{sh.where}: cannot read columns {self.columns} from {sh.path} "
                                    f"(it has {names}): {e}") from e
            cols = [table.column(i).to_pylist() for i in range(len(self.columns))]
            self._cache[shard] = list(zip(*cols)) if len(cols) > 1 else [(v, None) for v in cols[0]]
        return self._cache[shard][row]


def _read_shard(shard: RunShard, columns: list[str], verify_hashes: bool) -> Any:
    """``columns`` of ``shard``: from its verified bytes with ``verify_hashes``, else after a size check."""
    if not verify_hashes:
        check_size(shard)
        return read_parquet(shard.path, columns=columns)
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(read_verified(shard)), columns=columns)


def build_index(runs: list[str], group_by: str,
                verify_hashes: bool = True) -> tuple[list[RunShard], dict[str, np.ndarray], list[str]]:
    """(shards, domain -> array of (shard, row) pairs, manifest fingerprints)."""
    shards: list[RunShard] = []
    fingerprints: list[str] = []
    refs: dict[str, list[tuple[int, int]]] = {}
    for run in runs:
        listed, fingerprint = run_shards(run)
        fingerprints.append(fingerprint)
        kept = 0
        for shard in listed:
            col = _read_shard(shard, [group_by], verify_hashes).column(0).to_pylist()
            if len(col) != shard.entry.rows:
                raise ManifestError(f"{shard.where}: manifest says {shard.entry.rows} rows, {shard.path} has "
                                    f"{len(col)}")
            k = len(shards)
            shards.append(shard)
            kept += len(col)
            for row, dom in enumerate(col):
                refs.setdefault(str(dom), []).append((k, row))
        if kept == 0:
            raise ManifestError(f"run {run} has no documents: its {len(listed)} shards are all empty")
    return shards, {d: np.array(v, dtype=np.int64).reshape(-1, 2) for d, v in refs.items()}, fingerprints


#: The one group of a curriculum's documents (the key of its index and cursors).
CURRICULUM = "curriculum"


def _curriculum(cfg: LoaderConfig, shards: list[RunShard]) -> list[str] | None:
    """Each shard's label (``round-RRR``) when ``cfg.runs`` is one skill-ordered run, read as a curriculum; None for
    ``curate run`` runs, read as a mixture. ConfigError for a mixture without ratios, a skill-ordered run beside
    other runs or one given ratios."""
    if all(s.round is None for s in shards):
        if not cfg.ratios:
            raise ConfigError("ratios is empty: a mixture of curation runs needs ratios (domain -> weight); only "
                              "skill-ordered output (`curate skill-order`) is read without, as a curriculum")
        return None
    if len(cfg.runs) > 1:
        raise ConfigError(f"runs {cfg.runs}: skill-ordered output (`curate skill-order`) is a curriculum read in its "
                          "own order; it cannot be mixed with other runs: train on it alone")
    if cfg.ratios:
        given = f"ratios_file {cfg.ratios_file}" if cfg.ratios_file else "ratios"
        raise ConfigError(f"{given}: {cfg.runs[0]} is skill-ordered output (`curate skill-order`), read round by "
                          "round in its manifest's order: mixture ratios do not apply to it; remove them")
    return [f"round-{s.round:03d}" for s in shards]


class MixtureLoader:
    """Iterates batches ``(inputs, targets, domains)`` of shape ``(batch_size, seq_len)`` for one rank; in a
    curriculum the labels are rounds, not domains."""

    def __init__(self, cfg: LoaderConfig, rank: int = 0, world_size: int = 1, num_workers: int = 1,
                 tokenizer: Tokenizer | None = None) -> None:
        if not 0 <= rank < world_size or num_workers < 1:
            raise ValueError(f"need 0 <= rank < world_size and num_workers >= 1, got {rank}, {world_size}, {num_workers}")
        cfg = cfg.resolved()  # a config built in Python may still name a ratios_file
        self.cfg, self.rank, self.world_size, self.num_workers = cfg, rank, world_size, num_workers
        self.tokenizer = tokenizer or make_tokenizer(cfg.tokenizer)
        if not cfg.runs:
            raise ValueError("LoaderConfig.runs is empty: name at least one curation run")
        shards, self.index, self.fingerprints = build_index(cfg.runs, cfg.group_by, cfg.verify_hashes)
        self.rounds = _curriculum(cfg, shards)  # each shard's round in a curriculum, else None
        if self.rounds is None:
            ratios = cfg.ratios
            missing = sorted(set(ratios) - set(self.index))
            if missing:
                raise ValueError(f"ratios name domains the runs do not have: {missing}; they have "
                                 f"{sorted(self.index)}")
        else:
            # One group drawn every time: the documents in manifest order, shard (round) by shard, row by row.
            ratios = {CURRICULUM: 1.0}
            self.index = {CURRICULUM: np.array([(k, row) for k, s in enumerate(shards) for row in range(s.entry.rows)],
                                               dtype=np.int64).reshape(-1, 2)}
        self.domains = sorted(d for d, w in ratios.items() if w > 0)
        total = sum(ratios[d] for d in self.domains)
        self.probs = np.array([ratios[d] / total for d in self.domains])
        self.init_probs = self.probs.copy()  # the identity; ``set_ratios`` (Skill-It) changes ``probs``
        self.meco = cfg.meco
        self._shards = _Shards(shards, cfg.token_column or "text", self.meco.column if self.meco else None,
                               cfg.verify_hashes)
        self.conditioning = self.meco is not None  # train.py sets it per step (set_conditioning)
        self.n_streams = world_size * num_workers
        self.sequence = 0  # sequences this rank has produced
        self.cursors = {(w, d): _DomainCursor() for w in range(num_workers) for d in self.domains}
        self.tokens_by_domain = dict.fromkeys(self.domains if self.rounds is None else self.rounds, 0)
        self._perm_cache: dict[tuple[str, int], np.ndarray] = {}

    # -- sampling --------------------------------------------------------------------------------

    def _domain_of(self, s: int) -> str:
        rng = np.random.default_rng([self.cfg.seed, self.rank, s])
        return self.domains[int(rng.choice(len(self.domains), p=self.probs))]

    def _stream_docs(self, domain: str, epoch: int, stream: int) -> np.ndarray:
        key = (domain, epoch)
        if key not in self._perm_cache:
            if len(self._perm_cache) > 4 * len(self.domains):
                self._perm_cache.clear()
            seed = int.from_bytes(hashlib.sha256(f"{self.cfg.seed}/{domain}/{epoch}".encode()).digest()[:8], "little")
            n = len(self.index[domain])
            # A curriculum keeps the manifest's order in every epoch.
            perm = np.arange(n) if self.rounds is not None else np.random.default_rng(seed).permutation(n)
            self._perm_cache[key] = perm
        return self._perm_cache[key][stream:: self.n_streams]

    def _prefixes(self, metas: list[Any]) -> list[list[int]]:
        """Token ids of each document's prefix ([] for none). Tokenised apart from the document so
        the masked span is exact; a prefix of ``seq_len // 2`` tokens or more is dropped (as if the
        field were missing) so that no sequence can consist of masked targets only."""
        if not self.conditioning or self.meco is None:
            return [[] for _ in metas]
        values = [field_value(self.meco, m) for m in metas]
        texts = [self.meco.template.format(value=v) for v in values if v is not None]
        encoded = iter(self.tokenizer.encode_batch(texts) if texts else [])
        out = []
        for v in values:
            toks = list(next(encoded)) if v is not None else []
            out.append(toks if len(toks) < self.cfg.seq_len // 2 else [])
        return out

    def _next_sequence(self, worker: int, domain: str) -> tuple[np.ndarray, np.ndarray | None, str]:
        """The next ``seq_len + 1`` tokens of ``worker``'s stream of ``domain``, their prefix mask (with meco) and
        their label: the domain, or in a curriculum the round of the first token."""
        cur = self.cursors[(worker, domain)]
        need = self.cfg.seq_len + 1
        stream = self.rank * self.num_workers + worker
        while len(cur.buffer) < need:
            docs = self._stream_docs(domain, cur.epoch, stream)
            if len(docs) == 0:
                raise ValueError(f"domain {domain!r} has {len(self.index[domain])} documents, fewer than the "
                                 f"{self.n_streams} rank x worker streams: each stream needs at least one")
            if cur.pos >= len(docs):
                cur.epoch, cur.pos = cur.epoch + 1, 0
                continue
            take = docs[cur.pos: cur.pos + 16]
            cur.pos += len(take)
            refs = self.index[domain][take]
            rows = [self._shards.get(int(s), int(r)) for s, r in refs]
            items = [item for item, _ in rows]
            toks = items if self.cfg.token_column else self.tokenizer.encode_batch(items)
            for (shard, _), t, prefix in zip(refs, toks, self._prefixes([meta for _, meta in rows])):
                cur.buffer.extend(prefix)
                cur.buffer.extend(t)
                cur.buffer.append(self.tokenizer.eos_id)
                if self.meco is not None:  # without MeCo the mask stays empty: no cost on the hot path
                    cur.mask.extend([1] * len(prefix) + [0] * (len(t) + 1))
                if self.rounds is not None:  # outside a curriculum the origin stays empty too
                    cur.origin.extend([int(shard)] * (len(prefix) + len(t) + 1))
        seq = np.array(cur.buffer[:need], dtype=np.int64)
        mask = np.array(cur.mask[:need], dtype=bool) if self.meco is not None else None
        label = domain if self.rounds is None else self.rounds[cur.origin[0]]
        # Keep the overlap token: the last target of this sequence is the first input of the next.
        del cur.buffer[: need - 1]
        del cur.mask[: need - 1]
        del cur.origin[: need - 1]
        return seq, mask, label

    def next_batch(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """``(inputs, targets, domains)``; a target is ``IGNORE_INDEX`` where it is a metadata-prefix
        token (the input keeps the token: the model conditions on it, it is not trained to emit it)."""
        seqs, masks, doms = [], [], []
        for _ in range(self.cfg.batch_size):
            s = self.sequence
            seq, mask, label = self._next_sequence(s % self.num_workers, self._domain_of(s))
            seqs.append(seq)
            masks.append(mask)
            doms.append(label)
            self.tokens_by_domain[label] += self.cfg.seq_len
            self.sequence += 1
        arr = np.stack(seqs)
        if self.meco is None:
            return arr[:, :-1], arr[:, 1:], doms
        targets = arr[:, 1:].copy()
        targets[np.stack(masks)[:, 1:]] = IGNORE_INDEX
        return arr[:, :-1], targets, doms

    def __iter__(self) -> MixtureLoader:
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        return self.next_batch()

    def set_ratios(self, ratios: dict[str, float]) -> None:
        """Change the mixture from the next sequence on (online schedules such as Skill-It); the
        new ratios are part of ``state_dict`` so a resumed run draws the same domains. A curriculum has none."""
        if self.rounds is not None:
            raise ConfigError(f"{self.cfg.runs[0]} is skill-ordered output (`curate skill-order`), read as a "
                              "curriculum in its manifest's order: mixture ratios (such as online Skill-It's, "
                              "skillit) do not apply to it")
        unknown = sorted(set(ratios) - set(self.domains))
        if unknown:
            raise ValueError(f"set_ratios: {unknown} are not among this loader's domains {self.domains}")
        w = np.array([max(0.0, float(ratios.get(d, 0.0))) for d in self.domains])
        if w.sum() <= 0:
            raise ValueError("set_ratios: weights must have a positive sum")
        self.probs = w / w.sum()

    def set_conditioning(self, on: bool) -> None:
        """MeCo switch, called by the training loop before each step with
        ``meco.conditioning_at(step, steps, cfg)``. Turning it off also drops the prefix tokens still
        buffered (read ahead while it was on), so the cooldown sees none; a no-op without ``meco``."""
        if self.meco is None or on == self.conditioning:
            return
        self.conditioning = on
        if not on:
            for cur in self.cursors.values():
                keep = [i for i, m in enumerate(cur.mask) if not m]
                cur.buffer = [cur.buffer[i] for i in keep]
                cur.mask = [0] * len(keep)
                if self.rounds is not None:
                    cur.origin = [cur.origin[i] for i in keep]

    def realised_shares(self) -> dict[str, float]:
        total = sum(self.tokens_by_domain.values())
        return {d: (n / total if total else 0.0) for d, n in self.tokens_by_domain.items()}

    # -- resume ----------------------------------------------------------------------------------

    def _identity(self) -> dict[str, Any]:
        return {"manifests": self.fingerprints, "ratios": {d: float(p) for d, p in zip(self.domains, self.init_probs)},
                "world_size": self.world_size, "num_workers": self.num_workers, "rank": self.rank,
                "seq_len": self.cfg.seq_len, "batch_size": self.cfg.batch_size, "tokenizer": self.cfg.tokenizer,
                "group_by": self.cfg.group_by, "seed": self.cfg.seed,
                # what shapes the token stream; the cooldown point is the loop's (conditioning_at)
                **({"meco": {"field": self.meco.field, "template": self.meco.template}} if self.meco else {})}

    def state_dict(self) -> dict[str, Any]:
        return {STATE.key: STATE.version, "identity": self._identity(), "sequence": self.sequence,
                "probs": self.probs.tolist(), "tokens_by_domain": dict(self.tokens_by_domain),
                "conditioning": self.conditioning,
                "cursors": [{"worker": w, "domain": d, "epoch": c.epoch, "pos": c.pos, "buffer": list(c.buffer),
                             "masked": runs_of(c.mask),
                             # a curriculum's: [shard, tokens] runs (a state loads only into a loader of the same
                             # manifests, so of the same kind)
                             **({"origin": [[k, len(list(g))] for k, g in itertools.groupby(c.origin)]}
                                if self.rounds is not None else {})}
                            for (w, d), c in sorted(self.cursors.items())]}

    def load_state_dict(self, state: dict[str, Any], where: str = "loader state") -> None:
        """Continue from ``state`` (``state_dict``'s). ``where``: where it was read, for the messages (the
        checkpoint file and rank). Another version's state or a changed identity is refused (ValueError)."""
        check_schema(state, STATE, where)
        mine, theirs = self._identity(), state["identity"]
        changed = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if changed:
            detail = "; ".join(f"{k}: saved {theirs.get(k)!r}, now {mine.get(k)!r}" for k in changed)
            raise ValueError(f"cannot resume this loader: {detail}")
        self.sequence = int(state["sequence"])
        self.probs = np.asarray(state["probs"], dtype=np.float64)
        self.tokens_by_domain = {d: int(n) for d, n in state["tokens_by_domain"].items()}
        self.conditioning = bool(state["conditioning"])
        for c in state["cursors"]:
            buffer = [int(t) for t in c["buffer"]]
            mask = mask_of(c["masked"], len(buffer)) if self.meco is not None else []
            origin = [int(k) for k, n in c["origin"] for _ in range(n)] if self.rounds is not None else []
            self.cursors[(int(c["worker"]), c["domain"])] = _DomainCursor(int(c["epoch"]), int(c["pos"]), buffer, mask,
                                                                          origin)
