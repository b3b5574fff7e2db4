"""MixtureLoader properties: token shares converge, ranks/workers never share a sequence, resume is exact."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.io.manifest import SchemaVersionError
from training.data.loader import STATE, LoaderConfig, MixtureLoader

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


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.integers(0, 40), after=st.integers(1, 20), workers=st.integers(1, 3), rank=st.integers(0, 1))
def test_resume_continues_sample_for_sample(sample_run: Path, before: int, after: int, workers: int, rank: int) -> None:
    a = MixtureLoader(cfg(sample_run), rank=rank, world_size=2, num_workers=workers)
    for _ in range(before):
        a.next_batch()
    state = a.state_dict()
    expected = [a.next_batch() for _ in range(after)]
    b = MixtureLoader(cfg(sample_run), rank=rank, world_size=2, num_workers=workers)
    b.load_state_dict(state)
    got = [b.next_batch() for _ in range(after)]
    for (x1, y1, d1), (x2, y2, d2) in zip(expected, got):
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2) and d1 == d2


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
