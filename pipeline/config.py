"""Typed configuration: one `params.yaml` section -> one dataclass, CLI overrides on top.

Each step declares a dataclass whose fields are the single source of every option: name, type, default,
one-line help and allowed choices live in the field (`field(...)`). The command-line flags, their
`--help` and docs/options.md are generated from these fields (`stages.options`), and `load_section`
validates `params.yaml` against them: it reads the section, rejects unknown keys (a typo must not
silently fall back to a default), applies the command-line overrides that are not None, checks types
and choices, and returns the dataclass. `to_dict` gives the resolved config every step writes next to
its outputs.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import UserError

T = TypeVar("T")


def field(default: Any, help: str, *, choices: tuple | None = None, cli: bool = True,  # noqa: A002
          flag: str | None = None) -> Any:
    """A dataclass field with its default, a one-line explanation and, optionally, the allowed values.

    `cli=False` keeps a field out of the generated command-line flags (mappings such as `class_map` are
    set in params.yaml only); it is still validated there and documented. `flag` names the flag when the
    key's own spelling would mean something else on the command line (`--ON/--OFF` for a switch); the key's
    spelling then stays accepted, unlisted, because DVC's dict unpacking writes it."""
    metadata = {"help": help, "choices": tuple(choices) if choices else None, "cli": cli, "flag": flag}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def default_of(f: dataclasses.Field) -> Any:
    """A field's default value (calling its factory for lists and dicts)."""
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def read_params(path: str | os.PathLike | None) -> dict:
    """Read a params.yaml; a missing file given explicitly is a user error, None means no file."""
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise UserError(f"params file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"cannot parse {p}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of sections at the top level")
    return data


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check/convert one value against a field annotation (the handful of types configs use)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(name, value, non_none[0])
    if annotation is Any:
        return value
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{name}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return [_coerce(name, v, inner) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{name}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{name}: expected true/false, got {value!r}")
    if annotation in (int, float, str):
        if annotation is not str and isinstance(value, bool):
            raise UserError(f"{name}: expected a number, got {value!r}")
        try:
            out = annotation(value)
        except (TypeError, ValueError):
            raise UserError(f"{name}: expected {annotation.__name__}, got {value!r}") from None
        if annotation is int and isinstance(value, float) and value != out:
            raise UserError(f"{name}: expected an integer, got {value!r}")
        return out
    return value


def from_mapping(cls: type[T], mapping: dict, section: str = "") -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and checking types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - names)
    where = f"params section '{section}'" if section else cls.__name__
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(f"{section}.{k}" if section else k, v, hints[k]) for k, v in mapping.items()}
    for f in dataclasses.fields(cls):
        choices = f.metadata.get("choices")
        if choices and f.name in kwargs and kwargs[f.name] not in choices:
            name = f"{section}.{f.name}" if section else f.name
            raise UserError(f"{name}: {kwargs[f.name]!r} is not one of {', '.join(map(str, choices))}")
    return cls(**kwargs)


def load_section(cls: type[T], params: dict, section: str, overrides: dict | None = None) -> T:
    """params[section] -> cls, then CLI overrides (None means 'not given on the command line')."""
    raw = params.get(section) or {}
    if not isinstance(raw, dict):
        raise UserError(f"params section '{section}' must be a mapping")
    merged = dict(raw)
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return from_mapping(cls, merged, section)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)

