"""``Filter.process`` on a lone per-document filter gives what the fused chain gives, and the
datatrove-backed filters build the implementation their config names."""

from __future__ import annotations

import pytest

from curation.stages.base import Doc, Filter, FilterOutcome, run_chain
from curation.stages.filters.c4_quality import C4Quality, C4QualityConfig
from curation.stages.filters.fineweb_quality import FineWebQuality
from curation.stages.filters.gopher_quality import GopherQuality, GopherQualityConfig
from curation.stages.filters.gopher_repetition import GopherRepetition, GopherRepetitionConfig
from tests.curation.stages.filters.helpers import batch_of


class _ShoutOrDrop(Filter):
    """Upper-cases every text (so n_chars must follow for ß -> SS) and drops those with 'x'."""

    def filter(self, doc: Doc) -> FilterOutcome:
        doc.text = doc.text.upper()
        return (False, "has_x", {"len": len(doc.text)}) if "X" in doc.text else True


def test_process_matches_run_chain_with_rewrites_and_details() -> None:
    batch = batch_of(["straße", "box", "ok", ""])
    res = _ShoutOrDrop().process(batch)
    assert res.kept.column("text").to_pylist() == ["STRASSE", "OK", ""]
    assert res.kept.column("n_chars").to_pylist() == [7, 2, 0]
    assert res.dropped.column("text").to_pylist() == ["BOX"]  # dropped rows carry the rewrite too
    assert res.reasons == ["has_x"] and res.details == ['{"len": 3}']
    kept, (step,) = run_chain([_ShoutOrDrop()], batch)
    assert kept.equals(res.kept) and step.result.dropped.equals(res.dropped) and step.n_in == 4


def test_filter_without_filter_or_decide_says_so() -> None:
    class Nothing(Filter):
        pass

    with pytest.raises(NotImplementedError):
        Nothing().process(batch_of(["a"]))


@pytest.mark.parametrize("stage, config", [(C4Quality, C4QualityConfig), (GopherQuality, GopherQualityConfig),
                                           (GopherRepetition, GopherRepetitionConfig)])
def test_implementation_picks_the_filter_class(stage: type, config: type) -> None:
    import datatrove.pipeline.filters as dt

    reference = getattr(dt, stage.datatrove_filter)
    s_fast, s_ref = stage(config(implementation="fast")), stage(config(implementation="datatrove"))
    s_fast.setup()
    s_ref.setup()
    assert type(s_ref._impl) is reference
    assert isinstance(s_fast._impl, reference) and type(s_fast._impl) is not reference


def test_fineweb_runs_datatrove_s_rules_and_has_no_implementation_option() -> None:
    """Its one implementation is a subclass of datatrove's that returns each drop's values (decisions held equal
    to datatrove's in test_drop_details.py)."""
    import datatrove.pipeline.filters as dt

    s = FineWebQuality()
    s.setup()
    assert isinstance(s._impl, dt.FineWebQualityFilter)
    with pytest.raises(TypeError):
        FineWebQuality.Config(implementation="fast")  # type: ignore[call-arg]


@pytest.mark.parametrize("config", [C4QualityConfig, GopherQualityConfig, GopherRepetitionConfig])
def test_unknown_implementation_is_refused(config: type) -> None:
    with pytest.raises(ValueError, match=r"implementation: 'rust' is not one of \['datatrove', 'fast'\]"):
        config(implementation="rust")
