"""The demo student's pretraining: the embedded default's stand-in for ImageNet.

RISE fine-tunes students that start from ImageNet weights. The demo gives its student the same start: a
timm backbone trained once, with plain supervised cross-entropy, on a corpus the world generator renders
with a seed of its own -- photo-style images of *other* objects (`world.PRETRAIN_SHAPES`: apple, boat,
key, ...), never the benchmark's seven classes, and by default never its cartoon, painting or sketch
styles. So the student learns to see shapes, as an ImageNet backbone has, without having seen a benchmark
class or a held-out style.

The result is saved the way timm's own weights are: a state_dict of the backbone without its classifier
(`num_classes=0`), which `distill.checkpoint` loads through `timm.create_model(..., pretrained=True,
pretrained_cfg_overlay=dict(file=PATH))`, the path any user's local weights take.

Training is ImageNet's recipe at the demo's scale: SGD with Nesterov momentum, linear warm-up then cosine
decay, random-resized crops, flips, colour jitter and random grayscale (`batch_augment`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import numpy as np
import timm
import torch
import torch.nn.functional as F

from ..config import field
from ..errors import UserError
from . import world
from .batch_augment import BatchAugment, augment, resize
from .schedules import warmup_cosine

# By default the corpus is photo-style, like ImageNet: the benchmark's other styles stay unseen.
PRETRAIN_DOMAINS = ("photo",)


@dataclasses.dataclass
class StudentPretrainConfig:
    enabled: bool = field(True, "Pretrain the demo student; false (real data, timm's ImageNet weights) leaves only "
                                "a placeholder note.", cli=False)
    model: str = field("test_resnet", "timm backbone to pretrain (distill.student must name the same).")
    image_size: int = field(32, "Training resolution (distill.image_size); images are rendered at world.image_size.")
    seed: int = field(0, "Seed of initialisation, batch order and augmentation.")
    corpus_seed: int = field(303, "World seed of the pretraining images.")
    per_class: int = field(300, "Pretraining images per class x domain.")
    eval_seed: int = field(404, "World seed of the held-out evaluation images (must differ from corpus_seed).")
    eval_per_class: int = field(25, "Evaluation images per class x domain.")
    classes: list[str] = field(list(world.PRETRAIN_CLASSES),
                               "Objects of the corpus: pretraining shapes only, never the benchmark's classes.")
    domains: list[str] = field(list(PRETRAIN_DOMAINS), "Rendering styles of the corpus (photo: ImageNet-like; the "
                                                       "benchmark's other styles stay unseen).")
    epochs: int = field(15, "Passes over the corpus.")
    batch_size: int = field(64, "Images per SGD step.")
    lr: float = field(0.05, "SGD peak learning rate (linear warm-up, cosine decay).")
    momentum: float = field(0.9, "SGD (Nesterov) momentum.")
    weight_decay: float = field(5e-4, "SGD weight decay.")
    warmup: float = field(0.05, "Share of the steps spent warming up the learning rate.")
    crop_scale: float = field(0.5, "Smallest crop area of the random-resized crop, as a share of the image.")
    threads: int = field(2, "torch CPU threads (0: torch's default).")

    def __post_init__(self) -> None:
        bad = [c for c in self.classes if c not in world.PRETRAIN_CLASSES]
        if bad or len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise UserError(f"student.classes: {', '.join(bad) if bad else 'need two or more distinct classes'}; "
                            f"valid (pretraining shapes): {', '.join(world.PRETRAIN_CLASSES)}")
        bad = [d for d in self.domains if d not in world.DOMAINS]
        if bad or not self.domains or len(set(self.domains)) != len(self.domains):
            raise UserError(f"student.domains: {', '.join(bad) or 'need distinct domains'}; "
                            f"valid: {', '.join(world.DOMAINS)}")
        if self.corpus_seed == self.eval_seed:
            raise UserError("student.corpus_seed and student.eval_seed must differ (evaluation on training images)")
        for name in ("per_class", "eval_per_class", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"student.{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise UserError("student.batch_size must be >= 2 (BatchNorm)")
        if not 16 <= self.image_size <= 512:
            raise UserError(f"student.image_size must be within 16..512 pixels, got {self.image_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)) or not 0 <= self.warmup < 1 \
                or not 0 < self.crop_scale <= 1:
            raise UserError("student: lr must be > 0, warmup in [0, 1), crop_scale in (0, 1]")


@dataclasses.dataclass
class ImageSet:
    images: torch.Tensor  # (N, 3, S, S) uint8, as rendered
    labels: torch.Tensor  # class index into cfg.classes


def render_set(cfg: StudentPretrainConfig, seed: int, per_class: int, image_size: int,
               progress: Callable | None = None) -> ImageSet:
    """Render `per_class` images of every (class, domain) with world seed `seed` (a pure function of it)."""
    cells = [(d, c, i) for d in sorted(cfg.domains) for c in cfg.classes for i in range(per_class)]
    images, labels = [], []
    rendered = world.render_cells(cells, seed, image_size)
    for (_, class_name, _), (im, _) in zip(cells, progress(rendered) if progress else rendered, strict=True):
        images.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
        labels.append(cfg.classes.index(class_name))
    return ImageSet(torch.stack(images), torch.tensor(labels))


def create(cfg: StudentPretrainConfig, n_classes: int):
    """The timm model with a classifier for the corpus, and its own input normalisation (as distill's
    student normalises: the backbone's mean / std)."""
    if not timm.is_model(cfg.model):
        raise UserError(f"unknown timm model {cfg.model!r} (student.model)")
    model = timm.create_model(cfg.model, pretrained=False, num_classes=n_classes)
    data_cfg = timm.data.resolve_data_config({}, model=model)
    mean = torch.tensor(data_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(data_cfg["std"]).view(1, 3, 1, 1)
    return model, lambda x: (x - mean) / std


def pretrain(model, normalize, corpus: ImageSet, cfg: StudentPretrainConfig, progress: Callable | None = None) -> dict:
    """Train `model` in place with cross-entropy on augmented corpus batches; return the curve."""
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(corpus.labels)
    steps_per_epoch = max(1, n // cfg.batch_size)  # full batches only (BatchNorm statistics)
    total = steps_per_epoch * cfg.epochs
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=cfg.momentum > 0)
    aug = BatchAugment(crop_scale=cfg.crop_scale)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, max(1, int(cfg.warmup * total))))
    model.train()
    losses, hits = [], []
    bar = progress(total) if progress else None
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        for b in range(steps_per_epoch):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            x = normalize(augment(corpus.images[idx], cfg.image_size, aug, gen))
            logits = model(x)
            loss = F.cross_entropy(logits, corpus.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            hits.append((logits.argmax(1) == corpus.labels[idx]).float().mean().item())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    if bar is not None:
        bar.close()
    model.eval()
    shape = (cfg.epochs, steps_per_epoch)
    return {"steps": total,
            "loss_per_epoch": [round(float(v), 4) for v in np.array(losses).reshape(shape).mean(axis=1)],
            "train_acc_per_epoch": [round(float(v), 4) for v in np.array(hits).reshape(shape).mean(axis=1)]}


@torch.no_grad()
def accuracy(model, normalize, images: ImageSet, size: int, batch_size: int = 256) -> float:
    model.eval()
    preds = torch.cat([model(normalize(resize(images.images[i:i + batch_size], size))).argmax(1)
                       for i in range(0, len(images.labels), batch_size)])
    return round(float((preds == images.labels).float().mean()), 4)


def backbone_state(model) -> dict[str, torch.Tensor]:
    """The backbone's weights as timm's `num_classes=0` model holds them (the classifier dropped)."""
    model.reset_classifier(0)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def run(cfg: StudentPretrainConfig, wcfg: world.WorldConfig, progress_items=None, progress_steps=None) -> tuple:
    """Render corpus and evaluation set, pretrain, evaluate. Returns (backbone state_dict, report)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # before the model exists: its initialisation is part of the seeded result
    model, normalize = create(cfg, len(cfg.classes))
    t0 = time.perf_counter()
    corpus = render_set(cfg, cfg.corpus_seed, cfg.per_class, wcfg.image_size, progress_items)
    evalset = render_set(cfg, cfg.eval_seed, cfg.eval_per_class, wcfg.image_size, progress_items)
    t1 = time.perf_counter()
    curve = pretrain(model, normalize, corpus, cfg, progress_steps)
    t2 = time.perf_counter()
    acc = accuracy(model, normalize, evalset, cfg.image_size)
    report = {"model": cfg.model, "classes": list(cfg.classes), "domains": sorted(cfg.domains),
              "corpus_size": len(corpus.labels), "eval_size": len(evalset.labels), "eval_acc": acc,
              "chance": round(1 / len(cfg.classes), 4), "parameters": sum(p.numel() for p in model.parameters()),
              "seconds": {"render": round(t1 - t0, 1), "train": round(t2 - t1, 1)}, **curve}
    return backbone_state(model), report
