"""The student as a deliverable, through the CLI: `export` (a plain timm folder loaded in a process that
cannot import this project), `evaluate` (reproduces the run's target_acc), `predict` (bad files are rows),
and the one-line refusals. References are computed here: the run's own metrics.json (written by distill's
trainer), the student's logits from best.pt, timm's own loader and transform in a clean interpreter."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.distill.step import DistillConfig, run
from tests.distill_fixtures import CLASSES, DOMAINS, distill_config

TARGET = DOMAINS[0]


def _cfg(**kw) -> DistillConfig:
    return distill_config(**{"lr": 0.01, **kw})


@pytest.fixture(scope="module")
def work(distill_work):
    return distill_work(3)


@pytest.fixture(scope="module")
def data(work):
    return work.parent / "data"  # the generated DomainBed folder the work folder was sharded from


@pytest.fixture(scope="module")
def trained(work, tmp_path_factory):
    """A run folder as a group writes it (OUT/<member>) and its metrics."""
    out = tmp_path_factory.mktemp("export") / f"{TARGET}-0" / "rise-member"
    return out, run(_cfg(), work, out)


@pytest.fixture(scope="module")
def exported(trained, work, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported") / "student"
    from tests.conftest import run_cli

    r = run_cli("export", trained[0], "--work", work, "--out", out, in_process=True)
    assert r.code == 0, r.err
    return out, r


def _student_logits(run_folder: Path, x: torch.Tensor) -> torch.Tensor:
    """The run's selected student, rebuilt from best.pt with the project's Student: backbone, projector,
    classifier applied one after another (the unfolded reference)."""
    from pipeline.distill.students import Student

    state = torch.load(run_folder / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    w = state["model"]
    student = Student("test_resnet", np.zeros(tuple(w["classifier.weight"].shape), np.float32))
    student.load_state_dict(w)
    student.eval()
    with torch.no_grad():
        return student.classifier(student.projector(student.backbone(x)))


def test_export_is_a_timm_folder_with_labels_and_the_run_transform(exported, trained):
    out, r = exported
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "test_resnet" and cfg["num_classes"] == len(CLASSES)
    assert cfg["label_names"] == list(CLASSES)
    pcfg = cfg["pretrained_cfg"]
    assert pcfg["input_size"] == [3, 32, 32] and pcfg["crop_pct"] == 1.0 and pcfg["crop_mode"] == "squash"
    assert pcfg["interpolation"] == "bilinear"
    assert cfg["rise_pipeline"]["selected_epoch"] == trained[1]["selected_epoch"]
    assert "hf-hub:" in (out / "README.md").read_text() and "push_to_hf_hub" in (out / "README.md").read_text()
    assert "folded logits differ from the student's by at most" in r.err
    assert "left out" not in r.err  # nothing is left out of a run without the text ensemble


def test_folded_logits_equal_the_students(exported, trained):
    import timm

    model = timm.create_model(f"local-dir:{exported[0]}", pretrained=True).eval()
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        folded = model(x)
    unfolded = _student_logits(trained[0], x)
    assert folded.shape == unfolded.shape == (6, len(CLASSES))
    torch.testing.assert_close(folded, unfolded, rtol=1e-5, atol=1e-5)


# Runs in a fresh interpreter, in another folder, with this project's packages made unimportable: only timm,
# torch and PIL score the export, with timm's own transform. Prints {file: probabilities} as JSON.
CLEAN_SCRIPT = r"""
import importlib.abc, json, sys
from pathlib import Path

class NoProject(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pipeline", "stages", "tests"):
            raise ImportError(f"{name} is not available here")
sys.meta_path.insert(0, NoProject())
try:
    import pipeline  # noqa: F401
    sys.exit("the project is importable")
except ImportError:
    pass

import timm, torch
from PIL import Image

model_dir, images = sys.argv[1], sys.argv[2]
model = timm.create_model("local-dir:" + model_dir, pretrained=True).eval()
transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
labels = model.pretrained_cfg["label_names"]
out = {}
with torch.no_grad():
    for f in sorted(Path(images).rglob("*.png")):
        x = transform(Image.open(f).convert("RGB")).unsqueeze(0)
        out[str(f)] = [f.parent.name, model(x).softmax(-1)[0].tolist(), labels]
assert not [m for m in sys.modules if m.split(".")[0] in ("pipeline", "stages")]
print(json.dumps(out))
"""


def test_export_scores_in_a_process_without_the_project(exported, trained, data, work, tmp_path, cli):
    out, _ = exported
    r = subprocess.run([sys.executable, "-I", "-c", CLEAN_SCRIPT, str(out), str(data / TARGET)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    scored = json.loads(r.stdout)
    n = len(scored)
    assert n == 20
    hits = sum(labels[int(np.argmax(p))] == true for true, p, labels in scored.values())
    assert abs(hits / n - trained[1]["target_acc"]) <= 1 / n + 1e-9  # within one image

    # image by image, the clean process's probabilities are the run's own scoring (predict on the run folder)
    p = cli("predict", trained[0], data / TARGET, "--work", work, "-k", str(len(CLASSES)), in_process=True)
    assert p.code == 0, p.err
    rows = list(csv.DictReader(io.StringIO(p.out)))
    assert len(rows) == n
    for row in rows:
        _, probs, labels = scored[row["path"]]
        got = {row[f"class_{i}"]: float(row[f"prob_{i}"]) for i in range(1, len(CLASSES) + 1)}
        assert got == pytest.approx(dict(zip(labels, probs, strict=True)), abs=2e-5)


def test_evaluate_reproduces_target_acc(trained, exported, data, work, tmp_path, cli):
    run_folder, metrics = trained
    out = tmp_path / "eval"
    r = cli("evaluate", run_folder, "--data-root", data, "--domains", TARGET, "--work", work, "--out", out,
            in_process=True)
    assert r.code == 0, r.err
    result = json.loads((out / "evaluation.json").read_text())
    got = result["per_domain"][TARGET]
    assert got["acc"] == metrics["target_acc"] and got["n"] == metrics["n_target"]
    assert np.asarray(got["confusion"]).sum() == got["n"] and np.trace(got["confusion"]) == got["correct"]
    assert f"{TARGET}  acc {metrics['target_acc']:.4f}" in r.out
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader((out / "per_domain.csv").open()))
    assert rows == [{"domain": TARGET, "n": "20", "correct": str(got["correct"]), "acc": f"{got['acc']:.6f}"}]
    # the export with timm's transform: within one image
    e = cli("evaluate", exported[0], "--data-root", data, "--domains", TARGET, in_process=True)
    assert e.code == 0, e.err
    acc = float(e.out.split("acc ")[1].split()[0])
    assert abs(acc - metrics["target_acc"]) <= 1 / 20 + 1e-4


def test_predict_lists_a_corrupt_file(exported, data, tmp_path, cli):
    images = tmp_path / "images"
    shutil.copytree(data / TARGET / CLASSES[0], images)
    good = sorted(p.name for p in images.iterdir())
    (images / "broken.png").write_bytes((images / good[0]).read_bytes()[:60])
    (images / "empty.jpg").write_bytes(b"")
    out = tmp_path / "pred.csv"
    r = cli("predict", exported[0], images, "--out", out, "-k", "1", in_process=True)
    assert r.code == 0, r.err
    rows = {Path(row["path"]).name: row for row in csv.DictReader(out.open())}
    assert set(rows) == {*good, "broken.png", "empty.jpg"}
    assert rows["broken.png"]["error"].startswith("undecodable") and rows["broken.png"]["class_1"] == ""
    assert rows["empty.jpg"]["error"] == "empty file"
    assert all(rows[g]["class_1"] in CLASSES and 0.5 <= float(rows[g]["prob_1"]) <= 1 for g in good)
    assert "2 of 12 file(s) could not be read" in r.err


def _one_line_error(r, *needles):
    assert r.code == 2, (r.out, r.err)
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_refusals_are_one_line(trained, exported, data, work, tmp_path, cli):
    incomplete = tmp_path / "incomplete"
    shutil.copytree(trained[0], incomplete)
    (incomplete / "metrics.json").unlink()
    _one_line_error(cli("export", incomplete, "--work", work, "--out", tmp_path / "x", in_process=True),
                    "is not a complete distill run")
    _one_line_error(cli("predict", trained[0].parent, data, "--work", work, in_process=True), "is a group folder")
    _one_line_error(cli("export", trained[0], "--work", tmp_path, "--out", tmp_path / "x", in_process=True),
                    "--work")
    foreign = tmp_path / "bert"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    _one_line_error(cli("evaluate", foreign, "--data-root", data, in_process=True), "not a timm model folder",
                    "'bert'")
    unlabelled = tmp_path / "unlabelled"
    shutil.copytree(exported[0], unlabelled)
    cfg = json.loads((unlabelled / "config.json").read_text())
    del cfg["label_names"]
    (unlabelled / "config.json").write_text(json.dumps(cfg))
    _one_line_error(cli("predict", unlabelled, data, in_process=True), "without label_names")
    _one_line_error(cli("export", trained[0], "--work", work, "--out", data, in_process=True), "is not empty")


def test_unknown_classes_are_named_once(exported, data, tmp_path, cli):
    other = tmp_path / "other"
    shutil.copytree(data / TARGET, other / "newdomain")
    shutil.copytree(data / TARGET / CLASSES[0], other / "newdomain" / "Cat")
    (other / "newdomain" / CLASSES[1]).rename(other / "newdomain" / CLASSES[1].upper())  # matched by name
    r = cli("evaluate", exported[0], "--data-root", other, in_process=True)
    assert r.code == 0, r.err
    assert [ln for ln in r.err.splitlines() if "does not know" in ln] == \
        ["classes the model does not know, left out: Cat"]
    assert r.out.strip().startswith("newdomain") and r.out.strip().endswith("/20)")  # the Cat images left out
    only_unknown = tmp_path / "cats"
    shutil.copytree(data / TARGET / CLASSES[0], only_unknown / "d" / "Cat")
    _one_line_error(cli("evaluate", exported[0], "--data-root", only_unknown, in_process=True),
                    "none of the classes")


def _acc_of(out: str, domain: str) -> float:
    return float(next(ln for ln in out.splitlines() if ln.startswith(domain)).split("acc ")[1].split()[0])


def test_text_ensemble_run_says_what_the_export_leaves_out(work, data, tmp_path, cli):
    run_folder = tmp_path / "te"
    metrics = run(_cfg(text_ensemble=True), work, run_folder)
    r = cli("export", run_folder, "--work", work, "--out", tmp_path / "te-export", in_process=True)
    assert r.code == 0, r.err
    assert [ln for ln in r.err.splitlines() if "left out" in ln] == \
        [ln for ln in r.err.splitlines() if ln.startswith("note: the run's test-time text ensemble")]
    assert "text ensemble" in json.loads((tmp_path / "te-export" / "config.json").read_text())["rise_pipeline"]["left_out"]
    e = cli("evaluate", run_folder, "--data-root", data, "--domains", TARGET, "--work", work, in_process=True)
    assert e.code == 0, e.err
    assert _acc_of(e.out, TARGET) == pytest.approx(metrics["target_acc"], abs=1e-4)


@pytest.mark.slow
def test_rise_mix_exports_one_folder_per_student(work, data, tmp_path, cli):
    from pipeline.extract.embed_step import EmbedConfig
    from pipeline.extract.embed_step import run as embed_run

    mix_work = tmp_path / "work"
    shutil.copytree(work, mix_work)
    embed_run(EmbedConfig(model="RISE-tiny-RN", pretrained="random", views=3, batch_size=64, device="cpu",
                          workers=0, seed=0, dtype="float32", store="rn"), work=mix_work)
    run_folder = tmp_path / "mix"
    metrics = run(_cfg(method="rise-mix", teachers=["default", "rn"]), mix_work, run_folder)
    out = tmp_path / "mix-export"
    r = cli("export", run_folder, "--work", mix_work, "--out", out, in_process=True)
    assert r.code == 0, r.err
    spec = json.loads((out / "ensemble.json").read_text())
    assert spec["members"] == ["student-0", "student-1"] and spec["label_names"] == list(CLASSES)
    # the sum of the two folders' softmax outputs, each loaded by timm alone, is the run's scoring
    import timm

    models = [timm.create_model(f"local-dir:{out / m}", pretrained=True).eval() for m in spec["members"]]
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    state = torch.load(run_folder / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)["model"]
    for k, model in enumerate(models):
        with torch.no_grad():
            folded = model(x)
        from pipeline.distill.students import Student

        student = Student("test_resnet", np.zeros(tuple(state[str(k)]["classifier.weight"].shape), np.float32))
        student.load_state_dict(state[str(k)])
        with torch.no_grad():
            torch.testing.assert_close(folded, student.eval()(x)[1], rtol=1e-5, atol=1e-5)
    for model_path, extra in ((run_folder, ["--work", mix_work]), (out, [])):
        e = cli("evaluate", model_path, "--data-root", data, "--domains", TARGET, *extra, in_process=True)
        assert e.code == 0, e.err
        assert abs(_acc_of(e.out, TARGET) - metrics["target_acc"]) <= (1e-4 if model_path == run_folder else 0.05 + 1e-4)
