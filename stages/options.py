"""Command-line flags generated from the library's config dataclasses: one source per option.

A step's options are declared once, as fields of its config dataclass (`pipeline.config.field`: name,
type, default, help, choices). `config_options(ShardConfig, ...)` turns them into click options, so the
flags, their `--help` (which shows the dataclass default) and docs/options.md (`python -m stages.options_doc`)
cannot drift from the config that `params.yaml` is validated against.

Every generated option defaults to None ("not given"): the value then comes from the `--params` file's
section or, failing that, from the dataclass default. A flag always wins.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import typing
from collections.abc import Callable

import click

from pipeline.config import default_of

PARAMS_HELP = ("params.yaml to read this command's section(s) from. Its values replace the defaults "
               "shown here; flags replace both.")


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def field_flag(f: dataclasses.Field) -> str:
    """The flag a field is listed under: its own `flag` (distill's `--from-pretrained/--from-scratch`), else
    its key spelled with dashes."""
    return f.metadata.get("flag") or flag_name(f.name)


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


def _section_of(cls: type) -> str:
    """The label a shared option uses for one of its classes: `ShardConfig` -> "shard"."""
    return cls.__name__.removesuffix("Config").lower()


class AliasedOption(click.Option):
    """An option with old spellings (`aliases`) that still parse but are left out of `--help` and of error
    messages, so each concept shows one name."""

    def __init__(self, param_decls, *, aliases: tuple[str, ...] = (), **attrs):
        super().__init__(param_decls, **attrs)
        self.aliases = {n for decl in aliases for n in decl.split("/")}

    @contextlib.contextmanager
    def _shown_names(self):
        names = self.opts, self.secondary_opts
        self.opts = [o for o in self.opts if o not in self.aliases]
        self.secondary_opts = [o for o in self.secondary_opts if o not in self.aliases]
        try:
            yield
        finally:
            self.opts, self.secondary_opts = names

    def get_help_spec(self, ctx):
        with self._shown_names():
            return super().get_help_spec(ctx)

    def get_error_hint(self, ctx):
        with self._shown_names():
            return super().get_error_hint(ctx)


def aliased_option(*param_decls: str, aliases: tuple[str, ...], **attrs) -> Callable:
    """`click.option(*param_decls, ...)` that also accepts the old spellings `aliases`, unlisted."""
    return click.option(*param_decls, *aliases, cls=AliasedOption, aliases=aliases, **attrs)


def _option(name: str, owners: list[tuple[type, dataclasses.Field, object]], many: bool = False) -> Callable:
    """One click option for field `name`, declared by one or (extract's `seed`, `workers`) several classes.

    A shared option sets the field in every class; its help joins each class's help, and its default says
    per class what applies when the option is not given."""
    f, annotation = owners[0][1], owners[0][2]
    base = _base_type(annotation)
    choices = f.metadata.get("choices")
    if len(owners) == 1:
        text = f.metadata.get("help", "")
        shown = _show(default_of(f))
    else:
        text = "; ".join(f"{_section_of(cls)}: {g.metadata.get('help', '').rstrip('.')}" for cls, g, _ in owners) + "."
        defaults = [default_of(g) for _, g, _ in owners]
        shown = _show(defaults[0]) if all(d == defaults[0] for d in defaults) else \
            ", ".join(f"{_section_of(cls)} {_show(default_of(g))}" for cls, g, _ in owners)
    if base is list:
        text += " (comma-separated)"
    metavar = None
    if many:  # the command takes a list of values (one run each); the command checks each against the choices
        text += " One or several, comma-separated."
        metavar = f"[{'|'.join(map(str, choices))}][,...]" if choices else "VALUE[,...]"
        choices = None
    text = f"{text} [default: {shown}]"
    decls = [flag_name(name)]
    if "_" in name:
        decls.append("--" + name)  # DVC's dict unpacking writes `--w_kd 0.9`
    if base is bool:
        # DVC writes a true boolean as `--text_ensemble` (and, with parsing.bool: boolean_optional, a false one
        # as `--no-text_ensemble`), so the underscore spelling is accepted here too.
        decls = [f"{n}/--no-{n[2:]}" for n in decls]
    if f.metadata.get("flag"):  # the key's spellings stay accepted, unlisted: DVC's dict unpacking writes them
        option = functools.partial(aliased_option, field_flag(f), name, aliases=tuple(decls))
    else:
        option = functools.partial(click.option, *decls, name)
    option = functools.partial(option, default=None, help=text)
    if base is bool:
        return option()
    if choices:
        kind = click.Choice([str(c) for c in choices])
    elif base is list:
        kind = str
    else:
        kind = {int: int, float: float, str: str}.get(base, str)
    return option(type=kind, metavar=metavar)


def config_options(*classes: type, many: tuple[str, ...] = ()) -> Callable:
    """Decorator adding one click option per CLI field of `classes` (in declaration order).

    Fields with `cli=False` metadata (mappings, free-text lists, params-only switches) get no flag. A field
    name present in several classes (extract's `seed`, `workers`) becomes one option that sets all of them.
    Fields named in `many` take a comma-separated list (distill's `--method erm,kd,rise`: a group)."""
    owners: dict[str, list] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("cli", True):
                owners.setdefault(f.name, []).append((cls, f, hints[f.name]))
    for name, found in owners.items():
        kinds = {_base_type(ann) for _, _, ann in found}
        if len(kinds) > 1:
            raise TypeError(f"option --{name} is declared with different types: {sorted(map(str, kinds))}")
    decorators = [_option(name, found, name in many) for name, found in owners.items()]

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
