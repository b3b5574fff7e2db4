"""MeCo in the loader: exact prefix masking on a hand-made run, the switch point, resume across it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.io.manifest import ManifestError
from tests.curation.executors.runs import run_pipeline
from training.data.loader import LoaderConfig, MixtureLoader
from training.data.meco import IGNORE_INDEX, MecoConfig, conditioning_at, field_value, switch_step

EOS = 256  # the byte tokenizer's
DOCS = [  # (id, text, url, extra input fields -> the metadata JSON column)
    ("a", "alpha document one", "https://www.Example.com/a?q=1", {"lang": "en"}),
    ("b", "beta two", "http://docs.python.org:8080/3/", {"lang": "fr"}),
    ("c", "gamma has no url at all", None, {}),
    ("d", "delta empty url", "", {"lang": ""}),
    ("e", "epsilon bare host", "sub.example.org/path", {"lang": "en"}),
]
DOMAIN_OF = {"a": "example.com", "b": "docs.python.org", "e": "sub.example.org"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five documents of one domain through the project's own pipeline (no stages)."""
    root = tmp_path_factory.mktemp("meco_run")
    with open(root / "docs.jsonl", "w", encoding="utf-8") as fh:
        for i, text, url, extra in DOCS:
            fh.write(json.dumps({"id": i, "text": text, "domain": "web", **({"url": url} if url is not None else {}),
                                 **extra}) + "\n")
    out = root / "run"
    run_pipeline({"name": "meco", "input": {"paths": [str(root / "docs.jsonl")]}, "stages": [],
                  "output": {"dir": str(out)}, "executor": {"kind": "local"}})
    return out


def loader_for(run: Path, meco: MecoConfig | None, seq_len: int = 40, **kw) -> MixtureLoader:  # noqa: ANN003
    return MixtureLoader(LoaderConfig(runs=[str(run)], ratios={"web": 1.0}, seq_len=seq_len, batch_size=1, meco=meco,
                                      **kw))


def stream(loader: MixtureLoader, batches: int) -> tuple[list[int], list[int]]:
    """One worker, one domain, batch 1: the x rows laid end to end are the packed token stream,
    and the y rows the targets of stream[1:]."""
    xs, ys = [], []
    for _ in range(batches):
        x, y, _ = loader.next_batch()
        xs += x[0].tolist()
        ys += y[0].tolist()
    return xs, ys


def segments(tokens: list[int]) -> list[tuple[int, int]]:
    """[start, end) of every complete document (between two EOS) in ``tokens``."""
    eos = [i for i, t in enumerate(tokens) if t == EOS]
    return [(s + 1, e) for s, e in zip(eos, eos[1:])]


def test_prefix_targets_are_ignored_document_targets_are_not_exactly(tiny_run: Path) -> None:
    meco = MecoConfig(field="url_domain", template="URL: {value}\n\n")
    xs, ys = stream(loader_for(tiny_run, meco, seq_len=48), 50)  # 2,400 tokens: many epochs, prefixes cut
    expected = {text: (f"URL: {DOMAIN_OF[i]}\n\n" if i in DOMAIN_OF else "") for i, text, _, _ in DOCS}
    want_ignored = np.zeros(len(xs), dtype=bool)  # indexed like xs: is token xs[k] a prefix token
    seen_docs, cut_prefixes = set(), 0
    for s, e in segments(xs):
        seg = bytes(xs[s:e]).decode()
        text = next(t for t in expected if seg.endswith(t))
        assert seg == expected[text] + text, f"document {text!r} packed as {seg!r}"
        n = len(expected[text].encode())
        want_ignored[s: s + n] = True
        seen_docs.add(text)
        cut_prefixes += any((k % 48) == 0 for k in range(s + 1, s + n))  # a sequence boundary inside the prefix
    assert seen_docs == set(expected)
    assert cut_prefixes > 0, "no prefix was split across two sequences: the test would not cover that case"
    got_ignored = np.array(ys) == IGNORE_INDEX  # ys[k] is the target of xs[k + 1]
    first, last = segments(xs)[0][0], segments(xs)[-1][1]  # only where the segmentation above is complete
    assert np.array_equal(got_ignored[first - 1: last - 1], want_ignored[first: last])
    # Where not ignored, the target is the next input token: documents (and EOS) are trained on.
    keep = ~got_ignored
    assert np.array_equal(np.array(ys)[keep], np.array(xs[1:] + [ys[-1]])[keep])
    assert "URL: example.com\n\nalpha document one" in bytes(t for t in xs if t != EOS).decode()


def test_documents_without_the_field_get_no_prefix_and_a_missing_column_is_named(tiny_run: Path) -> None:
    xs, ys = stream(loader_for(tiny_run, MecoConfig(field="metadata.lang")), 20)
    packed = {bytes(xs[s:e]).decode() for s, e in segments(xs)}
    assert "en\n\nalpha document one" in packed and "fr\n\nbeta two" in packed
    assert {"gamma has no url at all", "delta empty url"} <= packed  # no key / empty value: no prefix
    assert IGNORE_INDEX in ys
    with pytest.raises(ManifestError, match=r"cannot read columns \['text', 'lang'\].*it has \[.*'metadata'"):
        loader_for(tiny_run, MecoConfig(field="lang")).next_batch()


def test_a_prefix_of_half_a_sequence_or_more_is_dropped_so_no_sequence_is_all_masked(tiny_run: Path) -> None:
    xs, ys = stream(loader_for(tiny_run, MecoConfig(template="{value}" + "." * 20), seq_len=40), 10)
    assert IGNORE_INDEX not in ys and "example.com" not in bytes(t for t in xs if t != EOS).decode()
    _, ys = stream(loader_for(tiny_run, MecoConfig(template="{value}" + "." * 4), seq_len=40), 10)
    assert IGNORE_INDEX in ys


def test_without_meco_or_with_conditioning_off_the_stream_is_plain(tiny_run: Path) -> None:
    plain, plain_y = stream(loader_for(tiny_run, None), 10)
    off = loader_for(tiny_run, MecoConfig())
    off.set_conditioning(False)
    xs, ys = stream(off, 10)
    assert xs == plain and ys == plain_y and IGNORE_INDEX not in ys


def test_switching_off_drops_the_prefixes_already_buffered(tiny_run: Path) -> None:
    loader = loader_for(tiny_run, MecoConfig(template="<{value}>"), seq_len=40)
    for _ in range(20):  # until a prefix sits in the read-ahead buffer
        stream(loader, 1)
        if any(any(c.mask) for c in loader.cursors.values()):
            break
    assert any(any(c.mask) for c in loader.cursors.values()), "nothing buffered: the test would not cover the drop"
    loader.set_conditioning(False)
    xs, ys = stream(loader, 30)
    assert IGNORE_INDEX not in ys
    text = bytes(t for t in xs if t != EOS).decode()
    assert "<" not in text and ">" not in text and "example" not in text


@pytest.mark.parametrize(("steps", "fraction", "start", "switch"),
                         [(100, 0.1, None, 90), (100, 0.0, None, 100), (100, 1.0, None, 0), (7, 0.29, None, 5),
                          (10, 0.3, None, 7), (100, 0.1, 40, 40)])
def test_switch_point(steps: int, fraction: float, start: int | None, switch: int) -> None:
    cfg = MecoConfig(cooldown_fraction=fraction, cooldown_start_step=start)
    assert switch_step(steps, cfg) == switch
    assert [conditioning_at(s, steps, cfg) for s in range(steps)] == [s < switch for s in range(steps)]


def test_field_values() -> None:
    url = MecoConfig(field="url_domain")
    assert field_value(url, "https://WWW.Example.COM:443/x") == "example.com"
    assert field_value(url, "example.org/path") == "example.org"
    assert field_value(url, "https://www./") == "www."
    assert [field_value(url, v) for v in (None, "", "  ", "http://[::1", "mailto:")] == [None] * 5
    meta = MecoConfig(field="metadata.src")
    assert field_value(meta, '{"src": "arxiv"}') == "arxiv"
    missing = (None, "not json", "[1]", '{"src": null}', '{"src": {"a": 1}}')
    assert [field_value(meta, v) for v in missing] == [None] * 5
    assert field_value(MecoConfig(field="source"), "a.jsonl") == "a.jsonl"
    with pytest.raises(ValueError, match="placeholder"):
        MecoConfig(template="URL: \n\n")
    with pytest.raises(ValueError, match="cooldown_fraction"):
        MecoConfig(cooldown_fraction=1.5)


def run_steps(loader: MixtureLoader, first: int, last: int, total: int, meco: MecoConfig) -> list:  # noqa: ANN401
    """What train.py does around the loader: set the flag for the step, then draw its batch."""
    out = []
    for step in range(first, last):
        loader.set_conditioning(conditioning_at(step, total, meco))
        out.append(loader.next_batch())
    return out


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(split=st.integers(0, 12), workers=st.integers(1, 2), fraction=st.sampled_from([0.25, 0.5]))
def test_resume_at_any_step_reproduces_the_run_across_the_switch(sample_run: Path, split: int, workers: int,
                                                                 fraction: float) -> None:
    meco = MecoConfig(template="URL: {value}\n\n", cooldown_fraction=fraction)
    cfg = LoaderConfig(runs=[str(sample_run)], ratios={"python_docs": 0.5, "code": 0.3, "license": 0.2}, seq_len=64,
                       batch_size=4, meco=meco)
    total = 12
    ref = run_steps(MixtureLoader(cfg, num_workers=workers), 0, total, total, meco)
    first = MixtureLoader(cfg, num_workers=workers)
    run_steps(first, 0, split, total, meco)
    state = json.loads(json.dumps(first.state_dict()))  # what the checkpoint stores: JSON
    resumed = MixtureLoader(cfg, num_workers=workers)
    resumed.load_state_dict(state)
    got = run_steps(resumed, split, total, total, meco)
    for (x1, y1, d1), (x2, y2, d2) in zip(ref[split:], got):
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2) and d1 == d2
    switch = switch_step(total, meco)
    assert any((y == IGNORE_INDEX).any() for _, y, _ in ref[:switch])  # python_docs/license have urls
    assert not any((y == IGNORE_INDEX).any() for _, y, _ in ref[switch:])


def test_a_state_from_before_meco_is_refused_not_guessed_at(sample_run: Path) -> None:
    """Such a state (no conditioning flag, no masks) is another version's: refused with the one message, its
    buffers never read as unmasked ones."""
    cfg = LoaderConfig(runs=[str(sample_run)], ratios={"python_docs": 1.0}, seq_len=64, batch_size=2)
    a = MixtureLoader(cfg)
    a.next_batch()
    state = a.state_dict()
    for key in ("schema_version", "conditioning"):  # states were not versioned yet either
        state.pop(key)
    for c in state["cursors"]:
        c.pop("masked")
    b = MixtureLoader(cfg)
    with pytest.raises(ValueError, match=r"^ckpt.pt: loaders\[0\]: loader state written by another version of this "
                                         r"project \(no schema_version\); this version reads only schema_version 1: "
                                         "restart training from a checkpoint written by this version"):
        b.load_state_dict(state, where="ckpt.pt: loaders[0]")
    b.load_state_dict(a.state_dict())  # this version's state resumes (the rest: test_loader.py)
    x1, y1, _ = a.next_batch()
    x2, y2, _ = b.next_batch()
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)


def test_resume_refuses_a_changed_field_or_template(sample_run: Path) -> None:
    def make(meco: MecoConfig | None) -> MixtureLoader:
        return MixtureLoader(LoaderConfig(runs=[str(sample_run)], ratios={"python_docs": 1.0}, meco=meco))

    state = make(MecoConfig()).state_dict()
    with pytest.raises(ValueError, match="meco"):
        make(MecoConfig(template="URL: {value}\n\n")).load_state_dict(state)
    with pytest.raises(ValueError, match="meco"):
        make(None).load_state_dict(state)
    make(MecoConfig(cooldown_fraction=0.5)).load_state_dict(state)  # the cooldown point is the loop's business
