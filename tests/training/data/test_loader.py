"""MixtureLoader properties: token shares converge, ranks/workers never share a sequence, resume is exact."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.errors import ConfigError
from curation.io.manifest import OrderedRunManifest, SchemaVersionError
from training.data.loader import STATE, LoaderConfig, MixtureLoader
from training.data.meco import MecoConfig

RATIOS = {"python_docs": 0.5, "code": 0.3, "license": 0.2}


def cfg(run: Path, **kw) -> LoaderConfig:  # noqa: ANN003
    return LoaderConfig(runs=[str(run)], ratios=kw.pop("ratios", RATIOS), seq_len=kw.pop("seq_len", 64),
                        batch_size=kw.pop("batch_size", 4), **kw)


def test_realised_token_shares_converge_to_the_ratios(sample_run: Path) -> None:
    loader = MixtureLoader(cfg(sample_run))
    for _ in range(500):
        loader.next_batch()
    shares = loader.realised_shares()
    assert all(abs(shares[d] - r) < 0.03 for d, r in RATIOS.items()), shares
    assert sum(loader.tokens_by_domain.values()) == 500 * 4 * 64


def test_batches_are_shifted_token_windows_with_document_boundaries(sample_run: Path) -> None:
    x, y, doms = MixtureLoader(cfg(sample_run)).next_batch()
    assert x.shape == y.shape == (4, 64) and len(doms) == 4
    assert np.array_equal(x[:, 1:], y[:, :-1])  # targets are inputs shifted by one
    assert x.max() <= 256 and x.min() >= 0


def test_no_sequence_is_seen_twice_across_ranks_and_workers(sample_run: Path) -> None:
    seen: dict[bytes, tuple[int, int]] = {}
    for rank in range(2):
        loader = MixtureLoader(cfg(sample_run, ratios={"python_docs": 1.0}), rank=rank, world_size=2, num_workers=2)
        for b in range(30):  # 30 x 4 x 64 tokens per rank: well inside one epoch of python_docs (~370k bytes)
            x, _, _ = loader.next_batch()
            for row in x:
                key = row.tobytes()
                assert key not in seen, f"rank {rank} batch {b} repeats a sequence from {seen[key]}"
                seen[key] = (rank, b)
    assert len(seen) == 2 * 30 * 4


def assert_resumes(c: LoaderConfig, before: int, after: int, workers: int, rank: int,
                   switch: int | None = None) -> None:
    """A loader resumed from the state (as a checkpoint stores it: JSON) after ``before`` batches gives the
    ``after`` batches the uninterrupted one gives, labels and token counts included. ``switch``: with ``meco``,
    the batch from which the metadata prefixes are off (as train.py switches them)."""
    def batches(loader: MixtureLoader, first: int, last: int) -> list[tuple[np.ndarray, np.ndarray, list[str]]]:
        out = []
        for b in range(first, last):
            if switch is not None:
                loader.set_conditioning(b < switch)
            out.append(loader.next_batch())
        return out

    a = MixtureLoader(c, rank=rank, world_size=2, num_workers=workers)
    batches(a, 0, before)
    state = json.loads(json.dumps(a.state_dict()))
    expected = batches(a, before, before + after)
    b = MixtureLoader(c, rank=rank, world_size=2, num_workers=workers)
    b.load_state_dict(state)
    got = batches(b, before, before + after)
    for (x1, y1, d1), (x2, y2, d2) in zip(expected, got):
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2) and d1 == d2
    assert b.tokens_by_domain == a.tokens_by_domain


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.integers(0, 40), after=st.integers(1, 20), workers=st.integers(1, 3), rank=st.integers(0, 1))
def test_resume_continues_sample_for_sample(sample_run: Path, before: int, after: int, workers: int, rank: int) -> None:
    assert_resumes(cfg(sample_run), before, after, workers, rank)


@pytest.mark.parametrize("change, found", [(lambda s: s.pop("schema_version"), "no schema_version"),
                                           (lambda s: s.update(schema_version=0), "schema_version 0"),
                                           (lambda s: s.update(schema_version=2), "schema_version 2")])
def test_a_state_of_another_version_is_refused_with_the_one_message(sample_run: Path, change: Callable[[dict], object],
                                                                    found: str) -> None:
    a = MixtureLoader(cfg(sample_run))
    a.next_batch()
    state = a.state_dict()
    assert state["schema_version"] == STATE.version == 1
    change(state)
    with pytest.raises(SchemaVersionError) as e:
        MixtureLoader(cfg(sample_run)).load_state_dict(state, where="out/checkpoint.pt: loaders[0]")
    assert str(e.value) == (f"out/checkpoint.pt: loaders[0]: loader state written by another version of this project "
                            f"({found}); this version reads only schema_version 1: {STATE.remedy}")


def test_resume_refuses_changed_world_size_ratios_or_manifest(sample_run: Path, tmp_path: Path) -> None:
    state = MixtureLoader(cfg(sample_run), world_size=2).state_dict()
    with pytest.raises(ValueError, match="world_size: saved 2, now 4"):
        MixtureLoader(cfg(sample_run), world_size=4).load_state_dict(state)
    with pytest.raises(ValueError, match="ratios"):
        MixtureLoader(cfg(sample_run, ratios={"python_docs": 0.9, "code": 0.1}), world_size=2).load_state_dict(state)
    import shutil

    other = tmp_path / "run"
    shutil.copytree(sample_run, other)
    (other / "manifest.json").write_text((other / "manifest.json").read_text().replace('"name": "sample"', '"name": "x"'))
    with pytest.raises(ValueError, match="manifests"):
        MixtureLoader(cfg(other), world_size=2).load_state_dict(state)


def test_unknown_domain_is_named(sample_run: Path) -> None:
    with pytest.raises(ValueError, match=r"\['finance'\].*license"):
        MixtureLoader(cfg(sample_run, ratios={"finance": 1.0}))


def test_ratios_file_is_read_when_resolved_not_on_construction(sample_run: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    c = LoaderConfig(runs=[str(sample_run)], ratios_file=str(missing))  # no file read here
    with pytest.raises(ValueError, match=r"ratios_file .*nope\.json: cannot read it"):
        c.resolved()
    mix = tmp_path / "mix.yaml"
    mix.write_text("ratios: {python_docs: 3, code: 1}\n")
    c = LoaderConfig(runs=[str(sample_run)], ratios={"license": 1.0}, ratios_file=str(mix))
    assert c.ratios == {"license": 1.0}
    assert c.resolved().ratios == {"python_docs": 3.0, "code": 1.0} and c.resolved().ratios_file == str(mix)
    assert MixtureLoader(c).cfg.ratios == {"python_docs": 3.0, "code": 1.0}  # the loader resolves too
    mix.write_text("weights: {code: 1}\n")
    with pytest.raises(ValueError, match=r"mix\.yaml: expected a mapping with a 'ratios' mapping"):
        c.resolved()
    mix.write_text("ratios: {code: -1}\n")
    with pytest.raises(ValueError, match=r"mix\.yaml: ratios must be non-negative"):
        c.resolved()


def test_load_config_reads_the_ratios_file_and_names_the_key(sample_run: Path, tmp_path: Path) -> None:
    from curation.errors import ConfigError
    from training.train import load_config

    config = tmp_path / "train.yaml"
    config.write_text(f"data: {{runs: [{sample_run}], ratios_file: {tmp_path / 'mix.json'}}}\n")
    with pytest.raises(ConfigError, match=r"train\.yaml: data\.ratios_file .*mix\.json: cannot read it"):
        load_config(str(config), [])
    (tmp_path / "mix.json").write_text('{"ratios": {"code": 1}}')
    assert load_config(str(config), []).data.ratios == {"code": 1.0}


# -- a skill-ordered run (`curate skill-order` output): a curriculum, read in its manifest's order ---------------

def ordered_cfg(run: Path, **kw: Any) -> LoaderConfig:
    return LoaderConfig(runs=[str(run)], seq_len=kw.pop("seq_len", 64), batch_size=kw.pop("batch_size", 4), **kw)


def curriculum_stream(run: Path) -> tuple[list[int], list[str]]:
    """The byte tokens of the run's documents in manifest order, round by round, EOS after each, and each token's
    round: what one stream of the loader must read."""
    m = OrderedRunManifest.read(run)
    tokens: list[int] = []
    rounds: list[str] = []
    for r, shard in zip(m.rounds, m.shards):
        for text in pq.read_table(run / shard.path, columns=["text"]).column("text").to_pylist():
            doc = [*text.encode(), 256]
            tokens += doc
            rounds += [f"round-{r.round:03d}"] * len(doc)
    return tokens, rounds


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq_len=st.integers(4, 300), batch_size=st.integers(1, 4), batches=st.integers(1, 40))
def test_a_curriculum_is_its_documents_in_manifest_order(ordered_run: Path, seq_len: int, batch_size: int,
                                                         batches: int) -> None:
    """One stream: sequence ``s`` is tokens ``[s * seq_len, (s + 1) * seq_len]`` of the documents in manifest order,
    over again after the last round (the next epoch), labelled with the round of its first token."""
    loader = MixtureLoader(ordered_cfg(ordered_run, seq_len=seq_len, batch_size=batch_size))
    stream, rounds = curriculum_stream(ordered_run)
    for b in range(batches):
        x, y, labels = loader.next_batch()
        for i in range(batch_size):
            start = (b * batch_size + i) * seq_len
            window = [stream[(start + j) % len(stream)] for j in range(seq_len + 1)]
            assert x[i].tolist() == window[:-1] and y[i].tolist() == window[1:]
            assert labels[i] == rounds[start % len(stream)]
    assert sum(loader.tokens_by_domain.values()) == batches * batch_size * seq_len
    assert set(loader.tokens_by_domain) == {"round-000", "round-001", "round-002"}


def test_every_stream_reads_the_rounds_in_order(ordered_run: Path) -> None:
    """Two ranks of two workers: within the first epoch each stream's labels start at round 0 and never go back a
    round (the streams split the documents as a mixture's domain, without overlap)."""
    for rank in range(2):
        loader = MixtureLoader(ordered_cfg(ordered_run, seq_len=32), rank=rank, world_size=2, num_workers=2)
        labels: dict[int, list[str]] = {0: [], 1: []}
        for _ in range(40):  # 40 x 2 sequences of 32 tokens per stream: past round 0, inside its 3-5k tokens
            _, _, batch_labels = loader.next_batch()
            for i, label in enumerate(batch_labels):
                labels[(loader.sequence - len(batch_labels) + i) % 2].append(label)
        assert all(c.epoch == 0 for c in loader.cursors.values())
        for worker in labels.values():
            assert worker[0] == "round-000" and worker == sorted(worker) and len(set(worker)) > 1


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.integers(0, 40), after=st.integers(1, 20), workers=st.integers(1, 3), rank=st.integers(0, 1),
       switch=st.none() | st.integers(0, 60))
def test_a_curriculum_resumes_sample_for_sample(ordered_run: Path, before: int, after: int, workers: int, rank: int,
                                                switch: int | None) -> None:
    """Across rounds and epochs; with MeCo (``switch`` not None) also across the switch, which drops buffered
    prefix tokens and so the rounds recorded for them."""
    meco = None if switch is None else MecoConfig(template="URL: {value}\n\n")
    assert_resumes(ordered_cfg(ordered_run, meco=meco), before, after, workers, rank, switch)


def test_the_meco_switch_drops_prefix_tokens_with_their_rounds(ordered_run: Path) -> None:
    """Turning the prefixes off drops the buffered prefix tokens: their recorded rounds go with them, so every
    buffered token still has its own (the next sequence's label is its first token's round)."""
    loader = MixtureLoader(ordered_cfg(ordered_run, meco=MecoConfig(template="URL: {value}\n\n")))
    for b in range(30):
        loader.set_conditioning(b < 10)
        loader.next_batch()
        assert all(len(c.origin) == len(c.buffer) for c in loader.cursors.values())
    assert not any(any(c.mask) for c in loader.cursors.values())


def test_a_curriculum_refuses_ratios_other_runs_and_mixture_updates(ordered_run: Path, sample_run: Path,
                                                                    tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"^ratios: {ordered_run} is skill-ordered output \(`curate skill-order`\), "
                                          "read round by round in its manifest's order: mixture ratios do not apply"):
        MixtureLoader(ordered_cfg(ordered_run, ratios={"python_docs": 1.0}))
    mix = tmp_path / "mix.yaml"
    mix.write_text("ratios: {python_docs: 1}\n")
    with pytest.raises(ConfigError, match=rf"^ratios_file {mix}: {ordered_run} is skill-ordered output"):
        MixtureLoader(ordered_cfg(ordered_run, ratios_file=str(mix)))
    with pytest.raises(ConfigError, match=r"is a curriculum read in its own order; it cannot be mixed with other runs"):
        MixtureLoader(LoaderConfig(runs=[str(sample_run), str(ordered_run)], ratios=RATIOS))
    with pytest.raises(ConfigError, match="mixture ratios \\(such as online Skill-It's, skillit\\) do not apply"):
        MixtureLoader(ordered_cfg(ordered_run)).set_ratios({"curriculum": 1.0})
    with pytest.raises(ConfigError, match=r"^ratios is empty: a mixture of curation runs needs ratios"):
        MixtureLoader(LoaderConfig(runs=[str(sample_run)]))
    state = MixtureLoader(cfg(sample_run)).state_dict()  # a mixture's state: another run, another kind
    with pytest.raises(ValueError, match="cannot resume this loader: manifests: saved"):
        MixtureLoader(ordered_cfg(ordered_run)).load_state_dict(state)
