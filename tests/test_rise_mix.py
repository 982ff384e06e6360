"""rise-mix: one RISE student per teacher store on the same batches, predicting with the sum of their scores."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from pipeline.distill.config import DistillConfig
from pipeline.distill.data import EvalItems
from pipeline.distill.loader import RowLocations, StoreImages
from pipeline.distill.step import run, run_group
from pipeline.distill.students import build_student
from pipeline.errors import UserError
from pipeline.extract.embed_step import EmbedConfig
from pipeline.extract.embed_step import run as embed_run
from pipeline.store import verify_store
from tests.distill_fixtures import DOMAINS, shared_work

TARGET = DOMAINS[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The shared K=3 work folder, copied, plus a second teacher's store `rn` (same shards, same views)."""
    work = tmp_path_factory.mktemp("mix") / "work"
    shutil.copytree(shared_work(3), work)
    before = (work / "embeddings.h5").read_bytes()
    embed_run(EmbedConfig(model="RISE-tiny-RN", pretrained="random", views=3, batch_size=64, device="cpu",
                          workers=0, seed=0, dtype="float32", store="rn"), work=work)
    assert (work / "embeddings.h5").read_bytes() == before  # the default store is left alone
    return work


def _cfg(**kw) -> DistillConfig:
    base = dict(target_domain=TARGET, student="test_resnet", pretrained=False, epochs=2, image_size=32,
                batch_size=8, workers=0, device="cpu", method="rise-mix", teachers=["default", "rn"])
    return DistillConfig(**{**base, **kw})


def test_extract_store_name_writes_its_own_files(work):
    for name in ("embeddings-rn.h5", "teacher_report-rn.json", "audit-rn.json", "embed_config-rn.json"):
        assert (work / "teachers" / name).is_file(), name
    assert any((work / "parts-rn").iterdir())
    assert verify_store(work, "rn").attrs["model"] == "RISE-tiny-RN"


@pytest.fixture(scope="module")
def mixed(work, tmp_path_factory):
    out = tmp_path_factory.mktemp("mixrun") / "run"
    return out, run(_cfg(), work, out)


def test_each_student_equals_a_rise_run_from_its_own_teacher(work, mixed, tmp_path):
    out, metrics = mixed
    assert metrics["method"] == "rise-mix" and metrics["teachers"] == ["default", "rn"]
    assert metrics["teacher_models"] == ["RISE-micro-ViT", "RISE-tiny-RN"]
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    for k, store in enumerate(["default", "rn"]):
        alone_out = tmp_path / store
        run(_cfg(method="rise", teachers=[store]), work, alone_out)
        alone = torch.load(alone_out / "checkpoints" / "last.pt", weights_only=True)["model"]
        mine = last["model"][str(k)]
        assert all(torch.equal(mine[n], alone[n]) for n in alone), store


def test_the_mix_predicts_with_the_sum_of_the_students_scores(work, mixed):
    """Recompute the last epoch's target accuracy from the two saved students, independently of the trainer."""
    out, _ = mixed
    stores = [verify_store(work), verify_store(work, "rn")]
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    models = []
    for k, store in enumerate(stores):
        m = build_student("test_resnet", store.text_class)
        m.load_state_dict(last["model"][str(k)])
        models.append(m.eval())
    target = stores[0].domain_names.index(TARGET)
    rows = np.flatnonzero(stores[0].domains == target)
    images = StoreImages(RowLocations(work, stores[0].keys), EvalItems(stores[0], 32))
    batch = torch.stack([images[int(r)].image for r in rows])
    with torch.no_grad():
        scores = sum(m(m.normalize(batch))[1].softmax(-1) for m in models)
    acc = float((scores.argmax(-1).numpy() == stores[0].labels[rows]).mean())
    rows_csv = (out / "epochs.csv").read_text().splitlines()
    header, final = rows_csv[0].split(","), rows_csv[-1].split(",")
    assert float(final[header.index("target_acc")]) == pytest.approx(acc, abs=1e-6)


def test_rise_mix_in_a_group_with_other_methods(work, mixed, tmp_path):
    _, alone = mixed
    results = run_group(_cfg(method="rise"), ["rise-mix", "erm"], [{}], work, tmp_path / "g")
    [mix] = [name for name in results if name.startswith("rise-mix-")]
    assert len(results) == 2 and results[mix]["target_acc"] == alone["target_acc"]
    assert results[mix]["source_val_acc"] == alone["source_val_acc"]


@pytest.mark.parametrize("kw,needle", [
    (dict(teachers=["default"]), "give two or more stores"),
    (dict(method="rise", teachers=["default", "rn"]), "several --teachers are for rise-mix"),
    (dict(teachers=["default", "nope"]), "teacher store 'nope' not found"),
    (dict(teachers=["default", "default"]), "name each store once"),
])
def test_bad_teacher_lists_are_refused_before_training(work, tmp_path, kw, needle):
    with pytest.raises(UserError, match=needle):
        run(_cfg(**kw), work, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_a_store_with_other_views_is_refused(work, tmp_path):
    other = tmp_path / "work"
    shutil.copytree(work, other)
    embed_run(EmbedConfig(model="RISE-tiny-RN", pretrained="random", views=2, batch_size=64, device="cpu",
                          workers=0, seed=0, dtype="float32", store="k2"), work=other)
    with pytest.raises(UserError, match="differs from 'default' in its views"):
        run(_cfg(teachers=["default", "k2"]), other, tmp_path / "r")
