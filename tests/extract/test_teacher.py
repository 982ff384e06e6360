"""Teacher loading (every source kind, unknown names) and prompts, against open_clip called directly."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch

from pipeline.errors import UserError
from pipeline.extract.project_models import register_project_models
from pipeline.extract.prompts import (
    PHOTO_ANCHORS,
    RISE_TEMPLATES,
    anchor_domains,
    anchor_names,
    display_names,
    readable,
    text_embeddings,
)
from pipeline.extract.teacher import load_teacher, weights_sha256

register_project_models()


def _reference_model():
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("RISE-micro-ViT")
    return model.eval(), preprocess


def test_checkpoint_file_and_local_dir_load_the_same_weights(tmp_path):
    ref, _ = _reference_model()
    with torch.no_grad():  # make the weights differ from the seeded random init
        for p in ref.parameters():
            p.add_(0.01)
    torch.save(ref.state_dict(), tmp_path / "teacher.pt")
    t = load_teacher("RISE-micro-ViT", str(tmp_path / "teacher.pt"), device="cpu")
    assert t.provenance["pretrained_sha256"] == weights_sha256(ref)
    folder = tmp_path / "hub"
    folder.mkdir()
    cfg = open_clip.get_model_config("RISE-micro-ViT")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    torch.save(ref.state_dict(), folder / "open_clip_pytorch_model.bin")
    t2 = load_teacher(f"local-dir:{folder}", "", device="cpu")
    assert t2.provenance["pretrained_sha256"] == weights_sha256(ref)
    assert t.image_size == (32, 32) and t.embed_dim == 32 and t.precision == "fp32"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = torch.nn.functional.normalize(ref.encode_image(x), dim=-1)
    torch.testing.assert_close(t2.encode_images(x), want, rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.parametrize("device, precision", [("cpu", "fp32"), *[pytest.param(
    "cuda", p, marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device"))
    for p in ("bf16", "fp16")]])
def test_teacher_embeddings_under_autocast_match_fp32(device, precision):
    """The teacher's image and text embeddings on `device` at `precision` (autocast on a GPU) agree with
    open_clip's fp32 model on the CPU (cosine > 0.99); the CPU always runs fp32."""
    ref, _ = _reference_model()
    t = load_teacher("RISE-micro-ViT", "random", device=device, precision=precision)
    assert t.precision == precision
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want = torch.nn.functional.normalize(ref.encode_image(x), dim=-1)
        text = ref.encode_text(open_clip.get_tokenizer("RISE-micro-ViT")(["a photo of a dog", "a sketch"]))
    got = t.encode_images(x).cpu()
    assert got.dtype == torch.float32 and float((got * want).sum(-1).min()) > 0.99
    mine = torch.as_tensor(t.encode_text(["a photo of a dog", "a sketch"]))
    assert float(torch.nn.functional.cosine_similarity(mine, text.float()).min()) > 0.99


@pytest.mark.parametrize("model, pretrained, message", [
    ("ViT-B-99", "openai", "unknown open_clip model 'ViT-B-99'; see open_clip.list_models() and open_clip.list_pretrained()"),
    ("ViT-B-16", "not-a-tag", "unknown pretrained tag 'not-a-tag' for ViT-B-16 (its tags: "),
    ("ViT-B-16", "/nope/teacher.pt", "checkpoint file not found '/nope/teacher.pt'"),
    ("RISE-micro-ViT", "", "--pretrained is required for RISE-micro-ViT"),
    ("local-dir:/nope", "", "expected a folder with open_clip_config.json"),
])
def test_unknown_sources_say_where_to_look(model, pretrained, message):
    with pytest.raises(UserError) as e:
        load_teacher(model, pretrained, device="cpu")
    assert message in str(e.value)
    assert "open_clip.list_pretrained()" in str(e.value) or model.startswith("local-dir")


def test_names_are_readable():
    assert readable("Alarm_Clock") == "alarm clock"
    assert readable("art_painting") == "art painting"
    assert readable("RealWorld") == "real world"
    assert display_names(["Alarm_Clock", "dog"], {"dog": "puppy"}) == ["alarm clock", "puppy"]
    assert anchor_names(["art_painting", "photo"]) == ["art painting", "photo"]
    assert anchor_names(["L100"], ["bright photo"]) == ["bright photo"]


def test_text_embeddings_equal_open_clip_directly():
    ref, _ = _reference_model()
    t = load_teacher("RISE-micro-ViT", "random", device="cpu")
    tok = open_clip.get_tokenizer("RISE-micro-ViT")
    displays, anchors = ["alarm clock", "dog"], ["art painting", "photo"]
    got = text_embeddings(t.encode_text, displays, list(RISE_TEMPLATES), anchors)
    with torch.no_grad():
        per = np.stack([ref.encode_text(tok([tpl.format(c) for c in displays])).numpy() for tpl in RISE_TEMPLATES])
        anchor = np.stack([torch.nn.functional.normalize(ref.encode_text(tok([f"a {a} of a {c}" for c in displays])),
                                                         dim=-1).numpy() for a in anchors])
    # RISE's reference: t_raw = mean of the raw per-template features, t_hat = its normalisation.
    raw = per.mean(0)
    np.testing.assert_allclose(got["per_template"], per, atol=1e-5)
    np.testing.assert_allclose(got["class_raw"], raw, atol=1e-5)
    np.testing.assert_allclose(got["class"], raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(got["anchor"], anchor, atol=1e-5)
    # CLIP's zero-shot recipe (the option): normalise each template's feature, then average.
    clip = text_embeddings(t.encode_text, displays, list(RISE_TEMPLATES), anchors, average="normalised")
    unit = per / np.linalg.norm(per, axis=-1, keepdims=True)
    np.testing.assert_allclose(clip["class_raw"], unit.mean(0), atol=1e-5)
    assert np.linalg.norm(clip["class_raw"], axis=1).max() < 1.0  # the mean of unit vectors is shorter
    assert not np.allclose(clip["class"], got["class"], atol=1e-4)  # the two recipes really differ here


def test_anchors_are_tagged_with_the_domain_they_name():
    domains = ["art_painting", "cartoon", "photo", "sketch"]
    assert anchor_domains(["art painting", "cartoon", "photo", "sketch"], domains) == [0, 1, 2, 3]
    assert anchor_domains(anchor_names(domains), domains) == [0, 1, 2, 3]
    assert anchor_domains(["RealWorld", "Clipart"], ["Art", "Clipart", "Product", "Real World"]) == [3, 1]
    assert anchor_domains(["real photo", "quickdraw"], ["clipart", "quickdraw", "real"]) == [2, 1]
    assert anchor_domains(list(PHOTO_ANCHORS), ["Caltech101", "LabelMe", "SUN09", "VOC2007"]) == [-1] * 4
