"""Stage registration: version suffixes, one class per name, typed keyword-only configs."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from curation.registry import _STAGES, register_stage
from curation.stages.base import Filter


def test_a_stage_config_must_be_a_keyword_only_dataclass() -> None:
    class Plain:
        min_chars: int = 3

    @dataclass
    class Positional:
        min_chars: int = 3

    for config in (Plain, Positional):
        with pytest.raises(TypeError, match=r"Config must be a @dataclass\(kw_only=True\)"):
            register_stage("bad_config_v1")(type("Bad", (Filter,), {"Config": config}))

    @dataclass(kw_only=True)
    class Typed:
        min_chars: int = 3

    try:
        cls = register_stage("good_config_v1")(type("Good", (Filter,), {"Config": Typed}))
        assert cls.name == "good_config_v1"
    finally:
        _STAGES.pop("good_config_v1", None)  # other tests list every registered stage


def test_a_stage_name_needs_a_version_suffix() -> None:
    with pytest.raises(ValueError, match="version suffix"):
        register_stage("unversioned")(type("X", (Filter,), {}))
