"""Dataset presets and sweep grids: RISE's published settings, applied to params.yaml by the real CLI."""

import json
import shlex
from pathlib import Path

import pytest
import yaml
from shard_fixtures import jpeg, make_plain, write

from pipeline.presets import GRIDS, match_domains

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ["bright photo", "corrupted photo", "dark photo", "good photo"]
PARAMS_WITH_COMMENTS = ("# my comment\ndata:\n  root: data/world  # demo\n  work: data/work\n"
                        "embed:\n  class_names: {}   # overrides\n"
                        "sweep:\n  domains: [cartoon, sketch]   # held out in turn\n")


# The commands run in a separate process with only these variables (nothing from this environment).
ENV = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}


def _preset(cli, name, root, params):
    return cli("preset", name, "--data-root", root, "--params", params, env=ENV)


def _lines(stderr: str, prefix: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(prefix)]


def _params(tmp_path, text=PARAMS_WITH_COMMENTS):
    params = tmp_path / "params.yaml"
    params.write_text(text)
    return params


def test_grids_are_rise_grids():
    # RISE's protocol: 6 configs per dataset, T=3, w_dist in {0.5, 1, 2}
    for name in ("pacs", "vlcs", "officehome", "terraincognita"):
        grid = GRIDS[name]
        assert len(grid) == 6 and {g["temperature"] for g in grid} == {3.0}
        assert sorted({g["w_dist"] for g in grid}) == [0.5, 1.0, 2.0]
    assert {(g["w_kd"], g["w_ce"]) for g in GRIDS["officehome"]} == {(0.2, 0.8), (0.1, 0.9)}
    assert {(g["w_kd"], g["w_ce"]) for g in GRIDS["terraincognita"]} == {(0.2, 0.8), (0.3, 0.7)}
    assert {(g["w_kd"], g["w_ce"]) for g in GRIDS["pacs"]} == {(0.9, 0.1), (0.8, 0.2)}


def test_preset_rewrites_params_keeping_comments(tmp_path, cli):
    params = tmp_path / "params.yaml"
    params.write_text("# my comment\ndata:\n  root: data/world  # demo\n  work: data/work\n"
                      "distill:\n  epochs: 3\n  momentum: 0.9\n")
    data = make_plain(tmp_path / "TerraInc", domains=("location_38", "location_43", "location_46", "location_100"),
                      classes=("bobcat",), per_class=1)
    r = cli("preset", "terraincognita", "--data-root", data, "--params", params, env=ENV)
    assert r.code == 0, r.err
    text = params.read_text()
    assert "# my comment" in text
    p = yaml.safe_load(text)
    assert p["data"] == {"root": str(data), "work": "data/work"}
    # RISE's mix (train_rise_mix_teacher.py): the second teacher's student at 4e-3 for TerraIncognita
    assert p["distill"]["mix_lrs"] == [2e-3, 4e-3]
    assert p["distill"]["lr"] == 2e-3 and p["distill"]["momentum"] == 0.9 and p["distill"]["epochs"] == 20
    assert p["distill"]["text_ensemble"] is True
    assert p["embed"]["anchors"] == ["bright photo", "corrupted photo", "dark photo", "good photo"]
    assert p["embed"]["model"] == "ViT-B-16-quickgelu" and p["embed"]["pretrained"] == "openai"
    assert p["sweep"]["domains"] == ["location_100", "location_38", "location_43", "location_46"]
    assert len(p["sweep"]["grid"]) == 6 and not _lines(r.err, "warning:")
    assert p["world"]["enabled"] is False and p["teacher"]["enabled"] is False and p["student"]["enabled"] is False
    # the real student starts from timm's ImageNet weights with RISE's recipe, whatever the demo used
    assert p["distill"]["pretrained"] is True and p["distill"]["checkpoint"] == ""
    assert (p["distill"]["lr_decay_at"], p["distill"]["lr_gamma"], p["distill"]["weight_decay"]) == (0.8, 0.1, 5e-4)
    # the demo's two groups at once at one thread each do not carry over to a ResNet-50: one group, all cores
    assert p["sweep"]["jobs"] == 1 and p["distill"]["threads"] == 0


def test_preset_errors_are_one_line(tmp_path, cli):
    r = cli("preset", "pacs", "--data-root", tmp_path / "missing", "--params", tmp_path / "p.yaml", env=ENV)
    assert r.code == 2 and r.err.strip().startswith("error:") and "Traceback" not in r.err
    r = cli("preset", "imagenet", "--data-root", tmp_path, env=ENV)
    assert r.code == 2 and "pacs" in r.err and "Traceback" not in r.err


def test_sweep_dry_run_passes_the_grid_to_dvc(cli):
    r = cli("sweep", "officehome", "--queue", "--dry-run", env=ENV)
    assert r.code == 0, r.err
    cmd = shlex.split(r.out.strip())
    assert cmd[:3] == ["dvc", "exp", "run"] and "--queue" in cmd
    value = cmd[cmd.index("-S") + 1]
    assert value.startswith("sweep.grid=") and json.loads(value.split("=", 1)[1]) == GRIDS["officehome"]


# --- the data root decides the domains --------------------------------------------------------------


@pytest.mark.parametrize("found, known, expected", [
    (["caltech", "labelme", "sun"], ["Caltech101", "LabelMe", "SUN09", "VOC2007"],
     {"caltech": "Caltech101", "labelme": "LabelMe", "sun": "SUN09"}),
    (["Real World", "art"], ["Art", "Real World"], {"Real World": "Real World", "art": "Art"}),
    (["real_world"], ["Real World"], {"real_world": "Real World"}),
    (["RealWorld"], ["Real World"], {"RealWorld": "Real World"}),
    (["Art-Painting"], ["art_painting"], {"Art-Painting": "art_painting"}),
    (["sun09", "sun"], ["SUN09"], {"sun09": "SUN09"}),        # the exact key wins; `sun` is then unknown
    (["voc 2007"], ["VOC2007"], {"voc 2007": "VOC2007"}),
    (["voc2012"], ["VOC2007"], {}),                             # a different number is a different domain
    (["cal"], ["Caltech101"], {}),                              # only a trailing number may be left out
    (["caltech101"], ["Caltech"], {}),                          # ... by the folder, not by the known name
    (["location_38", "location100"], ["location_100", "location_38"],
     {"location_38": "location_38", "location100": "location_100"}),
])
def test_domain_matching_rule(found, known, expected):
    assert match_domains(found, known)[0] == expected


def test_ambiguous_domains_match_nothing():
    matched, ambiguous = match_domains(["location"], ["location_100", "location_38"])
    assert matched == {} and ambiguous == {"location": ["location_100", "location_38"]}
    matched, ambiguous = match_domains(["Art", "art", "clipart"], ["Art", "Clipart"])
    assert matched == {"clipart": "Clipart"} and ambiguous == {"Art": ["Art"], "art": ["Art"]}


def test_vlcs_root_spellings_become_the_sweep_domains(tmp_path, cli):
    root = make_plain(tmp_path / "VLCS", domains=("caltech", "labelme", "sun"), classes=("bird", "car"),
                      per_class=1)
    params = _params(tmp_path)
    r = _preset(cli, "vlcs", root, params)
    assert r.code == 0, r.err
    assert _lines(r.err, "warning:") == [f"warning: known VLCS domain VOC2007 not found in {root}"]
    assert not _lines(r.err, "error:") and not _lines(r.err, "note:")
    text = params.read_text()
    assert "# my comment" in text and "# held out in turn" in text and "# overrides" in text
    p = yaml.safe_load(text)
    assert p["sweep"]["domains"] == ["caltech", "labelme", "sun"]
    assert p["embed"]["anchors"] == PHOTO and p["embed"]["class_names"] == {}
    assert p["data"]["root"] == str(root)
    assert "caltech, labelme, sun" in r.out and "2 classes" in r.out


def test_written_params_pass_the_shard_check(tmp_path, cli):
    root = make_plain(tmp_path / "VLCS", domains=("caltech", "sun"), classes=("bird",), per_class=2)
    params = _params(tmp_path)
    assert _preset(cli, "vlcs", root, params).code == 0
    work = tmp_path / "work"
    r = cli("extract", "--steps", "shard", "--data-root", root, "--out", work, "--params", params, env=ENV)
    assert r.code == 0, r.err
    assert sorted(p.name for p in (work / "shards").iterdir() if p.is_dir()) == ["caltech", "sun"]


def test_unknown_and_missing_domains_warn_one_line_each(tmp_path, cli):
    root = make_plain(tmp_path / "PACS", domains=("Art_Painting", "Cartoon", "watercolour"), classes=("dog",),
                      per_class=1)
    params = _params(tmp_path)
    r = _preset(cli, "pacs", root, params)
    assert r.code == 0, r.err
    assert sorted(_lines(r.err, "warning:")) == sorted([
        f"warning: known PACS domain photo not found in {root}",
        f"warning: known PACS domain sketch not found in {root}",
        f"warning: domain 'watercolour' in {root} is not a known PACS domain; it is kept"])
    p = yaml.safe_load(params.read_text())
    assert p["sweep"]["domains"] == ["Art_Painting", "Cartoon", "watercolour"]
    # PACS anchors name the domains: RISE's phrase for the known ones, readable folder name for the extra
    assert p["embed"]["anchors"] == ["art painting", "cartoon", "watercolour"]


def test_domain_named_anchors_follow_the_found_spellings(tmp_path, cli):
    root = make_plain(tmp_path / "DN", domains=("Real", "Quick-Draw", "ClipArt"), classes=("cup",), per_class=1)
    params = _params(tmp_path)
    r = _preset(cli, "domainnet", root, params)
    assert r.code == 0, r.err
    p = yaml.safe_load(params.read_text())
    assert p["sweep"]["domains"] == ["ClipArt", "Quick-Draw", "Real"]
    assert p["embed"]["anchors"] == ["clipart", "quickdraw", "real photo"]
    assert len(_lines(r.err, "warning:")) == 3   # infograph, painting, sketch missing


def test_wrong_dataset_is_refused_and_params_untouched(tmp_path, cli):
    root = make_plain(tmp_path / "PACS", domains=("art_painting", "cartoon", "photo", "sketch"),
                      classes=("dog",), per_class=1)
    params = _params(tmp_path)
    before = params.read_bytes()
    r = _preset(cli, "vlcs", root, params)
    assert r.code == 2 and "Traceback" not in r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    assert "VLCS" in lines[0] and "rise-pipeline preset pacs" in lines[0]
    assert params.read_bytes() == before


def test_officehome_index_file_root(tmp_path, cli):
    rows = ["path,domain,class"]
    for i, (domain, cls) in enumerate([("art", "Alarm_Clock"), ("clipart", "Bucket"), ("product", "Alarm_Clock"),
                                       ("real_world", "Bucket")]):
        write(tmp_path / "img" / f"{i}.jpg", jpeg(i))
        rows.append(f"img/{i}.jpg,{domain},{cls}")
    index = tmp_path / "officehome.csv"
    index.write_text("\n".join(rows) + "\n")
    params = _params(tmp_path)
    r = _preset(cli, "officehome", index, params)
    assert r.code == 0, r.err
    assert not _lines(r.err, "warning:")
    p = yaml.safe_load(params.read_text())
    assert p["data"]["root"] == str(index)
    assert p["sweep"]["domains"] == ["art", "clipart", "product", "real_world"]
    assert p["embed"]["anchors"] == ["Art", "Clipart", "Product", "RealWorld"]
    assert p["embed"]["class_names"] == {}  # the embed step's readable() names them


def test_missing_root_gets_canonical_spellings_and_one_note(tmp_path, cli):
    params = _params(tmp_path)
    r = _preset(cli, "officehome", tmp_path / "not-yet", params)
    assert r.code == 0, r.err
    notes = _lines(r.err, "note:")
    assert len(notes) == 1 and str(tmp_path / "not-yet") in notes[0] and "Real World" in notes[0]
    assert not _lines(r.err, "warning:")
    p = yaml.safe_load(params.read_text())
    assert p["sweep"]["domains"] == ["Art", "Clipart", "Product", "Real World"]
    assert p["embed"]["anchors"] == ["Art", "Clipart", "Product", "RealWorld"]


def test_shard_refuses_sweep_domains_missing_from_the_data(tmp_path, cli):
    root = make_plain(tmp_path / "VLCS", domains=("caltech", "labelme", "sun"), classes=("bird",), per_class=2)
    params = _params(tmp_path, "sweep:\n  domains: [Caltech101, labelme, SUN09]\n")
    work = tmp_path / "work"
    r = cli("extract", "--steps", "shard", "--data-root", root, "--out", work, "--params", params, env=ENV)
    assert r.code == 2 and "Traceback" not in r.err
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    for fragment in ("'Caltech101'", "'SUN09'", "caltech, labelme, sun", "rise-pipeline preset", "sweep.domains"):
        assert fragment in lines[0], fragment
    assert "'labelme'" not in lines[0]
    assert not work.exists()
