"""One vocabulary across the commands: one name per concept in `--help` (the work folder `--work`, the
teacher `--model` / `--pretrained`, distill's `--from-pretrained/--from-scratch`, `--workers -1` for one per
core), the old spellings still accepted; -q/-v before or after the command; the top-level help lists the
real commands in their order and the demo's apart."""

from __future__ import annotations

import re

import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO

from pipeline.devices import ONE_PER_CORE, worker_count
from pipeline.distill.config import DistillConfig
from pipeline.errors import UserError
from pipeline.extract.embed_step import EmbedConfig
from pipeline.extract.shard_step import ShardConfig, _workers
from pipeline.presets import dataset_overlay
from stages.cli import COMMANDS, DEMO_COMMANDS, REAL_COMMANDS, cli

TINY_WORLD = "world:\n  per_cell: 1\n  image_size: 16\n  classes: [fish]\n  domains: [photo]\n"


def _help(*args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--help"], prog_name="rise-pipeline", terminal_width=100_000)
    assert result.exit_code == 0, result.output
    return result.output


def _listed_flags(command: str) -> set[str]:
    """Every spelling `rise-pipeline COMMAND --help` shows in its options' left column."""
    options = _help(command).split("\nOptions:\n", 1)[1]
    return {m for line in options.splitlines() if line.startswith("  -")
            for m in re.findall(r"(?<![\w-])--?[a-zA-Z][\w-]*", line.split("  ")[1])}


def _section(text: str, title: str) -> list[str]:
    block = text.split(f"\n{title}:\n", 1)[1].split("\n\n", 1)[0]
    return [line.split()[0] for line in block.splitlines() if line.startswith("  ") and not line.startswith("   ")]


def test_help_lists_the_real_commands_in_order_then_the_demo_commands():
    text = _help()
    assert _section(text, "Commands") == list(REAL_COMMANDS)
    assert _section(text, "Demo commands") == list(DEMO_COMMANDS)
    assert set(REAL_COMMANDS) | set(DEMO_COMMANDS) == set(COMMANDS)
    order = re.findall(r"^ +rise-pipeline (\S+)", text.split("Typical order:", 1)[1], flags=re.M)
    assert {"preset", "extract", "distill", "sweep", "report"} <= set(order), order
    assert order.index("preset") < order.index("extract") < order.index("distill") < order.index("report")


@pytest.mark.parametrize("command", ["extract", "distill", "report", "export", "predict", "evaluate"])
def test_the_work_folder_is_work_in_every_command(command):
    flags = _listed_flags(command)
    assert "--work" in flags
    if command == "extract":
        assert "--out" not in flags  # the old spelling parses but is not listed


def _capture_steps(monkeypatch) -> dict:
    import pipeline.distill.step as distill_step
    import pipeline.extract.embed_step as embed_step
    import pipeline.extract.shard_step as shard_step

    got: dict = {}
    monkeypatch.setattr(shard_step, "run", lambda cfg, **kw: got.update(shard=(cfg, kw)))
    monkeypatch.setattr(embed_step, "run", lambda cfg, **kw: got.update(embed=(cfg, kw)))
    monkeypatch.setattr(distill_step, "run", lambda cfg, **kw: got.update(distill=(cfg, kw)))
    return got


@pytest.mark.parametrize("spelling", ["--work", "--out"])
def test_extract_takes_work_and_still_out(spelling, tmp_path, cli, monkeypatch):
    got = _capture_steps(monkeypatch)
    r = cli("extract", "--data-root", tmp_path, spelling, tmp_path / "w", "--model", "M", "--pretrained", "P",
            in_process=True)
    assert r.code == 0, r.err
    assert got["shard"][1]["work"] == got["embed"][1]["work"] == tmp_path / "w"
    assert (got["embed"][0].model, got["embed"][0].pretrained) == ("M", "P")


def test_extract_without_a_work_folder_names_work_alone(cli):
    r = cli("extract", "--steps", "embed", in_process=True)
    assert r.code == 2 and "'--work'" in r.err and "--out" not in r.err, r.err


@pytest.mark.parametrize("argv,expected", [
    ([], True), (["--from-pretrained"], True), (["--from-scratch"], False),
    (["--pretrained"], True), (["--no-pretrained"], False),  # the old switch, and DVC's boolean spellings
])
def test_distill_switch_is_from_pretrained_or_from_scratch(argv, expected, tmp_path, cli, monkeypatch):
    got = _capture_steps(monkeypatch)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"distill": {"pretrained": not expected if argv else expected}}))
    r = cli("distill", "--params", params, "--work", "w", "--out", "r", "--target-domain", "x", *argv,
            in_process=True)
    assert r.code == 0, r.err
    assert got["distill"][0].pretrained is expected  # params.yaml's key is still `pretrained`


def test_distill_help_shows_one_pretrained_switch():
    flags = _listed_flags("distill")
    assert {"--from-pretrained", "--from-scratch"} <= flags
    assert not {"--pretrained", "--no-pretrained"} & flags


@pytest.mark.parametrize("spelling", ["--model", "--teacher"])
def test_preset_teacher_is_model_as_in_extract(spelling, tmp_path, cli):
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  root: data/world\n")
    r = cli("preset", "pacs", "--data-root", tmp_path / "PACS", "--params", params, spelling, "RN50-quickgelu",
            "--pretrained", "openai", in_process=True)
    assert r.code == 0, r.err
    embed = yaml.safe_load(params.read_text())["embed"]
    assert (embed["model"], embed["pretrained"]) == ("RN50-quickgelu", "openai")
    flags = _listed_flags("preset")
    assert {"--model", "--pretrained"} <= flags and "--teacher" not in flags
    assert {"--model", "--pretrained"} <= _listed_flags("extract")


def test_workers_minus_one_is_one_per_core_everywhere():
    assert ShardConfig().workers == EmbedConfig().workers == DistillConfig().workers == ONE_PER_CORE
    assert dataset_overlay("pacs", "/data")["distill"]["workers"] == ONE_PER_CORE
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params["shard"]["workers"] == params["embed"]["workers"] == ONE_PER_CORE
    assert worker_count(ONE_PER_CORE) >= 1 and worker_count(0) == 0 and worker_count(3) == 3
    # the shard step: -1 is one per core (in-process for a small dataset), 0 works in this process
    assert _workers(ShardConfig(), 10) == 1 and _workers(ShardConfig(), 10_000) == worker_count(ONE_PER_CORE)
    assert _workers(ShardConfig(workers=0), 10_000) == 0
    with pytest.raises(UserError, match="workers"):
        ShardConfig(workers=-2)
    for command in ("extract", "distill"):
        record = _help(command).split("--workers INTEGER", 1)[1].split("\n  -", 1)[0]
        assert "-1: one per core" in " ".join(record.split()), (command, record)


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_before_or_after_the_command(where, tmp_path, cli):
    params = tmp_path / "params.yaml"
    params.write_text(TINY_WORLD)
    command = ["world", "--out", str(tmp_path / "world"), "--params", str(params)]
    loud = cli(*command, in_process=True)
    assert loud.code == 0 and "images" in loud.err, loud.err
    quiet = cli(*(["-q", *command] if where == "before" else [*command, "-q"]), in_process=True)
    assert quiet.code == 0, quiet.err
    assert "images" not in quiet.err and "done in" in quiet.err, quiet.err


def test_verbosity_after_the_command_adds_to_before(tmp_path, cli):
    params = tmp_path / "params.yaml"
    params.write_text(TINY_WORLD)
    command = ["world", "--out", str(tmp_path / "world"), "--params", str(params)]
    verbose = cli(*command, "-v", in_process=True)
    assert verbose.code == 0 and "INFO pipeline" in verbose.err, verbose.err
    even = cli("-q", *command, "-v", in_process=True)  # -q then -v: the default level
    assert even.code == 0 and "images" in even.err and "INFO pipeline" not in even.err, even.err


def test_quiet_after_a_subcommand_of_sweep(cli):
    r = cli("sweep", "grid", "pacs", "--dry-run", "-q", in_process=True)
    assert r.code == 0 and r.out.startswith("dvc exp run"), r
