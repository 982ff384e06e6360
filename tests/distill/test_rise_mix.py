"""rise-mix: one student per teacher store on the same batches, each at its own learning rate, trained as the
reference's mix trains them (KD + CE + AD, no RD), predicting with the sum of their scores; rise-mix-full
gives every student RISE's full loss."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.distill.config import DistillConfig, effective
from pipeline.distill.data import EvalItems, RunData, view_index
from pipeline.distill.loader import RowLocations, StoreImages
from pipeline.distill.step import run, run_group
from pipeline.distill.students import build_student
from pipeline.distill.trainer import Trainer
from pipeline.errors import UserError
from pipeline.extract.embed_step import EmbedConfig
from pipeline.extract.embed_step import run as embed_run
from pipeline.store import verify_store
from tests.distill_fixtures import DOMAINS, distill_config, shared_work

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


LRS = [1e-3, 4e-3]  # the first and the second teacher's student, as the reference's TerraIncognita has 2e-3, 4e-3


def _cfg(**kw) -> DistillConfig:
    return distill_config(**{"method": "rise-mix", "teachers": ["default", "rn"], "mix_lrs": LRS, **kw})


def test_extract_store_name_writes_its_own_files(work):
    for name in ("embeddings-rn.h5", "teacher_report-rn.json", "audit-rn.json", "embed_config-rn.json"):
        assert (work / "teachers" / name).is_file(), name
    assert any((work / "parts-rn").iterdir())
    assert verify_store(work, "rn").attrs["model"] == "RISE-tiny-RN"


@pytest.fixture(scope="module")
def mixed(work, tmp_path_factory):
    out = tmp_path_factory.mktemp("mixrun") / "run"
    return out, run(_cfg(), work, out)


def test_each_student_equals_a_rise_abs_run_from_its_own_teacher(work, mixed, tmp_path):
    """rise-mix's students have no RD (the reference's): each is the rise-abs run (CE + KD + AD) from its own
    teacher at its own learning rate."""
    out, metrics = mixed
    assert metrics["method"] == "rise-mix" and metrics["teachers"] == ["default", "rn"]
    assert metrics["teacher_models"] == ["RISE-micro-ViT", "RISE-tiny-RN"] and metrics["lrs"] == LRS
    assert metrics["loss_weights"] == {"ce": 0.2, "kd": 0.8, "ad": 1.0, "rd": 0.0}
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    for k, store in enumerate(["default", "rn"]):
        alone_out = tmp_path / store
        run(_cfg(method="rise-abs", teachers=[store], lr=LRS[k], mix_lrs=[]), work, alone_out)
        alone = torch.load(alone_out / "checkpoints" / "last.pt", weights_only=True)["units"][0]["model"]
        mine = last["units"][k]["model"]
        assert all(torch.equal(mine[n], alone[n]) for n in alone), store


def _reference_loss(z, logits, labels, teacher_embedding, t_hat, T, w_kd, w_ce, w_dist):
    """One student's loss as train_rise_mix_teacher.py computes it (lines 159-214): KD against the teacher's
    100 * cosine logits, cross-entropy, AD as a cosine-embedding loss; the first student's RD is multiplied
    by 0 there and the second's is absent, so neither enters."""
    teacher_logits = 100.0 * F.normalize(teacher_embedding, dim=-1) @ t_hat.T
    supervised = torch.nn.CrossEntropyLoss()(logits, labels)
    kl = F.kl_div(F.log_softmax(logits / T, dim=1), F.softmax(teacher_logits / T, dim=1),
                  reduction="batchmean") * T * T
    instance = torch.stack([t_hat[int(y)] for y in labels])
    ad = torch.nn.CosineEmbeddingLoss()(F.normalize(z, dim=-1), instance, torch.ones(len(z)))
    return kl * w_kd + supervised * w_ce + ad * w_dist


def test_the_mix_trains_step_for_step_as_the_reference_loop(work):
    """Two students, each with its own learning rate and the reference's loss, on the very batches the mix
    sees; after every step each reference student's state equals the mix's. A rise-mix-full record trained
    alongside (RD on) ends elsewhere: the comparison can fail."""
    stores = [verify_store(work), verify_store(work, "rn")]
    cfg = effective(_cfg(lr_decay_at=0.5))
    target = stores[0].domain_names.index(TARGET)
    data = RunData(work, stores[0], [i for i in range(len(stores[0].domain_names)) if i != target], target,
                   cfg.image_size, cfg.seed, cfg.batch_size, 0, cfg.balance)
    mix = Trainer(cfg, stores, data)
    full = Trainer(dataclasses.replace(cfg, method="rise-mix-full"), stores, data)
    assert [u.optimizer.param_groups[0]["lr"] for u in mix.units] == LRS
    refs, opts, scheds = [], [], []
    for k, store in enumerate(stores):
        torch.manual_seed(cfg.seed)
        m = build_student("test_resnet", store.text_class)
        assert all(torch.equal(v, mix.units[k].model.state_dict()[n]) for n, v in m.state_dict().items())
        opt = torch.optim.SGD(m.parameters(), lr=LRS[k], momentum=0.9, weight_decay=5e-4)
        refs.append(m), opts.append(opt), scheds.append(torch.optim.lr_scheduler.MultiStepLR(opt, [1], 0.1))
    t_hats = [F.normalize(torch.as_tensor(s.text_class), dim=-1) for s in stores]
    steps = 0
    for epoch in range(cfg.epochs):
        mix.begin_epoch(), full.begin_epoch()
        for m in refs:
            m.train()
        for step, batch in enumerate(data.train_loader(epoch, data.plan(epoch))):
            if batch is None or len(batch.label) < 2:
                continue
            mix.train_step(batch, epoch, step)
            full.train_step(batch, epoch, step)
            keys = stores[0].keys[batch.row.numpy()]
            for k, (m, opt, store) in enumerate(zip(refs, opts, stores, strict=True)):
                teacher = torch.from_numpy(store.view_embedding(
                    [store.view_row_of(key) for key in keys],
                    [view_index(cfg.seed, key, epoch, store.views_k) for key in keys]))
                z, logits = m(m.normalize(batch.image))
                loss = _reference_loss(z, logits, batch.label, teacher, t_hats[k], cfg.temperature, cfg.w_kd,
                                       cfg.w_ce, cfg.w_dist)
                opt.zero_grad()
                loss.backward()
                opt.step()
                mine = mix.units[k].model.state_dict()
                for n, v in m.state_dict().items():
                    torch.testing.assert_close(mine[n], v, rtol=1e-4, atol=1e-6, msg=f"{n}, student {k}")
            steps += 1
        for u in (*mix.units, *full.units):
            u.scheduler.step()
        for s in scheds:
            s.step()
    assert steps >= 4 and [u.optimizer.param_groups[0]["lr"] for u in mix.units] == pytest.approx([v / 10 for v in LRS])
    w = full.units[0].model.state_dict()
    assert not all(torch.allclose(w[n].float(), v.float(), rtol=1e-4, atol=1e-6)
                   for n, v in refs[0].state_dict().items())


def test_the_mix_predicts_with_the_sum_of_the_students_scores(work, mixed):
    """Recompute the last epoch's target accuracy from the two saved students, independently of the trainer."""
    out, _ = mixed
    stores = [verify_store(work), verify_store(work, "rn")]
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    models = []
    for k, store in enumerate(stores):
        m = build_student("test_resnet", store.text_class)
        m.load_state_dict(last["units"][k]["model"])
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
    (dict(mix_lrs=[1e-3]), "mix_lrs gives 1 learning rates for 2 teachers"),
    (dict(mix_lrs=[1e-3, -1.0]), "mix_lrs must be finite numbers > 0"),
    (dict(method="rise-mix-full", teachers=["default"]), "rise-mix-full mixes students of several teachers"),
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
