"""The sweep plan: one function turns a params file into everything a sweep does (docs/design.md, "One plan").

`plan_sweep(params_path)` resolves `data`, `distill`, `sweep` and `extra_teachers` into the groups of dvc.yaml's
distill stage (one per held-out domain x seed), each group's distinct students (`group.members`: a method's
weight preset applied, equal configs trained once, folders named by content), their run folders and the
report's inputs -- every path absolute, relative ones taken from the params file's folder as DVC does, so a
worker started in another folder finds the same files. `distill --sweep`, `sweep run` (and its dry run),
`report --sweep-only` and dvc.yaml's distill and report commands all follow it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .config import load_section, read_params, to_dict
from .distill.config import MIX, DistillConfig, pin_checkpoint, result_config
from .distill.group import GroupMember, members, parse_grid, parse_methods
from .errors import UserError
from .params import DataConfig, SweepConfig, TeacherConfig, load_data, load_extra_teachers, load_sweep

RUNS = "data/runs"      # as in dvc.yaml, relative to the params file's folder
REPORT = "data/report"


@dataclass(frozen=True)
class Group:
    """One group of the sweep: a held-out domain and seed, and its distinct students."""

    key: str                          # `<domain>-<seed>`, the group's key and its run folder's name
    domain: str
    seed: int
    out: Path                         # RUNS/<key>, absolute
    members: tuple[GroupMember, ...]  # effective configs, checkpoint absolute and pinned when the file exists
    work: Path

    @property
    def teachers(self) -> list[str]:
        return list(dict.fromkeys(t for m in self.members for t in m.cfg.teachers))


@dataclass(frozen=True)
class SweepPlan:
    params_path: Path
    root: Path                        # the params file's folder: DVC's working folder
    data: DataConfig                  # paths absolute
    sweep: SweepConfig
    extra_teachers: tuple[TeacherConfig, ...]
    methods: tuple[str, ...]          # sweep.methods, plus rise-mix with extra teachers
    grid: tuple[dict, ...]
    base: DistillConfig               # the distill section (+ overrides), paths as written
    groups: tuple[Group, ...]

    @property
    def work(self) -> Path:
        return Path(self.data.work)

    @property
    def runs(self) -> Path:
        return self.root / RUNS

    @property
    def report(self) -> Path:
        return self.root / REPORT

    def group(self, domain: str, seed: int) -> Group:
        """The group of (domain, seed) -- the plan's own, or built by the same rule for one outside it."""
        for g in self.groups:
            if g.domain == str(domain) and g.seed == seed:
                return g
        return _group(self, str(domain), seed)

    def expected_runs(self) -> dict[str, dict]:
        """The report's inputs: `<group>/<member>` -> the result config its metrics.json must record."""
        return {f"{g.key}/{m.name}": result_config(to_dict(m.cfg)) for g in self.groups for m in g.members}


def _absolute(root: Path, path: str) -> str:
    return str((root / path).resolve()) if path else path


def plan_sweep(params_path: str | Path, overrides: dict | None = None, need_groups: bool = True) -> SweepPlan:
    """The sweep of `params_path` (see the module docstring). `overrides`: distill flags given on a command
    line (None = not given), applied to the distill section as `distill` applies them. `need_groups=False`:
    empty sweep.domains or seeds are allowed (`distill --sweep` names its group's domain and seed itself)."""
    params_path = Path(params_path)
    params = read_params(params_path)
    root = params_path.resolve().parent
    data = load_data(params)
    data = dataclasses.replace(data, root=_absolute(root, data.root), work=_absolute(root, data.work))
    sweep = load_sweep(params)
    for name in ("domains", "seeds") if need_groups else ():
        if not getattr(sweep, name):
            raise UserError(f"sweep.{name} must be a non-empty list")
    methods = parse_methods(sweep.methods, "sweep.methods")
    grid = parse_grid(sweep.grid or [{}])
    extra = load_extra_teachers(params)
    from .layout import DEFAULT_STORE

    if extra and MIX not in methods:
        methods.append(MIX)
    teachers = [DEFAULT_STORE, *(t.name for t in extra)]
    base = load_section(DistillConfig, params, "distill",
                        {**(overrides or {}), "method": methods[0],
                         "teachers": teachers if len(teachers) > 1 else (overrides or {}).get("teachers")})
    plan = SweepPlan(params_path, root, data, sweep, tuple(extra), tuple(methods), tuple(grid), base, ())
    groups = tuple(_group(plan, str(d), s) for d in sweep.domains for s in sweep.seeds)
    keys = [g.key for g in groups]
    if len(set(keys)) != len(keys):
        raise UserError(f"sweep.domains x sweep.seeds repeat a group: {', '.join(sorted(keys))}")
    return dataclasses.replace(plan, groups=groups)


def _group(plan: SweepPlan, domain: str, seed: int) -> Group:
    """A group's members, named from the config as written (paths as in params.yaml), then made runnable
    anywhere: the checkpoint absolute and, when the file is there, pinned by its SHA-256 as a run pins it."""
    base = dataclasses.replace(plan.base, target_domain=domain, seed=seed)
    resolved = []
    for m in members(base, list(plan.methods), list(plan.grid)):
        cfg = dataclasses.replace(m.cfg, checkpoint=_absolute(plan.root, m.cfg.checkpoint))
        if cfg.pretrained and cfg.checkpoint and Path(cfg.checkpoint).is_file():
            cfg = pin_checkpoint(cfg)
        resolved.append(dataclasses.replace(m, cfg=cfg))
    key = f"{domain}-{seed}"
    return Group(key, domain, seed, plan.runs / key, tuple(resolved), plan.work)
