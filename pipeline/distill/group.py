"""Groups: many students of one held-out domain and seed trained from one data pass.

Runs that share a held-out domain, a seed and the batch plan (batch size, balance) see exactly the same
batches, so a group reads, decodes and replays each batch once and lets every member take its own step
on it (`trainer.train_together`). A member is one distinct student: the (method, grid config) pairs whose
effective configs are equal (`config.effective`: a method's weight preset applied, so ERM's six entries of
RISE's grid are one student) are trained once. It writes its own run folder `OUT/<method>-<hash>/`, named by
its content (`member_name`), with the same files as a run alone, and its metrics equal that run's (each
member draws from its own torch generator state; nothing else a member does touches the others).

What must be equal inside a pass: image size (the replayed batch is rendered at one size), batch size,
balance, seed, target domain, the number of loader workers and the device (`PASS_FIELDS`). Members that differ there are split into
several passes (`passes`); anything else -- student, method, loss weights, lr, epochs, ... -- may differ.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..config import from_mapping, to_dict
from ..errors import UserError
from .config import METHODS, MIXES, NON_RESULT_FIELDS, DistillConfig, effective

# The fields that decide the batches: members of one pass must agree on them.
PASS_FIELDS = ("target_domain", "seed", "image_size", "batch_size", "balance", "workers", "device", "threads")
# Fields a grid entry may not set: the group itself fixes them.
GROUP_FIELDS = ("target_domain", "method")
# Not in a member's name: the group folder holds them (domain, seed), they never change a result (workers,
# device), or they pin content found at run time (the weights' digest: the same path is the same member).
UNNAMED_FIELDS = ("target_domain", "seed", "checkpoint_sha256", *NON_RESULT_FIELDS)
# Run folders named by grid position, from before members were named by content.
LEGACY_NAME = re.compile(r".+-cfg\d+")


@dataclass(frozen=True)
class GroupMember:
    """One distinct student of a group: its method, its effective config, its folder name and the grid
    entries (indices) it stands for."""

    method: str
    name: str
    cfg: DistillConfig
    entries: tuple[int, ...] = (0,)


def member_name(cfg: DistillConfig) -> str:
    """`<method>-<8 hex>`: the first 8 hex digits of the SHA-256 of the effective config's canonical JSON,
    less UNNAMED_FIELDS. It depends on the content only, never on the grid entry's position, so reordering or
    inserting grid entries never renames (nor retrains) a student; paths are hashed as written."""
    named = {k: v for k, v in to_dict(effective(cfg)).items() if k not in UNNAMED_FIELDS}
    text = json.dumps(named, sort_keys=True, separators=(",", ":"), default=str)
    return f"{cfg.method}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def legacy_folders(out: Path) -> list[str]:
    """Run folders in group folder `out` named by grid position (`<method>-cfg<i>`, earlier releases)."""
    out = Path(out)
    if not out.is_dir():
        return []
    return sorted(p.name for p in out.iterdir() if p.is_dir() and LEGACY_NAME.fullmatch(p.name)
                  and ((p / "metrics.json").is_file() or (p / "config.json").is_file()))


def refuse_legacy(out: Path) -> None:
    """One line saying what to do with run folders named by grid position: they are not members any more."""
    old = legacy_folders(out)
    if old:
        raise UserError(f"{out} holds run folders named by grid position ({', '.join(old[:3])}"
                        f"{', ...' if len(old) > 3 else ''}) from an earlier release; members are now named by "
                        f"their config (e.g. rise-1a2b3c4d): move them out of {Path(out).parent} to keep them "
                        "(`rise-pipeline report FOLDER` reads them) or delete them, then rerun")


def parse_methods(value: str | list | tuple, where: str = "--method") -> list[str]:
    """`erm,kd,rise` (or a list) -> the methods, checked, in the order given, without repeats."""
    if not isinstance(value, (str, list, tuple)):
        raise UserError(f"{where}: expected a list of methods, got {value!r}")
    items = [str(m).strip() for m in (value.split(",") if isinstance(value, str) else value) if str(m).strip()]
    bad = [m for m in items if m not in METHODS]
    if bad or not items:
        raise UserError(f"{where}: unknown method {bad[0] if bad else '(none)'!r}; valid: {', '.join(METHODS)}")
    return list(dict.fromkeys(items))


def parse_grid(value) -> list[dict]:
    """A grid: a list of override dicts, given as JSON text, a JSON/YAML file path, or already a list.
    Unknown keys and keys the group fixes are one-line errors; so is a value the config refuses (a negative
    loss weight, lr 0, ...): each entry is built into a config over the defaults, which checks itself."""
    if isinstance(value, str):
        text = value.strip()
        path = Path(text)
        if not text.startswith(("[", "{")) and path.is_file():
            import yaml

            value = yaml.safe_load(path.read_text())
        else:
            try:
                value = json.loads(text)
            except json.JSONDecodeError as e:
                raise UserError(f"--grid: neither a file nor JSON ({e.msg} at column {e.colno})") from None
    if value is None:
        value = [{}]
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value) or not value:
        raise UserError("--grid must be a non-empty list of override mappings, e.g. [{\"w_dist\": 0.5}, {}]")
    names = {f.name for f in dataclasses.fields(DistillConfig)}
    for i, entry in enumerate(value):
        unknown = sorted(set(entry) - names)
        if unknown:
            raise UserError(f"grid entry {i}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        fixed = sorted(set(entry) & set(GROUP_FIELDS))
        if fixed:
            raise UserError(f"grid entry {i}: {', '.join(fixed)} is set by the group (--target-domain / --method), "
                            "not by a grid entry")
        try:
            from_mapping(DistillConfig, entry)
        except UserError as e:
            raise UserError(f"grid entry {i}: {e}") from None
    return [dict(entry) for entry in value]


def members(base: DistillConfig, methods: list[str], grid: list[dict]) -> list[GroupMember]:
    """The distinct students of methods x grid: each (method, grid config) pair resolved and its method's
    weight preset applied (`effective`); pairs with equal effective configs are one member, which lists the
    grid entries it stands for. Members of different methods are never merged (a method's row in the report
    is trained under its own name), even where two presets would give the same weights. With several
    --teachers, rise-mix and rise-mix-full mix them all and every other method distils the first."""
    out: dict[str, GroupMember] = {}
    for method in methods:
        for i, entry in enumerate(grid):
            values = {**to_dict(base), **entry, "method": method}
            if method not in MIXES:
                values["teachers"] = list(values["teachers"])[:1]
            cfg = effective(from_mapping(DistillConfig, values, "distill"))
            name = member_name(cfg)
            if name in out:
                out[name] = dataclasses.replace(out[name], entries=(*out[name].entries, i))
            else:
                out[name] = GroupMember(method, name, cfg, (i,))
    return list(out.values())


def passes(group: list[GroupMember], max_members: int = 0) -> list[list[GroupMember]]:
    """The group split into data passes: members that share the batches together (in group order), each
    pass at most `max_members` long when that is > 0."""
    by_key: dict[tuple, list[GroupMember]] = {}
    for m in group:
        by_key.setdefault(tuple(getattr(m.cfg, f) for f in PASS_FIELDS), []).append(m)
    out = []
    for same in by_key.values():
        size = max_members if max_members > 0 else len(same)
        out += [same[i:i + size] for i in range(0, len(same), size)]
    return out


def is_group(methods: list[str], grid: list[dict] | None) -> bool:
    """A single method without a grid keeps the single-run layout (OUT is the run folder)."""
    return len(methods) > 1 or grid is not None
