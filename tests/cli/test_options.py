"""One source per option: each command's flags, their `--help` defaults, docs/options.md and what params.yaml
may hold all follow the config dataclasses (docs/design.md, "One source per option").

Expectations are computed here from `dataclasses.fields`, not from the generator in `stages.options`."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO

from pipeline.config import load_section, read_params
from pipeline.demo.pretrain_student import StudentPretrainConfig
from pipeline.demo.pretrain_teacher import PretrainConfig
from pipeline.demo.world import WorldConfig
from pipeline.distill.config import DistillConfig
from pipeline.extract.embed_step import EmbedConfig
from pipeline.extract.shard_step import ShardConfig
from pipeline.params import DataConfig, SweepConfig, TeacherConfig
from pipeline.report.step import ReportConfig
from stages.cli import cli
from stages.options_doc import options_markdown, sections

# Which config classes each command exposes, and the (section, class) pairs in params.yaml.
COMMANDS = {
    "extract": [("shard", ShardConfig), ("embed", EmbedConfig)],
    "distill": [("distill", DistillConfig)],
    "report": [("report", ReportConfig)],
    "world": [("world", WorldConfig)],
    "pretrain-teacher": [("teacher", PretrainConfig)],
    "pretrain-student": [("student", StudentPretrainConfig)],
}
# Options a command declares itself (paths, step choice...): not config fields, so not in params.yaml.
OWN_OPTIONS = {
    "extract": {"--data-root", "--work", "--steps", "--params", "--scheduler", "-h"},
    "distill": {"--work", "--out", "--params", "--grid", "--sweep", "--max-members", "--restart-stale", "-h"},
    "report": {"--out", "--params", "--sweep-only", "--work", "-h"},
    "world": {"--out", "--params", "--captions", "--grid", "-h"},
    "pretrain-teacher": {"--out", "--params", "-h"},
    "pretrain-student": {"--out", "--params", "-h"},
}


def _default(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _shown(value) -> str:
    """How `--help` must print a default: true/false, comma-joined lists, (none) for empty."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "(none)"
    if value == "":
        return "(none)"
    return str(value)


def _listed_flag(f: dataclasses.Field) -> str:
    """The flag `--help` lists a field under: its `flag` metadata (`--ON/--OFF` for a switch), else its key."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _cli_fields(command: str) -> dict[str, list[tuple[str, dataclasses.Field, type]]]:
    """flag name -> [(section, field, annotation)] of every field with cli=True metadata."""
    out: dict[str, list] = {}
    for section, cls in COMMANDS[command]:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("cli", True):
                out.setdefault(_listed_flag(f).split("/")[0], []).append((section, f, hints[f.name]))
    return out


def _help_records(command: str) -> dict[str, str]:
    """First flag of each option in `rise-pipeline COMMAND --help` -> its whole entry on one line."""
    result = CliRunner().invoke(cli, [command, "--help"], prog_name="rise-pipeline", terminal_width=100_000)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: rise-pipeline {command} ")
    records: list[str] = []
    for line in result.output.split("\nOptions:\n", 1)[1].splitlines():
        if line.startswith("  -"):
            records.append(line.strip())
        elif line.strip() and records:
            records[-1] += " " + line.strip()
    return {r.split()[0].rstrip(","): r for r in records}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_shows_every_cli_field_with_its_dataclass_default(command):
    records = _help_records(command)
    fields = _cli_fields(command)
    assert set(records) == set(fields) | OWN_OPTIONS[command]
    for flag, owners in fields.items():
        record = records[flag]
        defaults = [_default(f) for _, f, _ in owners]
        if all(d == defaults[0] for d in defaults):
            expected = _shown(defaults[0])
        else:  # extract's --workers: one flag, a different default per section
            expected = ", ".join(f"{section} {_shown(d)}" for (section, _, _), d in zip(owners, defaults, strict=True))
        assert record.endswith(f"[default: {expected}]"), record
        name = owners[0][1].name
        tokens = {t.rstrip(",") for t in record.split()}
        if owners[0][1].metadata.get("flag"):  # its own flag, listed alone; the key's spellings are unlisted aliases
            assert record.startswith(owners[0][1].metadata["flag"].replace("/", " / ") + " "), record
            assert f"--{name}" not in tokens and f"--no-{name}" not in tokens, record
        elif owners[0][2] is bool:
            assert f"--no-{flag[2:]}" in tokens, record
            if "_" in name:
                assert f"--no-{name}" in tokens, record
        if "_" in name and not owners[0][1].metadata.get("flag"):
            assert f"--{name}" in tokens, record  # DVC's dict unpacking writes the key as it is
        for (section, f, _) in owners:
            first_words = f.metadata["help"].rstrip(".")[:30]
            assert first_words in record, (section, record)
        choices = owners[0][1].metadata.get("choices")
        if choices:
            assert f"[{'|'.join(choices)}]" in record, record
    hidden = {"--" + f.name.replace("_", "-") for _, cls in COMMANDS[command] for f in dataclasses.fields(cls)
              if not f.metadata.get("cli", True)} - set(fields)
    assert not hidden & set(records), f"params-only keys with a flag: {hidden & set(records)}"


def test_options_doc_is_current():
    assert (REPO / "docs" / "options.md").read_text(encoding="utf-8") == options_markdown(), \
        "regenerate it: python -m stages.options_doc > docs/options.md"


def test_options_doc_covers_every_section_and_key():
    text = options_markdown()
    for section, cls in sections():
        assert f"## `{section}`" in text
        for f in dataclasses.fields(cls):
            flag = "params.yaml only" if not f.metadata.get("cli", True) else f"`{_listed_flag(f)}`"
            assert f"| `{f.name}` | {flag}" in text, (section, f.name)


def test_repo_params_yaml_loads_into_the_dataclasses():
    params = read_params(REPO / "params.yaml")
    configs = dict(sections())
    # `data` (paths), `sweep` (the distill matrix) and `extra_teachers` (rise-mix's stores) are the sweep plan's
    # sections (pipeline.params): typed like the others, set in params.yaml only.
    plan_sections = {"data": DataConfig, "sweep": SweepConfig, "extra_teachers": TeacherConfig}
    assert set(configs) == {s for pairs in COMMANDS.values() for s, _ in pairs} | set(plan_sections)
    assert set(params) == set(configs)
    assert all(not f.metadata["cli"] for cls in plan_sections.values() for f in dataclasses.fields(cls))
    for t in params["extra_teachers"] or [{"name": "x", "model": "m", "pretrained": "p"}]:
        assert set(t) == {f.name for f in dataclasses.fields(TeacherConfig)}
    for section, cls in configs.items():
        if section == "extra_teachers":  # a list of entries, not a mapping
            continue
        cfg = load_section(cls, params, section)  # unknown keys or wrong types raise UserError
        assert set(params[section]) <= {f.name for f in dataclasses.fields(cls)}
        assert dataclasses.asdict(cfg).keys() == {f.name for f in dataclasses.fields(cls)}


def _argv(section: str, params: Path, tmp: Path) -> list[str]:
    """A command line that reads `section` from `params` before doing any work."""
    return {
        "world": ["world", "--out", str(tmp / "w")],
        "teacher": ["pretrain-teacher", "--out", str(tmp / "t")],
        "student": ["pretrain-student", "--out", str(tmp / "s")],
        "shard": ["extract", "--data-root", str(tmp), "--out", str(tmp / "work"), "--steps", "shard"],
        "embed": ["extract", "--out", str(tmp / "work"), "--steps", "embed"],
        "distill": ["distill", "--work", str(tmp / "work"), "--out", str(tmp / "run")],
        "report": ["report", str(tmp), "--out", str(tmp / "report")],
        "data": ["sweep", "run", "--dry-run"],
        "sweep": ["sweep", "run", "--dry-run"],
    }[section] + ["--params", str(params)]


def _params_with(tmp_path: Path, section: str, **values) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params[section].update(values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _one_error_line(rc: int, out: str, err: str) -> str:
    assert rc == 2 and out == "", (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("section", [s for s, _ in sections() if s != "extra_teachers"])  # a list, not a mapping
def test_typo_key_in_params_is_one_line_naming_the_valid_keys(section, tmp_path, cli):
    cls = dict(sections())[section]
    valid = [f.name for f in dataclasses.fields(cls)]
    typo = valid[0] + valid[0][-1]
    params = _params_with(tmp_path, section, **{typo: 1})
    line = _one_error_line(*cli(*_argv(section, params, tmp_path), in_process=True))
    assert f"params section '{section}'" in line and f"unknown key(s) {typo}" in line
    assert line.endswith("valid: " + ", ".join(sorted(valid)))
    assert not (tmp_path / "work").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("section,key,flag,argv_extra", [
    ("distill", "method", "--method", []),
    ("embed", "precision", "--precision", []),
    ("embed", "dtype", "--dtype", []),
    ("distill", "device", "--device", []),
])
def test_bad_choice_is_one_line_as_flag_and_in_params(section, key, flag, argv_extra, tmp_path, cli):
    cls = dict(sections())[section]
    choices = next(f.metadata["choices"] for f in dataclasses.fields(cls) if f.name == key)
    plain = _params_with(tmp_path, section)
    line = _one_error_line(*cli(*_argv(section, plain, tmp_path), flag, "bogus", in_process=True))
    assert flag in line and "'bogus'" in line and all(c in line for c in choices), line
    bad = _params_with(tmp_path, section, **{key: "bogus"})
    line = _one_error_line(*cli(*_argv(section, bad, tmp_path), in_process=True))
    assert line == f"error: {section}.{key}: 'bogus' is not one of {', '.join(choices)}"


def test_flags_override_params_which_override_defaults(tmp_path, cli, monkeypatch):
    """The values a step receives: flag, else params.yaml, else the dataclass default. Underscore and
    boolean spellings (as DVC's dict unpacking writes them) reach the same fields."""
    import pipeline.distill.step as distill_step
    import pipeline.extract.embed_step as embed_step
    import pipeline.extract.shard_step as shard_step

    got: dict[str, object] = {}
    monkeypatch.setattr(distill_step, "run", lambda cfg, **kw: got.update(distill=cfg))
    monkeypatch.setattr(shard_step, "run", lambda cfg, **kw: got.update(shard=cfg))
    monkeypatch.setattr(embed_step, "run", lambda cfg, **kw: got.update(embed=cfg))

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"distill": {"lr": 0.5, "epochs": 3, "pretrained": True},
                                      "embed": {"views": 4}}))
    rc, _, err = cli("distill", "--params", params, "--work", "w", "--out", "r", "--target-domain", "x",
                     "--epochs", "4", "--w_kd", "0.9", "--no-pretrained", "--text_ensemble", in_process=True)
    assert rc == 0, err
    cfg = got["distill"]
    assert (cfg.lr, cfg.epochs, cfg.w_kd, cfg.pretrained, cfg.text_ensemble) == (0.5, 4, 0.9, False, True)
    assert cfg.w_ce == DistillConfig().w_ce and cfg.method == DistillConfig().method

    rc, _, err = cli("extract", "--params", params, "--data-root", tmp_path, "--out", "w", in_process=True)
    assert rc == 0, err
    assert (got["shard"].workers, got["embed"].workers) == (ShardConfig().workers, EmbedConfig().workers)
    assert got["embed"].views == 4
    rc, _, err = cli("extract", "--data-root", tmp_path, "--out", "w", "--workers", "3", "--seed", "5",
                     in_process=True)
    assert rc == 0, err
    assert (got["shard"].workers, got["embed"].workers, got["shard"].seed, got["embed"].seed) == (3, 3, 5, 5)


@pytest.mark.parametrize("command", ["extract", "distill", "report"])
def test_readme_usage_lists_every_flag(command):
    """The README's usage block of each stage names exactly the flags its --help has."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
              if b.startswith(f"rise-pipeline {command} ")]
    assert len(blocks) == 1, f"one usage block for {command}"
    listed = {m.split("/")[0] for m in re.findall(r"(?<![\w-])--[a-z][a-z-]*(?:/--[a-z-]+)?", blocks[0])}
    assert listed == set(_help_records(command)) - {"-h"}
