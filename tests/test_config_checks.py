"""One way to check a config (docs/design.md, "One source per option"): each config checks its values when it
is built -- directly, through `from_mapping` or `dataclasses.replace` -- and checking never changes it."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.config import from_mapping
from pipeline.distill.config import DistillConfig, check_run
from pipeline.distill.group import parse_grid
from pipeline.errors import UserError
from pipeline.extract.embed_step import EmbedConfig
from pipeline.extract.shard_step import ShardConfig
from pipeline.report.step import ReportConfig
from stages.options_doc import sections


@pytest.mark.parametrize("section, cls", [s for s in sections() if s[0] != "extra_teachers"])
def test_defaults_pass_their_own_check(section, cls):
    cls()


@pytest.mark.parametrize("cls, bad, needle", [
    (DistillConfig, {"w_kd": -1.0}, "w_kd must be a finite number >= 0"),
    (DistillConfig, {"epochs": 0}, "epochs must be >= 1"),
    (ShardConfig, {"shard_size": 0}, "shard_size must be >= 1"),
    (EmbedConfig, {"store": "a b"}, "store name 'a b'"),
    (ReportConfig, {"decimals": -1}, "report.decimals must be >= 0"),
])
def test_every_way_of_building_a_config_checks_it(cls, bad, needle):
    for build in (lambda: cls(**bad), lambda: from_mapping(cls, bad), lambda: dataclasses.replace(cls(), **bad)):
        with pytest.raises(UserError, match=needle):
            build()


def test_a_grid_entry_is_checked_as_a_config_and_named():
    with pytest.raises(UserError, match="grid entry 1: epochs must be >= 1, got 0"):
        parse_grid('[{}, {"epochs": 0}]')


def test_a_group_base_needs_no_target_and_may_name_several_teachers():
    base = DistillConfig(method="erm", teachers=["default", "rn"])  # members trim teachers to their method
    with pytest.raises(UserError, match="--target-domain is required"):
        check_run(base)
    with pytest.raises(UserError, match="several --teachers are for rise-mix"):
        check_run(dataclasses.replace(base, target_domain="sketch"))
    assert base == DistillConfig(method="erm", teachers=["default", "rn"])  # checking changed nothing
