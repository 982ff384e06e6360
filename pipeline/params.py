"""The params.yaml sections that belong to no single step: `data` (paths), `sweep` (what dvc.yaml's distill stage trains)
and `extra_teachers` (rise-mix's other teacher stores), typed like every step's section.

Light on purpose (no torch, no distill code): the shard step's domain check reads `sweep.domains` from here
without depending on the distill code. `pipeline.plan` turns these sections into the sweep plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import field, from_mapping, load_section
from .errors import UserError
from .layout import DEFAULT_STORE, check_store_name, store_file


@dataclass
class DataConfig:
    """Where the data and stage one's outputs lie; relative paths are taken from the params file's folder."""

    root: str = field("data/world", "Dataset root (DATA/<domain>/<class>/<image>) or index file (.csv/.jsonl); "
                                    "dvc.yaml's shard stage reads it.", cli=False)
    work: str = field("data/work", f"Stage one's work folder (shards, manifest, {store_file()}); distill and the "
                                   "report read it.", cli=False)


@dataclass
class SweepConfig:
    """What dvc.yaml's distill stage trains: one group per held-out domain x seed, members methods x grid."""

    domains: list[str] = field([], "Held-out domains, each in turn (the shard step checks them against the data).",
                               cli=False)
    methods: list[str] = field(["rise"], "Methods of every group (erm, kd, rise, rise-abs, rise-rel; rise-mix "
                                         "joins when extra_teachers is not empty).", cli=False)
    seeds: list[int] = field([0], "Seeds; the report gives mean ± std over them.", cli=False)
    grid: list[dict] = field([{}], "Distill overrides, one config each; members with equal effective configs "
                                   "are one student (`rise-pipeline sweep grid NAME` sets RISE's grids).", cli=False)
    jobs: int = field(1, "Groups trained at once on this machine by dvc.yaml's distill stage and `sweep run` "
                         "(local worker processes, one group each at a time; speed only, never a result). 1: one "
                         "group after another in one process. On a CPU, one per core with distill.threads 1 "
                         "uses every core where one group's small steps cannot.", cli=False)

    def __post_init__(self) -> None:
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1:
            raise UserError(f"sweep.jobs must be an integer >= 1, got {self.jobs!r}")


@dataclass
class TeacherConfig:
    """One entry of `extra_teachers`: a teacher store besides the default one (one embed stage each)."""

    name: str = field("", f"Store name: WORK/{store_file('NAME')} (not 'default').", cli=False)
    model: str = field("", "open_clip model name (as embed.model).", cli=False)
    pretrained: str = field("", "open_clip pretrained tag or checkpoint file (as embed.pretrained).", cli=False)

    def __post_init__(self) -> None:
        """An entry names all three (its empty defaults only document the fields) and a store of its own."""
        given = [k for k in ("model", "name", "pretrained") if getattr(self, k)]
        if len(given) < 3:
            raise UserError(f"needs name, model and pretrained, got {given}")
        if self.name == DEFAULT_STORE:
            raise UserError("'default' is the main teacher's store; name it otherwise")
        check_store_name(self.name)


def load_data(params: dict) -> DataConfig:
    return load_section(DataConfig, params, "data")


def load_sweep(params: dict) -> SweepConfig:
    """The `sweep` section, typed (a YAML domain folder named 2007 becomes "2007")."""
    if not isinstance(params.get("sweep"), dict):
        raise UserError("params has no 'sweep' section (domains, methods, seeds, grid)")
    return load_section(SweepConfig, params, "sweep")


def load_extra_teachers(params: dict) -> list[TeacherConfig]:
    """`extra_teachers`: a list of {name, model, pretrained}, each name once and none 'default'."""
    value = params.get("extra_teachers") or []
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise UserError("extra_teachers must be a list of {name, model, pretrained} mappings")
    teachers = []
    for i, t in enumerate(value):
        where = f"extra_teachers[{i}]"
        try:
            teachers.append(from_mapping(TeacherConfig, t, where))
        except UserError as e:  # the entry's own check does not know its place in the list
            raise UserError(str(e) if where in str(e) else f"{where}: {e}") from None
    names = [t.name for t in teachers]
    if len(set(names)) != len(names):
        raise UserError(f"extra_teachers: each name once, got {names}")
    return teachers
