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
