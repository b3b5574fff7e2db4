"""Stage registry: YAML refers to stages by a versioned name such as ``gopher_quality_v1``."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, TypeVar

from curation.errors import ConfigError

if TYPE_CHECKING:
    from curation.stages.base import Stage

S = TypeVar("S", bound="type[Stage]")
_STAGES: dict[str, type["Stage"]] = {}


def register_stage(name: str) -> Callable[[S], S]:
    """Class decorator that registers a stage under ``name`` (which must end in ``_vN``)."""

    def deco(cls: S) -> S:
        if not name.rsplit("_", 1)[-1].startswith("v"):
            raise ValueError(f"stage name {name!r} needs a version suffix such as '_v1'")
        config = getattr(cls, "Config", None)
        # Typed configs: YAML keys map onto keyword-only dataclass fields (unknown keys refused, no positional
        # meaning); a plain class or a positional dataclass would slip past ``from_dict``'s checks.
        if config is not None and not (dataclasses.is_dataclass(config)
                                       and all(f.kw_only for f in dataclasses.fields(config))):
            raise TypeError(f"stage {name!r}: {cls.__name__}.Config must be a @dataclass(kw_only=True)")
        if name in _STAGES and _STAGES[name] is not cls:
            raise ValueError(f"stage name {name!r} is already registered by {_STAGES[name].__name__}")
        cls.name = name
        _STAGES[name] = cls
        return cls

    return deco


def get_stage(name: str) -> type["Stage"]:
    """Look a stage class up by name; the error lists every valid name."""
    import curation.stages  # noqa: F401  (registers the built-in stages)

    try:
        return _STAGES[name]
    except KeyError:
        from curation.stages import UNAVAILABLE

        missing = "".join(f"; stage group {g!r} could not be imported ({e})" for g, e in sorted(UNAVAILABLE.items()))
        raise ConfigError(f"unknown stage {name!r}; valid stages: {', '.join(sorted(_STAGES))}{missing}") from None


def stage_names() -> list[str]:
    import curation.stages  # noqa: F401

    return sorted(_STAGES)
