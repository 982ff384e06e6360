"""Command-line flags generated from the library's config dataclasses: one source per option.

A step's options are declared once, as fields of its config dataclass (`pipeline.config.field`: name,
type, default, help, choices). `config_options(ShardConfig, ...)` turns them into click options, so the
flags, their `--help` (which shows the dataclass default) and docs/options.md (`python -m stages.options_doc`)
cannot drift from the config that `params.yaml` is validated against.

Every generated option defaults to None ("not given"): the value then comes from the `--params` file's
section or, failing that, from the dataclass default. A flag always wins.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable

import click

from pipeline.config import default_of

PARAMS_HELP = ("params.yaml to read this command's section(s) from. Its values replace the defaults "
               "shown here; flags replace both.")


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(annotation):
    origin = typing.get_origin(annotation)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    return origin or annotation


def _show(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) if value else "(none)"
    if isinstance(value, str) and not value:
        return "(none)"
    return str(value)


def _option(f: dataclasses.Field, annotation, also: str = "") -> Callable:
    base = _base_type(annotation)
    default = default_of(f)
    choices = f.metadata.get("choices")
    text = f.metadata.get("help", "")
    if also:
        text = f"{text} ({also})"
    text = f"{text} [default: {_show(default)}]"
    names = [flag_name(f.name)]
    if "_" in f.name:
        names.append("--" + f.name)  # DVC's dict unpacking writes `--w_kd 0.9`
    if base is bool:
        pos = flag_name(f.name)
        return click.option(f"{pos}/--no-{pos[2:]}", f.name, default=None, help=text)
    if choices:
        kind = click.Choice([str(c) for c in choices])
    elif base is list:
        kind, text = str, text.replace("[default:", "(comma-separated) [default:")
    else:
        kind = {int: int, float: float, str: str}.get(base, str)
    return click.option(*names, f.name, type=kind, default=None, help=text, metavar=None)


def config_options(*classes: type, skip: tuple[str, ...] = (), shared: dict[str, str] | None = None) -> Callable:
    """Decorator adding one click option per CLI field of `classes` (in declaration order).

    A field name present in several classes (extract's `seed`, `workers`) becomes one option that sets
    all of them; `shared[name]` says so in its help."""
    seen: dict[str, tuple] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in skip or not f.metadata.get("cli", True) or f.name in seen:
                continue
            seen[f.name] = (f, hints[f.name])
    decorators = [_option(f, ann, (shared or {}).get(name, "")) for name, (f, ann) in seen.items()]

    def apply(fn: Callable) -> Callable:
        for deco in reversed(decorators):
            fn = deco(fn)
        return fn

    return apply


def overrides_for(cls: type, values: dict) -> dict:
    """The command-line values that belong to `cls` (None: not given)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def params_option(fn: Callable) -> Callable:
    from pathlib import Path

    return click.option("--params", "params_path", type=click.Path(path_type=Path), default=None,
                        help=PARAMS_HELP)(fn)
