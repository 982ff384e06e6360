"""Groups: many students of one held-out domain and seed trained from one data pass.

Runs that share a held-out domain, a seed and the batch plan (batch size, balance) see exactly the same
batches, so a group reads, decodes and replays each batch once and lets every member take its own step
on it (`trainer.train_together`). A member is one (method, grid config) pair; it writes its own run folder
`OUT/<method>-cfg<i>/` with the same files as a run alone, and its metrics equal that run's (each member
draws from its own torch generator state; nothing else a member does touches the others).

What must be equal inside a pass: image size (the replayed batch is rendered at one size), batch size,
balance, seed, target domain and the number of loader workers. Members that differ there are split into
several passes (`passes`); anything else -- student, method, loss weights, lr, epochs, ... -- may differ.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..config import from_mapping, to_dict
from ..errors import UserError
from .config import METHODS, MIX, DistillConfig, check_weight

# The fields that decide the batches: members of one pass must agree on them.
PASS_FIELDS = ("target_domain", "seed", "image_size", "batch_size", "balance", "workers", "device", "threads")
# Fields a grid entry may not set: the group itself fixes them.
GROUP_FIELDS = ("target_domain", "method")


@dataclass(frozen=True)
class GroupMember:
    """One student of a group: its method, its grid config's index and its resolved config."""

    method: str
    index: int
    cfg: DistillConfig

    @property
    def name(self) -> str:
        return f"{self.method}-cfg{self.index}"


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
    Unknown keys, keys the group fixes, and negative or non-finite loss weights are one-line errors."""
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
        for key in ("w_kd", "w_ce", "w_dist", "lr", "temperature"):
            if key in entry:
                v = entry[key]
                if key.startswith("w_"):
                    check_weight(f"grid entry {i}: {key}", v)
                elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                    raise UserError(f"grid entry {i}: {key} must be a finite number > 0, got {v!r}")
    return [dict(entry) for entry in value]


def members(base: DistillConfig, methods: list[str], grid: list[dict]) -> list[GroupMember]:
    """Every (method, grid config) pair as a member with its resolved, validated config. With several
    --teachers, rise-mix mixes them all and every other method distils the first."""
    out = []
    for method in methods:
        for i, entry in enumerate(grid):
            values = {**to_dict(base), **entry, "method": method}
            if method != MIX:
                values["teachers"] = list(values["teachers"])[:1]
            cfg = from_mapping(DistillConfig, values, "distill")
            out.append(GroupMember(method, i, cfg))
    return out


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


def parse_extra_teachers(value) -> list[dict]:
    """params.yaml's `extra_teachers`: [{name, model, pretrained}, ...], the teachers besides the default
    store that rise-mix mixes (one embed stage each in dvc.yaml). Empty: no rise-mix in the sweep."""
    value = value or []
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise UserError("extra_teachers must be a list of {name, model, pretrained} mappings")
    from ..store import DEFAULT_STORE, store_file

    for i, t in enumerate(value):
        missing = [k for k in ("name", "model", "pretrained") if not t.get(k)]
        if missing or set(t) - {"name", "model", "pretrained"}:
            raise UserError(f"extra_teachers[{i}] needs exactly name, model and pretrained, got {sorted(t)}")
        store_file(str(t["name"]))  # a usable store name
        if t["name"] == DEFAULT_STORE:
            raise UserError(f"extra_teachers[{i}]: '{DEFAULT_STORE}' is the main teacher's store; name it otherwise")
    names = [t["name"] for t in value]
    if len(set(names)) != len(names):
        raise UserError(f"extra_teachers: each name once, got {names}")
    return value


def sweep_members(sweep: dict, extra_teachers) -> tuple[list[str], list[dict], list[str]]:
    """(methods, grid, teachers) of dvc.yaml's groups: `sweep.methods` x `sweep.grid`, plus rise-mix over
    the default and every extra teacher when there are extra teachers."""
    methods = parse_methods(sweep.get("methods") or [], "sweep.methods")
    grid = parse_grid(sweep.get("grid") or [{}])
    extra = [t["name"] for t in parse_extra_teachers(extra_teachers)]
    if extra and MIX not in methods:
        methods.append(MIX)
    from ..store import DEFAULT_STORE

    return methods, grid, [DEFAULT_STORE, *extra]


def is_group(methods: list[str], grid: list[dict] | None) -> bool:
    """A single method without a grid keeps the single-run layout (OUT is the run folder)."""
    return len(methods) > 1 or grid is not None
