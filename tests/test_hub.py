"""Pretrained weights without the Hugging Face hub: an unreachable hub or HF_HUB_OFFLINE=1 without cached
weights is one `error:` line through the real CLI (teacher and student), and cached weights load offline.

Hermetic: HF_ENDPOINT points at a closed local port (unreachable on any machine), HF_HOME at a fresh folder,
and proxies are cleared, so no test depends on this machine having no network.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import huggingface_hub
import numpy as np
import open_clip
import pytest
import safetensors.torch
import timm
import torch
from embed_fixtures import sample_rows, write_shard_set

import pipeline.extract.teacher
from pipeline import hub
from pipeline.distill.students import build_student
from pipeline.errors import UserError
from pipeline.extract.project_models import register_project_models
from pipeline.extract.teacher import load_teacher, weights_sha256
from tests.distill_fixtures import DOMAINS

# A hung download (the old behaviour: ~30 s of retries per file, after the imports) ends the test here.
TIMEOUT = 60


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture
def unreachable(tmp_path, monkeypatch):
    """This process and its children: an empty HF cache and a hub that refuses connections."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
                "http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    return tmp_path / "hf" / "hub"


def _cache_repo(cache: Path, repo: str, files: dict[str, bytes]) -> None:
    """A repository as huggingface_hub caches it: refs/main -> snapshots/<commit>/<files>."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    commit = hashlib.sha1(repo.encode()).hexdigest()
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    for name, data in files.items():
        (folder / "snapshots" / commit / name).write_bytes(data)


def _one_error_line(r, *needles: str) -> str:
    assert r.code == 2, r.err
    lines = [ln for ln in r.err.splitlines() if ln.strip() and not ln.startswith("[rise-pipeline")]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err  # no retry warnings, no traceback
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def shard_work(tmp_path_factory):
    return write_shard_set(tmp_path_factory.mktemp("hub") / "work", {"photo/photo-000000.tar": sample_rows("photo", 3, 0)})


@pytest.mark.parametrize("model, pretrained, way_out", [
    ("ViT-B-16", "openai", "--pretrained PATH"),
    ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "", "--model local-dir:PATH"),
])
def test_teacher_without_hub_is_one_line(unreachable, shard_work, monkeypatch, cli, model, pretrained,
                                         way_out):
    args = ["extract", "--out", str(shard_work), "--steps", "embed", "--model", model, "--pretrained", pretrained,
            "--workers", "0"]
    line = _one_error_line(cli(*args, env=os.environ, timeout=TIMEOUT), "cannot reach the Hugging Face hub",
                           os.environ["HF_ENDPOINT"], "HF_HUB_OFFLINE=1", way_out)
    assert str(unreachable) in line  # where the weights would have to be
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _one_error_line(cli(*args, env=os.environ, timeout=TIMEOUT), "HF_HUB_OFFLINE is set",
                    "not in the Hugging Face cache", way_out)
    assert not (shard_work / "embeddings.h5").exists()


def test_student_without_hub_is_one_line(unreachable, tmp_path, monkeypatch, cli, distill_work):
    args = ["distill", "--work", str(distill_work(3)), "--target-domain", DOMAINS[0], "--student",
            "test_resnet", "--pretrained", "--epochs", "1", "--workers", "0", "--device", "cpu", "--out",
            str(tmp_path / "run")]
    _one_error_line(cli(*args, env=os.environ, timeout=TIMEOUT), "student 'test_resnet'",
                    "cannot reach the Hugging Face hub", "HF_HUB_OFFLINE=1", "--from-scratch")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _one_error_line(cli(*args, env=os.environ, timeout=TIMEOUT), "HF_HUB_OFFLINE is set", "timm/test_resnet",
                    "--from-scratch")
    assert not (tmp_path / "run" / "metrics.json").exists()


# ---------------------------------------------------------------------------------- cached weights


@pytest.mark.parametrize("offline", [False, True])
def test_cached_teacher_loads_without_the_hub(unreachable, tmp_path, monkeypatch, caplog, offline):
    """hf-hub: weights in the cache load whether or not HF_HUB_OFFLINE is set (the hub is unreachable)."""
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    register_project_models()
    ref, _, _ = open_clip.create_model_and_transforms("RISE-micro-ViT")
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.01)
    path = tmp_path / "w.bin"
    torch.save(ref.state_dict(), path)
    config = {"model_cfg": open_clip.get_model_config("RISE-micro-ViT"), "preprocess_cfg": {}}
    # only the .bin: open_clip asks for the .safetensors twin first, which must not cost a retry loop
    _cache_repo(unreachable, "local/rise-micro", {"open_clip_config.json": json.dumps(config).encode(),
                                                  "open_clip_pytorch_model.bin": path.read_bytes()})
    before = huggingface_hub.constants.HF_HUB_OFFLINE
    t = load_teacher("hf-hub:local/rise-micro", "", device="cpu")
    assert t.provenance["pretrained_sha256"] == weights_sha256(ref)
    assert not [r for r in caplog.records if "Retry" in r.getMessage()]  # the hub was never asked
    assert huggingface_hub.constants.HF_HUB_OFFLINE == before  # offline mode only while loading


def test_hub_model_without_weights_is_refused_not_random(unreachable, monkeypatch):
    """open_clip only warns when an hf-hub: repository has a config but no weights; the teacher refuses."""
    register_project_models()
    config = {"model_cfg": open_clip.get_model_config("RISE-micro-ViT"), "preprocess_cfg": {}}
    _cache_repo(unreachable, "local/config-only", {"open_clip_config.json": json.dumps(config).encode()})
    monkeypatch.setattr(pipeline.extract.teacher, "open_clip_files", lambda *a: None)  # skip the hub check
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # ... but never ask the hub
    with pytest.raises(UserError, match=r"cannot load teacher hf-hub:local/config-only .*Required pretrained weights"):
        load_teacher("hf-hub:local/config-only", "", device="cpu")


def test_cached_student_loads_without_the_hub(unreachable, tmp_path):
    torch.manual_seed(1)
    ref = timm.create_model("test_resnet", pretrained=False)
    buf = tmp_path / "model.safetensors"
    safetensors.torch.save_file(ref.state_dict(), buf)
    _cache_repo(unreachable, "timm/test_resnet.r160_in1k", {"model.safetensors": buf.read_bytes()})
    student = build_student("test_resnet", np.eye(3, 8, dtype=np.float32), pretrained=True)
    got, want = student.backbone.state_dict(), ref.state_dict()
    assert got and all(torch.equal(v, want[k]) for k, v in got.items())


# ------------------------------------------------------------------------------------------- pieces


def test_probe_sees_a_listening_server_and_not_a_closed_port(unreachable):
    assert not hub.reachable(os.environ["HF_ENDPOINT"])
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert hub.reachable(f"http://127.0.0.1:{server.getsockname()[1]}")


def test_probe_goes_to_the_configured_proxy(monkeypatch):
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert hub._probe_address("https://huggingface.co") == ("proxy.example", 3128)
    monkeypatch.setenv("no_proxy", "huggingface.co")
    assert hub._probe_address("https://huggingface.co") == ("huggingface.co", 443)


def test_what_the_libraries_download_is_what_is_checked():
    files = hub.open_clip_files("ViT-B-16", "openai")
    assert open_clip.get_pretrained_cfg("ViT-B-16", "openai")["hf_hub"].startswith(files.repo_id + "/")
    assert files.groups == (("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),)
    assert hub.open_clip_files("ViT-B-16", __file__) is None  # a local checkpoint: no hub
    assert hub.open_clip_files("local-dir:/x", "") is None
    repo = hub.open_clip_files("hf-hub:org/repo@v2", "")
    assert (repo.repo_id, repo.revision, repo.groups[0]) == ("org/repo", "v2", ("open_clip_config.json",))
    student = hub.timm_files("test_resnet")
    assert (student.repo_id, student.groups) == ("timm/test_resnet.r160_in1k",
                                                 (("model.safetensors", "pytorch_model.bin"),))


def test_hub_weights_decides_before_any_download(unreachable, monkeypatch):
    files = hub.HubFiles("org/model", (("model.safetensors", "pytorch_model.bin"),))
    with pytest.raises(UserError, match=r"^w: cannot reach the Hugging Face hub .* HF_HUB_OFFLINE=1 .*, or do X$"):
        with hub.hub_weights(files, "w", "do X"):
            pytest.fail("the block must not run")
    monkeypatch.setenv("HF_HUB_OFFLINE", "yes")
    with pytest.raises(UserError, match=r"^w: HF_HUB_OFFLINE is set and org/model is not in the Hugging Face cache"):
        with hub.hub_weights(files, "w", "do X"):
            pytest.fail("the block must not run")
    _cache_repo(unreachable, "org/model", {"pytorch_model.bin": b"weights"})  # either file of a group will do
    for offline in ("1", ""):
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
        with hub.hub_weights(files, "w", "do X"):
            assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    with hub.hub_weights(None, "w", "do X"):  # nothing from the hub: nothing checked
        pass
