"""The demo teacher: a tiny open_clip CLIP pretrained contrastively on captioned demo-world images.

It stands in for web-scale pretraining, so it sees captioned images of all four styles, but drawn with a
seed of its own: no benchmark image is in its corpus. It is trained with open_clip's own model, tokenizer
and `ClipLoss` (InfoNCE with a learned temperature) and saved as an ordinary open_clip checkpoint, so
the pipeline loads it through `--pretrained PATH` exactly like a real one. Zero-shot accuracy per domain
is measured on a third, independently seeded set of images.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import numpy as np
import open_clip
import torch

from ..config import field
from ..errors import UserError
from ..extract.project_models import register_project_models
from ..io import write_torch
from . import world
from .batch_augment import BatchAugment, augment
from .schedules import warmup_cosine

# Zero-shot prompts in the world's own caption styles (the way CLIP's templates echo web captions).
TEMPLATES = ["a photo of a {}.", "a picture of a {}.", "a sketch of a {}.", "a cartoon of a {}.",
             "a painting of a {}."]


@dataclasses.dataclass
class PretrainConfig:
    enabled: bool = field(True, "Pretrain the demo teacher; false (a real CLIP) leaves only a placeholder note.",
                          cli=False)
    model: str = field("RISE-tiny-RN", "open_clip model config to pretrain (a project config).")
    seed: int = field(0, "Seed of initialisation and batch order.")
    corpus_seed: int = field(101, "World seed of the pretraining images (must differ from world.seed).")
    per_cell: int = field(150, "Pretraining images per class x domain.")
    eval_seed: int = field(202, "World seed of the zero-shot evaluation images (must differ from both).")
    eval_per_cell: int = field(25, "Evaluation images per class x domain.")
    epochs: int = field(20, "Passes over the pretraining corpus.")
    batch_size: int = field(64, "Contrastive batch size (image-caption pairs).")
    lr: float = field(1e-3, "AdamW peak learning rate (linear warm-up, cosine decay).")
    weight_decay: float = field(0.1, "AdamW weight decay.")
    warmup: float = field(0.05, "Share of the steps spent warming up the learning rate.")
    augment: bool = field(True, "Train on a random view of each image (crop, flip, brightness / contrast / "
                                "saturation, grayscale: RISE's view augmentation but hue), so the teacher is "
                                "as right on the augmented views distill replays as on clean images.")
    logit_scale: float = field(100.0, "CLIP's logit scale at the end of pretraining: it rises log-linearly from "
                                      "open_clip's 1/0.07 to this value, step by step (0: learned, as open_clip "
                                      "does). 100 is what the released CLIPs learned, and the scale at which RISE's "
                                      "losses read every teacher's logits.")
    threads: int = field(2, "torch CPU threads (0: torch's default).")
    templates: list[str] = field(list(TEMPLATES), "Zero-shot prompt templates for the report ('{}' = class).",
                                 cli=False)

    def __post_init__(self) -> None:
        if self.corpus_seed == self.eval_seed:
            raise UserError("teacher.corpus_seed and teacher.eval_seed must differ (evaluation on training images)")
        for name in ("per_cell", "eval_per_cell", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"teacher.{name} must be >= 1, got {getattr(self, name)}")
        if not (self.logit_scale == 0 or 1 <= self.logit_scale <= 100):
            raise UserError(f"teacher.logit_scale must be 0 (learned) or within 1..100, got {self.logit_scale}")
        if not 0 <= self.warmup < 1:
            raise UserError(f"teacher.warmup must be in [0, 1), got {self.warmup}")
        bad = [t for t in self.templates if "{}" not in t]
        if bad or not self.templates:
            raise UserError(f"teacher.templates: each template needs a '{{}}' for the class name: {bad or '(none)'}")


@dataclasses.dataclass
class ImageSet:
    images: torch.Tensor  # (N, 3, H, W): float16 through the model's eval preprocessing, or uint8 as rendered
    captions: list[str]
    labels: torch.Tensor  # class index
    domains: list[str]


def create(model_name: str, pretrained: str | None = None):
    """(model, eval preprocessing, tokenizer) through open_clip's factory, as every real teacher is made."""
    register_project_models()
    if model_name not in open_clip.list_models():
        raise UserError(f"unknown open_clip model '{model_name}'")
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
    return model, preprocess, open_clip.get_tokenizer(model_name)


def render_set(wcfg: world.WorldConfig, seed: int, per_cell: int, preprocess, progress=None) -> ImageSet:
    """Render a fresh set of world images (own seed) and preprocess them once, as tensors (`preprocess`
    None: the uint8 images as rendered, for augmented training)."""
    cfg = dataclasses.replace(wcfg, seed=seed, per_cell=per_cell)
    classes = sorted(cfg.classes)
    images, captions, labels, domains = [], [], [], []
    samples = world.iter_samples(cfg)
    for s in progress(samples) if progress else samples:
        images.append(preprocess(s.image).to(torch.float16) if preprocess is not None
                      else torch.from_numpy(np.asarray(s.image).copy()).permute(2, 0, 1))
        captions.append(s.caption)
        labels.append(classes.index(s.class_name))
        domains.append(s.domain)
    return ImageSet(torch.stack(images), captions, torch.tensor(labels), domains)


def logit_scale_at(step: int, total: int, start: float, end: float) -> float:
    """The scheduled logit scale after `step` of `total` steps: log-linear from `start` to `end`."""
    return math.exp(math.log(start) + (math.log(end) - math.log(start)) * min(1.0, step / max(1, total)))


def train_views(model, preprocess) -> Callable:
    """(uint8 batch, generator) -> the model's input: one random view of each image (`batch_augment`) at the
    model's size, with CLIP's normalisation."""
    size = open_clip.get_model_preprocess_cfg(model)["size"]
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    norm = preprocess.transforms[-1]
    mean, std = torch.tensor(norm.mean).view(1, 3, 1, 1), torch.tensor(norm.std).view(1, 3, 1, 1)
    aug = BatchAugment()

    def views(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return (augment(images, size, aug, gen) - mean) / std

    return views


def pretrain(model, tokenizer, corpus: ImageSet, cfg: PretrainConfig,
             progress: Callable | None = None, views: Callable | None = None) -> dict:
    """Train `model` in place with CLIP's InfoNCE on (image, caption) pairs; return the loss curve.

    With `cfg.logit_scale` > 0 the temperature follows a schedule instead of being learned. RISE reads every
    teacher's logits as 100 cos(image, text), CLIP's own calibration: the released CLIPs learned that scale
    on hundreds of millions of pairs. A small CLIP left to learn it on a few thousand templated captions stays
    near open_clip's initial 1/0.07 (about 13.5 here) and spreads its cosines for that scale, so read at 100
    its predictions are near one-hot, wrong ones included, and KD becomes hard-label training on its mistakes.
    Raised step by step to the scale RISE assumes, the teacher learns cosines calibrated for it."""
    torch.manual_seed(cfg.seed)
    order_rng = torch.Generator().manual_seed(cfg.seed)
    tokens = tokenizer(corpus.captions)
    n = len(corpus.captions)
    steps_per_epoch = max(1, n // cfg.batch_size)  # full batches only: InfoNCE needs negatives
    total = steps_per_epoch * cfg.epochs
    # fused: one kernel over each parameter instead of a dozen tensor ops. The text tower's 49,408 x 64 token
    # table (3.2 M of 4.6 M parameters) is decayed and updated every step; unfused that step cost 37 ms of
    # a 140 ms training step on one CPU thread, fused 4 ms.
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, total, max(1, int(cfg.warmup * total))))
    loss_fn = open_clip.ClipLoss()
    start_scale = float(model.logit_scale.detach().exp())
    if cfg.logit_scale:
        model.logit_scale.requires_grad_(False)
    model.train()
    losses = []
    bar = progress(total) if progress else None
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=order_rng)
        for b in range(steps_per_epoch):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            x = views(corpus.images[idx], order_rng) if views is not None else corpus.images[idx].float()
            img_f = model.encode_image(x, normalize=True)
            txt_f = model.encode_text(tokens[idx], normalize=True)
            loss = loss_fn(img_f, txt_f, model.logit_scale.exp())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                if cfg.logit_scale:
                    model.logit_scale.fill_(math.log(logit_scale_at(len(losses) + 1, total, start_scale,
                                                                    cfg.logit_scale)))
                else:  # CLIP clamps the learned temperature at 100
                    model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.item())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    if bar is not None:
        bar.close()
    model.eval()
    per_epoch = np.array(losses).reshape(cfg.epochs, steps_per_epoch).mean(axis=1)
    return {"steps": total, "loss_per_epoch": [round(float(v), 4) for v in per_epoch],
            "logit_scale": round(float(model.logit_scale.detach().exp()), 4)}


@torch.no_grad()
def zero_shot(model, tokenizer, evalset: ImageSet, classes: list[str], templates: list[str],
              batch_size: int = 256) -> dict:
    """Accuracy per domain of argmax cos(image, class text embedding), the class embedding being open_clip's
    zero-shot classifier (mean of the normalised template embeddings, renormalised)."""
    model.eval()
    text = open_clip.build_zero_shot_classifier(model, tokenizer, classes, templates,
                                                device=next(model.parameters()).device)  # D x C
    cos = torch.cat([model.encode_image(evalset.images[i:i + batch_size].float(), normalize=True) @ text
                     for i in range(0, len(evalset.labels), batch_size)])
    correct = (cos.argmax(1) == evalset.labels).numpy()
    domains = np.array(evalset.domains)
    per_domain = {d: round(float(correct[domains == d].mean()), 4) for d in sorted(set(evalset.domains))}
    # How the distill step reads these logits: at CLIP's scale 100, softened by RISE's KD temperature 3.
    targets = torch.softmax(100 * cos / 3, dim=1)
    entropy = -(targets * targets.clamp_min(1e-12).log()).sum(1).mean()
    return {"per_domain": per_domain, "mean": round(float(np.mean(list(per_domain.values()))), 4),
            "chance": round(1 / len(classes), 4), "n": int(len(correct)),
            "ce_at_scale_100": round(float(torch.nn.functional.cross_entropy(100 * cos, evalset.labels)), 4),
            "kd_target_entropy": round(float(entropy), 4)}


def save_checkpoint(model, path, meta: dict) -> str:
    """An open_clip checkpoint: {'state_dict': ...} plus plain metadata (loadable with weights_only), written
    atomically with the same bytes for the same weights; returns its SHA-256."""
    return write_torch(path, {"state_dict": model.state_dict(), **meta})


def run(cfg: PretrainConfig, wcfg: world.WorldConfig, progress_items=None, progress_steps=None) -> tuple:
    """Render corpus and eval set, pretrain, evaluate. Returns (model, report dict)."""
    if wcfg.seed in (cfg.corpus_seed, cfg.eval_seed):
        raise UserError(f"teacher corpus/eval seed equals world.seed ({wcfg.seed}): the teacher would see "
                        "benchmark images; choose different seeds")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # before the model exists: its initialisation is part of the seeded result
    model, preprocess, tokenizer = create(cfg.model)
    t0 = time.perf_counter()
    # Augmented training keeps the corpus as rendered (uint8) and draws a view per step; otherwise it is
    # preprocessed once, as the evaluation images are.
    corpus = render_set(wcfg, cfg.corpus_seed, cfg.per_cell, None if cfg.augment else preprocess, progress_items)
    evalset = render_set(wcfg, cfg.eval_seed, cfg.eval_per_cell, preprocess, progress_items)
    t1 = time.perf_counter()
    classes = sorted(wcfg.classes)
    before = zero_shot(model, tokenizer, evalset, classes, cfg.templates)
    curve = pretrain(model, tokenizer, corpus, cfg, progress_steps,
                     train_views(model, preprocess) if cfg.augment else None)
    t2 = time.perf_counter()
    after = zero_shot(model, tokenizer, evalset, classes, cfg.templates)
    report = {"model": cfg.model, "classes": classes, "domains": sorted(wcfg.domains),
              "templates": list(cfg.templates), "corpus_size": len(corpus.captions),
              "eval_size": len(evalset.captions), "zero_shot": after, "zero_shot_untrained": before,
              "seconds": {"render": round(t1 - t0, 1), "train": round(t2 - t1, 1)}, **curve}
    return model, report
