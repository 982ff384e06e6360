"""Typed config loading, atomic writes and image decoding shared by every stage."""

import io
import os
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from pipeline import io as pio
from pipeline.config import field, load_section, read_params
from pipeline.errors import BadSample, UserError
from pipeline.images import decode_rgb, to_uint8_chw


@dataclass
class Cfg:
    lr: float = field(1e-3, "learning rate")
    epochs: int = field(20, "epochs")
    names: list[str] = field(["a"], "names")
    flag: bool = field(False, "a switch")


def test_load_section_overrides_and_types(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("train:\n  lr: 0.01\n  names: [x, y]\n")
    cfg = load_section(Cfg, read_params(p), "train", {"epochs": 3, "lr": None})
    assert cfg == Cfg(lr=0.01, epochs=3, names=["x", "y"], flag=False)


@pytest.mark.parametrize("section,msg", [
    ({"lrr": 1}, "unknown key(s) lrr"),
    ({"epochs": 2.5}, "expected an integer"),
    ({"flag": "yes"}, "expected true/false"),
    ({"lr": "fast"}, "expected float"),
])
def test_load_section_rejects_bad_values(section, msg):
    with pytest.raises(UserError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        load_section(Cfg, {"train": section}, "train")


def test_missing_params_file_is_user_error(tmp_path):
    with pytest.raises(UserError, match="params file not found"):
        read_params(tmp_path / "nope.yaml")


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    dest = tmp_path / "out.json"
    pio.write_json(dest, {"b": 1, "a": 2})
    before = dest.read_bytes()
    with pytest.raises(RuntimeError), pio.atomic_path(dest) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("killed")
    assert dest.read_bytes() == before  # the old complete file survives
    assert os.listdir(tmp_path) == ["out.json"]  # and no temporary is left behind
    assert before == b'{\n  "a": 2,\n  "b": 1\n}\n'


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_outputs_get_the_mode_open_gives_under_the_umask(tmp_path, umask):
    """Every writer of pipeline.io creates its file as open() would (0666 less the umask), never 0600: on
    shared storage colleagues read results, metrics and shards as the user's umask allows."""
    old = os.umask(umask)
    try:
        with open(tmp_path / "by_open.txt", "w") as f:  # the reference: Python's own open()
            f.write("x")
        pio.write_json(tmp_path / "a.json", {"a": 1})
        pio.write_bytes(tmp_path / "sub" / "b.bin", b"x")
        pio.write_torch(tmp_path / "c.pt", {"a": 1})
        with pio.atomic_path(tmp_path / "d.tar") as tmp, open(tmp, "wb") as f:  # the shard writer's way
            f.write(b"x")
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert os.stat(tmp_path / "by_open.txt").st_mode & 0o777 == expected
    for name in ("a.json", "sub/b.bin", "c.pt", "d.tar"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == expected, name


def _encode(im, fmt, **kw):
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def test_write_torch_same_object_same_bytes_and_its_digest(tmp_path):
    import torch

    obj = {"w": torch.arange(6.0).view(2, 3), "meta": {"epoch": 3}}
    da = pio.write_torch(tmp_path / "a.pt", obj)
    db = pio.write_torch(tmp_path / "sub" / "b.pt", obj)  # another name, another folder: the same bytes
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "sub" / "b.pt").read_bytes()
    assert da == db == pio.sha256_file(tmp_path / "a.pt")
    back = torch.load(tmp_path / "a.pt", weights_only=True)
    assert torch.equal(back["w"], obj["w"]) and back["meta"] == {"epoch": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "sub"]  # no temporary file left


def test_decode_rgb_applies_exif_orientation():
    im = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = decode_rgb(_encode(im, "JPEG", exif=exif))
    assert out.size == (20, 40) and out.mode == "RGB"


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "I;16"])
def test_decode_rgb_converts_modes(mode):
    if mode == "I;16":
        im = Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16))
        assert im.mode == "I;16"
    elif mode == "L":
        im = Image.fromarray(np.full((8, 8), 200, dtype=np.uint8))
    else:
        im = Image.new(mode, (8, 8))
    out = decode_rgb(_encode(im, "TIFF" if mode in ("CMYK", "I;16") else "PNG"))
    assert out.mode == "RGB" and out.size == (8, 8)
    if mode == "I;16":
        assert out.getpixel((0, 0)) == (156, 156, 156)  # 40000/256, scaled rather than clipped to 255


def test_decode_rgb_rejects_garbage():
    with pytest.raises(BadSample) as e:
        decode_rgb(b"not an image")
    assert e.value.reason == "undecodable"


def test_to_uint8_chw_matches_torchvision():
    import torch
    from torchvision.transforms.functional import pil_to_tensor

    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)  # H=5, W=7: not square
    img = Image.fromarray(arr)
    out = to_uint8_chw(img)
    assert out.dtype == torch.uint8 and out.shape == (3, 5, 7) and out.is_contiguous()
    assert torch.equal(out, pil_to_tensor(img))
    assert torch.equal(out[:, 2, 4], torch.from_numpy(arr[2, 4]))
