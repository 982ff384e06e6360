"""A run's students (`StudentUnit`) under one run record: each keeps its own CPU and device random state, so
a student with dropout trained in a group, or resumed after a kill, equals the same student trained alone
and uninterrupted; the GPU capacity estimate of a pass."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import timm
import torch
from conftest import killed_in_epoch_2

import pipeline.distill.students as students
import pipeline.distill.trainer as trainer_module
from pipeline.distill.config import DistillConfig
from pipeline.distill.group import member_name
from pipeline.distill.step import run, run_group
from pipeline.distill.trainer import member_capacity
from pipeline.store import verify_store
from tests.devices import DEVICES
from tests.distill_fixtures import DOMAINS, distill_config, shared_work

TARGET = DOMAINS[0]
DROP = 0.5


@pytest.fixture(scope="module")
def work():
    return shared_work(3)


@pytest.fixture
def dropout(monkeypatch):
    """Students whose backbone drops half its pooled features in training (timm's drop_rate)."""
    monkeypatch.setattr(students, "_hub_backbone",
                        lambda name, pretrained: timm.create_model(name, pretrained=False, num_classes=0,
                                                                   drop_rate=DROP))


def _cfg(device: str, **kw) -> DistillConfig:
    return distill_config(device=device, **kw)


def _last_models(out):
    return [u["model"] for u in torch.load(out / "checkpoints" / "last.pt", weights_only=True)["units"]]


def _same_models(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in x)


def test_the_dropout_student_draws_random_numbers(dropout):
    """The premise of the tests below: in training the student's output depends on the generator."""
    torch.manual_seed(0)
    m = students.build_student("test_resnet", torch.randn(3, 8)).train()
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    assert not torch.equal(m(m.normalize(x))[0], m(m.normalize(x))[0])
    m.eval()
    assert torch.equal(m(m.normalize(x))[0], m(m.normalize(x))[0])


@pytest.mark.cuda
@pytest.mark.parametrize("device", DEVICES)
def test_dropout_members_equal_their_runs_alone(work, dropout, tmp_path, device):
    """Two dropout students in one data pass: each draws from its own generator states, so each equals its
    run alone. Were the state shared (or only the CPU generator's kept, on a GPU), the second member would
    draw where the first left off."""
    grid = [{}, {"lr": 0.02}]
    results = run_group(_cfg(device), ["rise"], grid, work, tmp_path / "g")
    assert len(results) == 2
    for entry in grid:
        cfg = _cfg(device, method="rise", **entry)
        name = member_name(cfg)
        alone = run(cfg, work, tmp_path / name)
        assert json.loads(json.dumps(results[name])) == json.loads(json.dumps(alone)), name
        assert _same_models(_last_models(tmp_path / "g" / name), _last_models(tmp_path / name))


@pytest.mark.cuda
@pytest.mark.parametrize("device", DEVICES)
def test_a_resumed_dropout_run_equals_the_uninterrupted_one(work, dropout, tmp_path, monkeypatch, device):
    full = run(_cfg(device, epochs=3), work, tmp_path / "full")
    with killed_in_epoch_2():
        run(_cfg(device, epochs=3), work, tmp_path / "r")
    torch.manual_seed(12345)  # whatever the process drew meanwhile, the run continues from its own state
    if device == "cuda":
        torch.cuda.manual_seed_all(12345)
    assert run(_cfg(device, epochs=3), work, tmp_path / "r") == full
    assert _same_models(_last_models(tmp_path / "r"), _last_models(tmp_path / "full"))
    saved = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)["units"][0]["rng"]
    assert set(saved) == ({"cpu", "cuda"} if device == "cuda" else {"cpu"})


def test_member_capacity_from_the_free_gpu_memory(monkeypatch):
    """Half the free memory over 4x each member's parameter bytes (weights, gradients, momentum, best copy),
    at least 1; a mix counts all its students; the CPU has no limit (0)."""
    asked = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: asked.append(device) or (10_000_000, 80_000_000))
    gpu = torch.device("cuda", 0)
    one = torch.nn.Linear(100, 50)  # 5,050 float32 parameters = 20,200 bytes; 4x = 80,800
    assert member_capacity(SimpleNamespace(device=gpu, units=[SimpleNamespace(model=one)])) == 5_000_000 // 80_800
    mix = [SimpleNamespace(model=torch.nn.Linear(100, 50)), SimpleNamespace(model=torch.nn.Linear(100, 50))]
    assert member_capacity(SimpleNamespace(device=gpu, units=mix)) == 5_000_000 // 161_600
    big = torch.nn.Linear(2000, 2000)  # 16 MB of weights: none fits in half of 10 MB, yet one is tried
    assert member_capacity(SimpleNamespace(device=gpu, units=[SimpleNamespace(model=big)])) == 1
    assert asked == [gpu, gpu, gpu]
    assert member_capacity(SimpleNamespace(device=torch.device("cpu"), units=[SimpleNamespace(model=one)])) == 0


def test_a_pass_larger_than_the_capacity_is_split(work, tmp_path, monkeypatch):
    """train_pass asks the first member's capacity and trains the rest in further passes."""
    monkeypatch.setattr(trainer_module, "member_capacity", lambda trainer: 1)
    sizes = []
    real = trainer_module.train_together
    monkeypatch.setattr(trainer_module, "train_together", lambda ms, data: sizes.append(len(ms)) or real(ms, data))
    runs = [(_cfg("cpu", epochs=1, method=m), tmp_path / m) for m in ("erm", "kd")]
    stores = {"default": verify_store(work)}
    results = trainer_module.train_pass(runs, stores, work)
    assert sizes == [1, 1] and [r["method"] for r in results] == ["erm", "kd"]
