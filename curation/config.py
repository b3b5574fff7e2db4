"""Typed configuration: dataclasses loaded from YAML, with unknown keys rejected by name.

YAML only serialises the dataclasses; nothing is ever ``exec``'d. Every component owns a
``@dataclass(kw_only=True)`` config validated in ``__post_init__``. ``from_dict`` walks the
type hints so a wrong key or type fails with the dotted path and the list of valid keys.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import types
import typing
from pathlib import Path
from collections.abc import Callable
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from curation.errors import ConfigError

T = TypeVar("T")


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass ``cls`` from a plain mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(sorted(fields))}"
        )
    hints = get_type_hints(cls)
    kwargs = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(map(repr, missing))}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:  # __post_init__ validation
        raise ConfigError(f"{where}: {exc}") from exc


def check_choices(obj: Any) -> None:
    """Refuse a ``Literal[...]`` field of dataclass ``obj`` holding a value outside its choices.

    ``from_dict`` already refuses such a value with its dotted key; a config's ``__post_init__``
    calls this so that one built directly in Python is held to the same declared choices.

    Raises:
        ValueError: ``<field>: <value> is not one of [<choices>]``.
    """
    for name, choices in _literal_fields(type(obj)):
        value = getattr(obj, name)
        if value not in choices:
            raise ValueError(f"{name}: {value!r} is not one of {list(choices)}")


@functools.cache
def _literal_fields(cls: type) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """(field name, allowed values) of each ``Literal`` (or ``Literal | None``) field of ``cls``."""
    hints = get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if get_origin(tp) is Literal:
            out.append((f.name, get_args(tp)))
        elif get_origin(tp) in (Union, types.UnionType):
            # Only a union of Literals (and None) is a closed set of choices; ``Literal | str`` is not.
            args = get_args(tp)
            if all(get_origin(a) is Literal or a is type(None) for a in args):
                out.append((f.name, tuple(v for a in args for v in ((None,) if a is type(None) else get_args(a)))))
    return tuple(out)


#: A float in exponent notation without a decimal point (``3e-4``, ``1E+5``), which YAML 1.2 and JSON read as a
#: number and PyYAML (YAML 1.1) as a string; a float field accepts it, nothing else written as a string.
_EXPONENT_FLOAT = re.compile(r"[-+]?[0-9]+[eE][-+]?[0-9]+")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {tp}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_coerce(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        _, val_tp = get_args(tp) or (str, Any)
        return {str(k): _coerce(val_tp, v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value):
            return float(value)  # `lr: 3e-4`: YAML 1.1 (PyYAML) reads an exponent without a dot as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {tp}")  # a programming error, surfaced loudly


def to_dict(obj: Any) -> Any:
    """Plain-data view of a config dataclass (for YAML/JSON dumps and hashing)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def fingerprint(data: Any) -> str:
    """Stable sha256 of plain data; used to refuse a relaunch with a changed config."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with the safe loader (no Python object tags)."""
    return parse_mapping(Path(path).read_text(encoding="utf-8"), str(path))


class _AliasRefused(Exception):
    """An anchor or alias in YAML text: ``parse_mapping`` turns it into a one-line ConfigError."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _NoAliasLoader(yaml.SafeLoader):
    """The safe loader, refusing anchors (``&a``) and aliases (``*a``, and so ``<<: *a`` merges) as it composes.

    Aliases let a few hundred bytes stand for billions of nodes ("billion laughs"): the composed graph stays
    small, but everything that walks it as a tree (``to_dict``, ``fingerprint``, ``yaml.safe_dump``) expands it,
    which took 40 s and 2 GB for an 868-byte config. A config has no need for them, so they are refused before any
    node is built, the cheapest place to stop them.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _AliasRefused(event.start_mark.line + 1)
        return super().compose_node(parent, index)


def safe_load_yaml(text: str) -> Any:
    """``yaml.safe_load`` without anchors and aliases (``_NoAliasLoader``); raises ``_AliasRefused``."""
    loader = _NoAliasLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


#: How ``parse_mapping`` reads each format: loader, the error it raises, and what the message calls it.
_FORMATS: dict[str, tuple[Callable[[str], Any], type[Exception], str]] = {
    "yaml": (safe_load_yaml, yaml.YAMLError, "invalid YAML"),  # safe loader: no Python object tags, no aliases
    "json": (json.loads, json.JSONDecodeError, "not JSON"),
}


def parse_mapping(text: str, where: str, fmt: Literal["json", "yaml"] = "yaml") -> dict[str, Any]:
    """Parse YAML or JSON text that must be a mapping; a ConfigError names ``where`` otherwise."""
    load, error, what = _FORMATS[fmt]
    try:
        data = load(text)
    except error as exc:
        raise ConfigError(f"{where}: {what}: {exc}") from None
    except _AliasRefused as exc:
        raise ConfigError(f"{where}: line {exc.line}: YAML anchors and aliases (&name, *name, <<: *name) are not "
                          "accepted in configs: write the values out") from None
    except RecursionError:  # '[[[[...' deeper than the parser's stack: a refusal, not a 500 or a traceback
        raise ConfigError(f"{where}: nested too deeply to parse") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: top level must be a mapping (a JSON object), got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: typing.Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML; list items by index).

    Any override that does not fit the config's shape (an index that is not a number or out of range, a key
    under a value that is neither a mapping nor a list, an empty key part, a value that is not YAML) is a
    one-line ``ConfigError`` naming the override and the dotted path where it stopped fitting: ``curate run``
    exits 2 with it and the service answers 422, rather than a traceback or a 500."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        try:
            value = safe_load_yaml(raw) if raw else ""
        except _AliasRefused:
            raise ConfigError(f"override {item!r}: YAML anchors and aliases are not accepted") from None
        except RecursionError:
            raise ConfigError(f"override {key!r}: the value is nested too deeply to parse") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({' '.join(str(exc).split())})") \
                from None
        parts = key.split(".")
        if "" in parts:
            raise ConfigError(f"override {item!r}: {key!r} has an empty part: use KEY.SUB=VALUE")
        node: Any = data
        for depth, part in enumerate(parts):
            here = ".".join(parts[:depth + 1])  # the dotted path up to this part, for the message
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.lstrip("-").isdigit():
                    raise ConfigError(f"override {item!r}: {'.'.join(parts[:depth]) or 'the config'} is a list: "
                                      f"{here} needs a list index (a number), not {part!r}")
                index = int(part)
                if not -len(node) <= index < len(node):
                    raise ConfigError(f"override {item!r}: {here}: index {index} is out of range (the list has "
                                      f"{len(node)} items)")
                if last:
                    node[index] = value
                else:
                    node = node[index]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            else:
                raise ConfigError(f"override {item!r}: {'.'.join(parts[:depth])} is a {type(node).__name__} value, "
                                  f"which has no key {part!r}")
    return data
