"""The demo world generator and the `world` command."""

from __future__ import annotations

import io
import json
from itertools import product
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from pipeline.demo.world import CLASSES, DOMAINS, WorldConfig, render, sample_grid, write_world
from pipeline.errors import UserError

SMALL = dict(per_cell=3, image_size=48)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    write_world(WorldConfig(seed=3, **SMALL), tmp_path / "a")
    write_world(WorldConfig(seed=3, **SMALL), tmp_path / "b")
    write_world(WorldConfig(seed=4, **SMALL), tmp_path / "c")
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a), "another seed must give other images"


def test_every_cell_populated_with_images_only(tmp_path):
    rows = write_world(WorldConfig(**SMALL), tmp_path / "w")
    files = _files(tmp_path / "w")
    cells = {}
    for rel, data in files.items():
        domain, cls, name = rel.split("/")
        assert name.endswith(".png")
        with Image.open(io.BytesIO(data)) as im:
            assert (im.mode, im.size) == ("RGB", (48, 48))
            assert not im.info, "no metadata chunks (timestamps would break byte identity)"
        cells[(domain, cls)] = cells.get((domain, cls), 0) + 1
    assert cells == {cell: 3 for cell in product(DOMAINS, CLASSES)}
    assert len(CLASSES) >= 6 and set(DOMAINS) == {"photo", "sketch", "cartoon", "painting"}
    # one caption per image, naming its class, returned to the caller (never written inside the root)
    assert sorted(r["path"] for r in rows) == sorted(files)
    assert all(r["class"] in r["caption"] for r in rows)


def test_cells_do_not_depend_on_counts_and_vary_within(tmp_path):
    write_world(WorldConfig(per_cell=2, image_size=32, classes=["fish"]), tmp_path / "a")
    write_world(WorldConfig(per_cell=3, image_size=32, classes=["fish", "tree"]), tmp_path / "b")
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(b) == 24 and all(b[k] == v for k, v in a.items())
    imgs = [np.asarray(render("cartoon", "house", 0, i, 48)[0], float) for i in range(4)]
    # pose and colour vary inside a domain: no two images alike
    assert min(np.abs(x - y).mean() for i, x in enumerate(imgs) for y in imgs[i + 1:]) > 5


def test_styles_look_like_their_domain():
    def stats(domain):
        ims = [np.asarray(render(domain, c, 0, i, 64)[0]).astype(int) for c in CLASSES for i in range(2)]
        gray = np.mean([np.abs(im[..., 0] - im[..., 1]).mean() + np.abs(im[..., 1] - im[..., 2]).mean()
                        for im in ims])
        colours = np.mean([len(np.unique(im.reshape(-1, 3), axis=0)) for im in ims])
        return gray, colours, np.mean([im.mean() for im in ims])

    sketch, cartoon, photo, painting = (stats(d) for d in ("sketch", "cartoon", "photo", "painting"))
    assert sketch[0] < 1 and sketch[2] > 200, "sketch: black strokes on white, no colour"
    assert cartoon[1] < photo[1] / 3, "cartoon: flat colour regions (few distinct colours)"
    assert photo[0] > 10 and painting[0] > 10, "photo and painting are in colour"
    assert painting[1] > cartoon[1] * 3, "painting: noisy brush-like colour fields"


@pytest.mark.parametrize("kwargs, message", [
    (dict(classes=["fish", "unicorn"]), "unknown class(es) unicorn"),
    (dict(domains=["photo", "infrared"]), "unknown domain(es) infrared"),
    (dict(classes=[]), "unknown class(es) (none given)"),
    (dict(classes=["fish", "fish"]), "class listed twice"),
    (dict(per_cell=0), "world.per_cell must be >= 1"),
    (dict(image_size=8), "world.image_size must be within 16..512"),
])
def test_bad_config(kwargs, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        WorldConfig(**kwargs)


def test_cli_writes_world_captions_and_grid(tmp_path, cli):
    params = tmp_path / "params.yaml"
    params.write_text("world:\n  per_cell: 2\n  image_size: 32\n  classes: [fish, star]\n")
    code, _, err = cli("world", "--out", tmp_path / "w", "--params", params, "--seed", "5", "--captions",
                       tmp_path / "captions.jsonl", "--grid", tmp_path / "g.png", in_process=True)
    assert code == 0 and "16 images (2 classes x 4 domains x 2)" in err
    files = _files(tmp_path / "w")
    # what the flags and the params file ask for, written out here rather than by the generator's own code
    assert sorted(files) == sorted(f"{d}/{c}/{i:05d}.png" for d in DOMAINS for c in ("fish", "star") for i in range(2))
    for rel, data in files.items():
        with Image.open(io.BytesIO(data)) as im:
            assert (im.format, im.mode, im.size) == ("PNG", "RGB", (32, 32)), rel
            if rel.startswith("sketch/"):  # black strokes on white: grey pixels only
                px = np.asarray(im).astype(int)
                assert (px[..., 0] == px[..., 1]).all() and (px[..., 1] == px[..., 2]).all(), rel
    # --seed reached the generator: the default seed draws other images for every cell
    code, _, _ = cli("world", "--out", tmp_path / "w0", "--params", params, in_process=True)
    assert code == 0 and all(_files(tmp_path / "w0")[k] != v for k, v in files.items())
    rows = [json.loads(line) for line in (tmp_path / "captions.jsonl").read_text().splitlines()]
    assert sorted((r["path"], r["domain"], r["class"]) for r in rows) == \
        sorted((k, *k.split("/")[:2]) for k in files)
    with Image.open(tmp_path / "g.png") as g:
        assert g.size == sample_grid(WorldConfig(per_cell=2, image_size=32, classes=["fish", "star"])).size
    assert (tmp_path / "g.png").stat().st_size < 300_000


def test_cli_rejects_bad_input(tmp_path, cli):
    code, _, err = cli("world", "--out", tmp_path / "w", "--captions", tmp_path / "w" / "c.jsonl",
                       in_process=True)
    assert code == 2 and "is inside the dataset root" in err and not (tmp_path / "w").exists()
    params = tmp_path / "p.yaml"
    params.write_text("world:\n  colour: red\n")
    code, _, err = cli("world", "--out", tmp_path / "w", "--params", params, in_process=True)
    assert code == 2 and "unknown key(s) colour" in err
    code, _, err = cli("world", "--out", tmp_path / "w", "--per-cell", "0", in_process=True)
    assert code == 2 and "per_cell must be >= 1" in err and not (tmp_path / "w").exists()


def test_readme_grid_is_small():
    grid = REPO / "docs" / "world_samples.png"
    assert grid.stat().st_size < 300_000
