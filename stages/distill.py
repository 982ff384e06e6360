"""`rise-pipeline distill`: train one student (RISE or a baseline) from a work folder's teacher store.

Leave-one-domain-out: train on the train split of every domain but --target-domain, select the epoch by
their validation split, test on the whole target domain. The `distill` section of --params gives the
defaults (RISE's, below); flags override it. The teacher never runs here.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from pipeline.config import field, load_section, read_params, to_dict
from pipeline.errors import UserError

METHODS = ("rise", "erm", "kd", "rise-abs", "rise-rel")  # == pipeline.losses.METHODS (kept light for --help)


@dataclass
class DistillConfig:
    """One distill run. Defaults are RISE's reference protocol (../shared/RISE.md)."""

    target_domain: str = field("", "Held-out domain: tested on whole, never trained on (required).")
    method: str = field("rise", "rise | erm | kd | rise-abs | rise-rel: which loss terms are on.")
    student: str = field("resnetv2_50x1_bit.goog_in21k_ft_in1k", "timm model name of the student backbone.")
    pretrained: bool = field(True, "Start the backbone from timm's ImageNet weights (must be in the local cache).")
    epochs: int = field(20, "Training epochs (RISE: 20). Use <= the store's views K for a fresh view each epoch.")
    lr: float = field(1e-3, "SGD learning rate (RISE: 1e-3; 2e-3 for TerraIncognita).")
    momentum: float = field(0.9, "SGD momentum.")
    weight_decay: float = field(5e-4, "SGD weight decay.")
    lr_decay_at: float = field(0.8, "Multiply lr by lr_gamma once, after this fraction of the epochs.")
    lr_gamma: float = field(0.1, "Learning-rate decay factor.")
    batch_size: int = field(128, "Training and evaluation batch size.")
    image_size: int = field(224, "Student input resolution (square).")
    temperature: float = field(3.0, "KD temperature T.")
    w_kd: float = field(0.8, "Weight of the KD term (kd, rise*).")
    w_ce: float = field(0.2, "Weight of cross-entropy (ignored by erm, which is pure CE).")
    w_dist: float = field(1.0, "Weight of the distance terms: AD (rise-abs), RD (rise-rel), both (rise).")
    seed: int = field(0, "Seed of the student init, data order and view schedule.")
    text_ensemble: bool = field(False, "Test-time ensemble: softmax(logits) + softmax(100 cos(z, t_hat)).")
    workers: int = field(2, "DataLoader worker processes (part of the data order: keep it fixed to resume).")
    device: str = field("auto", "auto | cpu | cuda (bf16 autocast on cuda).")


def validate(cfg: DistillConfig) -> None:
    """Reject values that cannot train, each with one line naming the option."""
    if not cfg.target_domain:
        raise UserError("--target-domain is required")
    if cfg.method not in METHODS:
        raise UserError(f"unknown method {cfg.method!r}; valid: {', '.join(METHODS)}")
    for name in ("w_kd", "w_ce", "w_dist"):
        v = getattr(cfg, name)
        if math.isnan(v) or math.isinf(v) or v < 0:
            raise UserError(f"{name} must be a finite number >= 0, got {v}")
    checks = [("epochs", cfg.epochs >= 1), ("batch_size", cfg.batch_size >= 2), ("image_size", cfg.image_size >= 16),
              ("lr", cfg.lr > 0 and math.isfinite(cfg.lr)), ("temperature", cfg.temperature > 0),
              ("workers", cfg.workers >= 0), ("lr_decay_at", 0 < cfg.lr_decay_at <= 1)]
    for name, ok in checks:
        if not ok:
            raise UserError(f"{name} has an invalid value {getattr(cfg, name)!r}")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise UserError(f"device must be auto, cpu or cuda, got {cfg.device!r}")


def run(cfg: DistillConfig, work: str | Path, out: str | Path, restart_stale: bool = False) -> dict:
    """Check inputs, skip a finished identical run, else train (resuming from RUN/checkpoints/last.pt)."""
    validate(cfg)
    from pipeline.store import verify_store

    store = verify_store(work)
    if cfg.target_domain not in store.domain_names:
        raise UserError(f"unknown target domain {cfg.target_domain!r}; valid: {', '.join(store.domain_names)}")
    from pipeline.students import check_student_name  # imports timm: after the cheap checks
    from pipeline.train import run as train_run
    from pipeline.train import store_identity

    check_student_name(cfg.student)
    if len(store.domain_names) < 2:
        raise UserError("leave-one-domain-out needs at least two domains in the store")
    done = Path(out) / "metrics.json"
    if done.is_file():
        try:
            previous = json.loads(done.read_text())
        except ValueError:
            previous = {}
        if previous.get("status") == "complete" and previous.get("config") == to_dict(cfg) \
                and previous.get("store_id") == store_identity(store):
            print(f"{out}: up to date (metrics.json complete with the same config and store)", file=sys.stderr)
            return previous
    if store.has_views and cfg.epochs > store.views_k:
        print(f"note: {cfg.epochs} epochs > {store.views_k} stored views: views repeat after epoch "
              f"{store.views_k}", file=sys.stderr)
    if not store.has_views:
        print("note: the store holds no augmented views; the student is augmented freshly and the KD target "
              "is the clean view (an approximation of RISE)", file=sys.stderr)
    metrics = train_run(cfg, store, work, out, restart_stale)
    print(f"{cfg.method} -> {cfg.target_domain}: target acc {metrics['target_acc']:.4f} at epoch "
          f"{metrics['selected_epoch']} (source-val {metrics['source_val_acc']:.4f}; teacher zero-shot "
          f"{metrics['teacher_target_acc']:.4f})", file=sys.stderr)
    return metrics


@click.command(context_settings={"max_content_width": 100})
@click.option("--work", type=click.Path(path_type=Path), required=True,
              help="Work folder written by `rise-pipeline extract` (shards/ and embeddings.h5).")
@click.option("--target-domain", default=None, help="Held-out domain (tested on, never trained on).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Run folder: metrics.json, epochs.csv, config.json, checkpoints/.")
@click.option("--method", default=None, help=f"One of {', '.join(METHODS)} [rise].")
@click.option("--student", default=None, help="timm model name of the student backbone.")
@click.option("--params", "params_path", type=click.Path(path_type=Path), default=None,
              help="params.yaml to read the 'distill' section from (flags override it).")
@click.option("--epochs", type=int, default=None, help="Training epochs [20].")
@click.option("--lr", type=float, default=None, help="SGD learning rate [1e-3].")
@click.option("--w-kd", "--w_kd", "w_kd", type=float, default=None, help="Weight of KD [0.8].")
@click.option("--w-ce", "--w_ce", "w_ce", type=float, default=None, help="Weight of cross-entropy [0.2].")
@click.option("--w-dist", "--w_dist", "w_dist", type=float, default=None, help="Weight of the distance terms [1.0].")
@click.option("--temperature", type=float, default=None, help="KD temperature [3].")
@click.option("--seed", type=int, default=None, help="Seed [0].")
@click.option("--batch-size", "--batch_size", "batch_size", type=int, default=None, help="Batch size [128].")
@click.option("--image-size", "--image_size", "image_size", type=int, default=None, help="Student input size [224].")
@click.option("--pretrained/--no-pretrained", default=None, help="ImageNet-pretrained backbone [pretrained].")
@click.option("--text-ensemble/--no-text-ensemble", default=None, help="Test-time text ensemble [off].")
@click.option("--workers", type=int, default=None, help="DataLoader workers [2].")
@click.option("--device", default=None, help="auto | cpu | cuda [auto].")
@click.option("--restart-stale", is_flag=True,
              help="Discard checkpoints in --out from another config or store instead of refusing (dvc.yaml uses it).")
def distill(work, target_domain, out, method, student, params_path, epochs, lr, w_kd, w_ce, w_dist,
            temperature, seed, batch_size, image_size, pretrained, text_ensemble, workers, device, restart_stale):
    """Train one student from WORK's teacher store, holding out --target-domain (leave-one-domain-out)."""
    cfg = load_section(DistillConfig, read_params(params_path), "distill", dict(
        target_domain=target_domain, method=method, student=student, epochs=epochs, lr=lr, w_kd=w_kd,
        w_ce=w_ce, w_dist=w_dist, temperature=temperature, seed=seed, batch_size=batch_size,
        image_size=image_size, pretrained=pretrained, text_ensemble=text_ensemble, workers=workers,
        device=device))
    run(cfg, work=work, out=out, restart_stale=restart_stale)
