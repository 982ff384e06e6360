"""docs/options.md, generated from the config dataclasses: `python -m stages.options_doc > docs/options.md`.

Kept apart from `stages.options` so a command imports only its own step's config, not every step's.
"""

from __future__ import annotations

import dataclasses
import json
import typing

from pipeline.config import default_of
from stages.options import field_flag, flag_name

# The command that reads each section, and who else reads it.
COMMAND_OF = {"world": "world", "teacher": "pretrain-teacher", "student": "pretrain-student", "shard": "extract",
              "embed": "extract", "distill": "distill", "report": "report", "data": "sweep run",
              "sweep": "sweep run", "extra_teachers": "sweep run"}
ALSO_READ = {"world": " (and by `rise-pipeline pretrain-teacher`, for the classes, domains and image size, and "
                      "`rise-pipeline pretrain-student`, for the image size)"}
PLAN = (" and the sweep plan (`pipeline/plan.py`) that `distill --sweep`, `report --sweep-only` and dvc.yaml's "
        "distill and report stages follow")
for _name in ("data", "sweep"):
    ALSO_READ[_name] = PLAN + (", and by dvc.yaml's templates" if _name == "data" else
                               "; `extract` checks `domains` against the data")
ALSO_READ["extra_teachers"] = PLAN + "; a list of these entries, one embed stage each in dvc.yaml"


def sections() -> list[tuple[str, type]]:
    """(params.yaml section, config dataclass) of every step, in pipeline order."""
    from pipeline.demo.pretrain_student import StudentPretrainConfig
    from pipeline.demo.pretrain_teacher import PretrainConfig
    from pipeline.demo.world import WorldConfig
    from pipeline.distill.config import DistillConfig
    from pipeline.extract.embed_step import EmbedConfig
    from pipeline.extract.shard_step import ShardConfig
    from pipeline.params import DataConfig, SweepConfig, TeacherConfig
    from pipeline.report.step import ReportConfig

    return [("data", DataConfig), ("world", WorldConfig), ("teacher", PretrainConfig),
            ("student", StudentPretrainConfig), ("shard", ShardConfig), ("embed", EmbedConfig),
            ("distill", DistillConfig), ("extra_teachers", TeacherConfig), ("sweep", SweepConfig),
            ("report", ReportConfig)]


def _cli_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.metadata.get("cli", True)}


def _shared_note(section: str, all_sections: list[tuple[str, type]]) -> str:
    """Which flags of this section's command also set another section it reads (extract's `--seed`)."""
    command = COMMAND_OF[section]
    cls = dict(all_sections)[section]
    notes = []
    for other, other_cls in all_sections:
        if other != section and COMMAND_OF[other] == command:
            common = [n for n in (f.name for f in dataclasses.fields(cls)) if n in _cli_names(cls) & _cli_names(other_cls)]
            if common:
                flags = ", ".join(f"`{flag_name(n)}`" for n in common)
                notes.append(f"{flags} also set{'s' if len(common) == 1 else ''} `{other}`.")
    return " ".join(notes)


def options_markdown() -> str:
    """docs/options.md: every params.yaml key with its flag, default and help (generated)."""
    lines = ["# Options", "",
             "Generated from the config dataclasses by `python -m stages.options_doc > docs/options.md` (a test "
             "checks it is current). Each `params.yaml` section is one dataclass; a key's flag, where it has one, "
             "overrides the file (`--params params.yaml`), and the file overrides the default. A key with an "
             "underscore also takes its flag spelled with the underscore (`--w_kd`, as DVC's dict unpacking "
             "writes it). List flags take comma-separated values. Defaults are the library's (RISE's protocol "
             "for `distill`); the embedded demo's `params.yaml` overrides some of them for a 2-core machine.",
             ""]
    all_sections = sections()
    for section, cls in all_sections:
        hints = typing.get_type_hints(cls)
        lines += [f"## `{section}`", ""]
        read_by = f"Read by `rise-pipeline {COMMAND_OF[section]}`{ALSO_READ.get(section, '')}."
        shared = _shared_note(section, all_sections)
        lines += [f"{read_by} {shared}".rstrip(), ""]
        lines += ["| key | flag | default | |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            if not f.metadata.get("cli", True):
                flag = "params.yaml only"
            elif typing.get_origin(hints[f.name]) is list:
                flag = f"`{field_flag(f)}` (comma-separated)"
            else:
                flag = f"`{field_flag(f)}`"
            default = json.dumps(default_of(f))
            text = f.metadata.get("help", "").replace("|", "\\|")
            choices = f.metadata.get("choices")
            if choices:
                text += f" One of: {', '.join(map(str, choices))}."
            lines.append(f"| `{f.name}` | {flag} | `{default}` | {text} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(options_markdown(), end="")
