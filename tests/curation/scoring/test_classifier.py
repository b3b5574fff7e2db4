"""fastText scorer training: labels, normalisation, held-out metrics, through the real fastText library."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from curation.scoring.classifier import FastTextSettings, _auc, normalise, positive_probability, preselect_labels, train_classifier
from tests.conftest import SAMPLE

# The paper's epoch=3, lr=0.1 are for ~400k documents; a few hundred need more passes to converge.
SMALL = FastTextSettings(epoch=25, lr=0.5, bucket=200_000, seed=0)


def sample_texts(domain: str) -> list[str]:
    out = []
    for f in sorted(SAMPLE.glob(f"{domain}-*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            out += [json.loads(line)["text"] for line in fh]
    return out


def test_preselect_labels_balance_and_ties() -> None:
    ids = ["d0", "d1", "d2", "d3", "d4", "d5"]
    s = np.array([1.0, 0.2, np.nan, 1.0, 0.2, 0.6])
    pos, neg = preselect_labels(ids, s)
    assert pos == [0, 3] and neg == [1, 4]  # lowest S first, ties by id; NaN never used
    pos, neg = preselect_labels(ids, s, positive_min=0.6)
    assert len(pos) == 2 and set(pos) < {0, 3, 5} and neg == [1, 4]  # fewer negatives: positives cut to balance
    assert preselect_labels(ids, s, positive_min=0.6) == (pos, neg)  # the same labels, the same cut


def test_the_positive_cut_is_not_the_first_ids_in_sort_order() -> None:
    # 200 positives whose ids start with their source, 20 negatives: the 20 positives kept must not all come
    # from the source that sorts first, or the classifier learns the source instead of S.
    ids = [f"changelog:{i:03d}" for i in range(100)] + [f"python_docs:{i:03d}" for i in range(100)] + \
          [f"neg:{i:03d}" for i in range(20)]
    s = np.array([1.0] * 200 + [0.4] * 20)
    pos, neg = preselect_labels(ids, s)
    assert len(pos) == len(neg) == 20 and pos == sorted(pos, key=lambda i: ids[i])
    from_changelog = sum(ids[i].startswith("changelog") for i in pos)
    assert 4 <= from_changelog <= 16  # about half from each source (binomial(20, 0.5): 4..16 holds at p > 0.99)
    assert len(preselect_labels(ids, s, max_per_class=10)[0]) == 10


def test_auc_rank_formula() -> None:
    assert _auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    assert _auc(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5


def test_normalisation_is_identical_at_train_and_inference(tmp_path: Path) -> None:
    assert normalise("a\nb\r\nc\rd") == "a b c d"
    pos = ["def f(x):\n    return x + 1\n"] * 30
    neg = ["The river runs to the sea.\nIt is wide."] * 30
    card = train_classifier(tmp_path / "m", pos, neg, SMALL, {"method": "test"}, valid_fraction=0.0)
    assert card["normalisation"].startswith("line breaks")
    import fasttext

    model = fasttext.load_model(str(tmp_path / "m" / "model.bin"))
    text = "def g(y):\n    return y\n"
    labels, probs = model.predict(normalise(text), k=-1)
    expected = dict(zip(labels, probs))["__label__1"]
    assert positive_probability(model, [text])[0] == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError):  # fastText itself refuses raw newlines: normalisation is required
        model.predict(text)


def test_code_vs_prose_scorer_is_accurate_on_held_out_documents(tmp_path: Path) -> None:
    code, prose = sample_texts("code"), sample_texts("python_docs")[:300]
    card = train_classifier(tmp_path / "scorer", code, prose, SMALL, {"method": "reference_vs_random"}, valid_fraction=0.2)
    m = card["metrics"]
    assert m["valid_docs"] == round(0.2 * (len(code) + len(prose))) and m["train_docs"] + m["valid_docs"] == 410
    assert m["valid_accuracy"] >= 0.9 and m["valid_auc"] >= 0.95  # chance is 0.5 / 0.5
    assert json.loads((tmp_path / "scorer" / "card.json").read_text())["settings"]["wordNgrams"] == 2
    assert not list((tmp_path / "scorer").glob("*.tmp")) and not (tmp_path / "scorer" / "train.txt").exists()


@pytest.mark.parametrize("n_pos,n_neg,valid", [(1, 1, 0.1), (3, 1, 0.99)])
def test_a_training_split_without_both_classes_is_refused_by_name(tmp_path: Path, n_pos: int, n_neg: int,
                                                                  valid: float) -> None:
    # PreSelect labels from a family whose models rank alike leave one negative; fastText then
    # failed with "Empty vocabulary" or trained a one-class model
    pos, neg = ["a useful page about tools"] * n_pos, ["noise noise"] * n_neg
    with pytest.raises(ValueError, match=r"training split has \d+ positives and \d+ negatives .* needs both classes"):
        train_classifier(tmp_path / "m", pos, neg, SMALL, {}, valid_fraction=valid)
    assert not (tmp_path / "m" / "model.bin").exists()
