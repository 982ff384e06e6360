"""Random access into shards: the offsets the shard step records read back exactly the bytes webdataset
streams, and a shard that no longer matches its index is refused with one line."""

from __future__ import annotations

import json
import shutil

import pytest
from shard_fixtures import make_plain, special_images, write

from pipeline import shards
from pipeline.errors import UserError
from pipeline.extract.shard_step import ShardConfig, run


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = make_plain(tmp_path_factory.mktemp("data") / "DATA", per_class=6)
    for name, (data, _, _) in special_images(7).items():  # png, bmp, webp, ... and long odd names
        write(root / "photo" / "cat" / f"{'very long name ' * 8}{name}", data)
    work = tmp_path_factory.mktemp("work")
    run(ShardConfig(shard_size=5, workers=1), data_root=root, work=work)
    work.joinpath("..", "root.txt").resolve().write_text(str(root))  # where test_offsets_survive... finds it
    return work


def test_offsets_read_back_what_webdataset_streams(work):
    locations = shards.sample_locations(work)
    streamed = {s.key: s for s in shards.iter_samples(shards.shard_paths(work))}
    assert set(locations) == set(streamed) and len(streamed) > 20
    reader = shards.ShardReader()
    for key, s in sorted(streamed.items(), reverse=True):  # any order: random access
        loc = locations[key]
        assert loc.ext == s.ext
        assert reader.read(loc) == s.data, key


def test_offsets_survive_a_resumed_shard_step(work, tmp_path):
    copy = tmp_path / "w"
    shutil.copytree(work, copy)
    index = json.loads((copy / "shards" / "index.json").read_text())
    root = (work / ".." / "root.txt").resolve().read_text()
    run(ShardConfig(shard_size=5, workers=1), data_root=root, work=copy)  # every shard reused
    assert json.loads((copy / "shards" / "index.json").read_text()) == index


def test_a_shard_that_disagrees_with_its_index_is_refused(work, tmp_path):
    copy = tmp_path / "w"
    shutil.copytree(work, copy)
    locations = shards.sample_locations(copy)
    key, loc = sorted(locations.items())[3]
    path = loc.path  # sample_locations(copy) already points into the copy
    data = bytearray(path.read_bytes())
    data[loc.offset - 512:loc.offset - 412] = b"x" * 100  # another member's header now sits there
    path.write_bytes(bytes(data))
    moved = shards.sample_locations(copy)[key]
    with pytest.raises(UserError) as e:
        shards.ShardReader().read(moved)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "rise-pipeline extract --steps shard" in msg


def test_an_index_without_offsets_names_the_fix(work, tmp_path):
    copy = tmp_path / "w"
    shutil.copytree(work, copy)
    index_path = copy / "shards" / "index.json"
    index = json.loads(index_path.read_text())
    for entry in index["shards"]:
        entry.pop("samples")
    index_path.write_text(json.dumps(index))
    with pytest.raises(UserError, match="rerun `rise-pipeline extract --steps shard`"):
        shards.sample_locations(copy)
