"""Distill runs from local student weights (`distill.checkpoint`): the file's content is part of the run,
so a finished run is 'up to date' only while the file holds the same weights, and a resumed run never
continues from other ones."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from pipeline.distill.checkpoints import read_checkpoint
from pipeline.distill.config import DistillConfig, pin_checkpoint
from pipeline.distill.step import run
from pipeline.errors import UserError
from pipeline.io import sha256_file
from tests.distill_fixtures import distill_config, shared_work


def _weights(path, seed: int) -> None:
    torch.manual_seed(seed)
    torch.save(timm.create_model("test_resnet", pretrained=False, num_classes=0).state_dict(), path)


def _cfg(checkpoint, **kw) -> DistillConfig:
    return distill_config(**{"pretrained": True, "checkpoint": str(checkpoint), "epochs": 1, **kw})


def test_pin_records_the_file_and_refuses_other_weights(tmp_path):
    _weights(tmp_path / "w.pth", 0)
    cfg = pin_checkpoint(_cfg(tmp_path / "w.pth"))
    assert cfg.checkpoint_sha256 == sha256_file(tmp_path / "w.pth")
    _weights(tmp_path / "w.pth", 1)
    with pytest.raises(UserError, match=r"w\.pth holds other weights .* than distill\.checkpoint_sha256"):
        pin_checkpoint(cfg)
    off = pin_checkpoint(_cfg(tmp_path / "missing.pth", pretrained=False))  # not loaded: nothing to pin, no error
    assert off.checkpoint_sha256 == ""
    with pytest.raises(UserError, match=r"student weights not found: .*missing\.pth"):
        pin_checkpoint(_cfg(tmp_path / "missing.pth"))


def test_run_is_up_to_date_only_while_the_weights_are_the_same(tmp_path, caplog):
    work = shared_work(3)
    weights, out = tmp_path / "backbone.pth", tmp_path / "run"
    _weights(weights, 0)
    first = run(_cfg(weights), work, out)
    assert first["config"]["checkpoint_sha256"] == sha256_file(weights)
    best = read_checkpoint(out / "checkpoints" / "best.pt", {"model": dict, "config": dict})
    assert best["config"]["checkpoint_sha256"] == sha256_file(weights)
    caplog.set_level("INFO", logger="pipeline")
    assert run(_cfg(weights), work, out) == first
    assert "up to date" in caplog.text
    caplog.clear()
    _weights(weights, 1)  # the same path now holds other weights (the student-pretrain stage reran)
    second = run(_cfg(weights), work, out, restart_stale=True)
    assert "up to date" not in caplog.text
    assert second["config"]["checkpoint_sha256"] == sha256_file(weights) != first["config"]["checkpoint_sha256"]
    assert json.loads((out / "metrics.json").read_text())["config"]["checkpoint_sha256"] == sha256_file(weights)
