"""One distill run's options (the `distill` section of params.yaml), declared once.

Light on purpose (no torch, no timm): the command line and its `--help` are generated from it.

Checking follows the project's one rule: a config checks its values when it is built (`__post_init__`, so
`from_mapping` and `dataclasses.replace` check too), and checking never changes it. What only a run needs
of a whole config -- a target domain, teachers that fit its method -- is `check_run`, which the distill step
calls: a group's base config has no target yet and names all the group's teachers, which each member trims
to its method. Pinning the local weights' digest reads a file, so it is a step of its own (`pin_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path

from ..config import field
from ..devices import DEVICES, ONE_PER_CORE, ONE_PER_CORE_HELP
from ..errors import UserError
from ..io import sha256_file

# Batch composition (`sampling`) and the source-validation average used for selection.
BALANCES = ("none", "domains")
VAL_AVERAGES = ("mean", "pooled")
# The methods the paper compares; they differ only in which loss terms are on (`losses.method_weights`).
METHODS = ("rise", "erm", "kd", "rise-abs", "rise-rel", "rise-mix", "rise-mix-full")
# The mixes of teachers: one student per teacher store, trained on the same batches, each at its own learning
# rate (`mix_lrs`), predicting with the sum of the students' softmax outputs. rise-mix is the reference's
# (train_rise_mix_teacher.py: each student KD + CE + AD, no RD); rise-mix-full, this project's extension,
# gives every student RISE's full loss (RD too).
MIX = "rise-mix"
MIX_FULL = "rise-mix-full"
MIXES = (MIX, MIX_FULL)


@dataclass
class DistillConfig:
    """One distill run. Defaults are RISE's reference protocol (docs/method.md)."""

    target_domain: str = field("", "Held-out domain: tested on whole, never trained on (required).")
    method: str = field("rise", "Which loss terms are on (docs/method.md).", choices=METHODS)
    student: str = field("resnetv2_50x1_bit.goog_in21k_ft_in1k", "timm model name of the student backbone.")
    pretrained: bool = field(True, "Start the backbone from pretrained weights: timm's ImageNet weights (the HF hub, "
                                   "or offline its local cache with HF_HUB_OFFLINE=1), or the checkpoint file when "
                                   "one is given; --from-scratch: random initialisation.",
                             flag="--from-pretrained/--from-scratch")
    checkpoint: str = field("", "Local weights file for the backbone (a timm state_dict: .pth, .bin or "
                                ".safetensors), loaded through timm instead of the hub's weights when pretrained "
                                "is true. Empty: timm's own weights.")
    checkpoint_sha256: str = field("", "SHA-256 of the checkpoint file, recorded by every run that loads it (so a run "
                                       "from other weights is never 'up to date' nor resumed); a value given here "
                                       "refuses any other file.", cli=False)
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
    teachers: list[str] = field(["default"], "Teacher stores in --work to distil from (`extract --store NAME`): "
                                             "one for every method; two or more for rise-mix and rise-mix-full, "
                                             "one student each.")
    mix_lrs: list[float] = field([], "rise-mix / rise-mix-full: the learning rate of each teacher's student, in "
                                     "--teachers order (RISE's mix: 1e-3 then 2e-3 for PACS and VLCS). Empty: lr for "
                                     "each. Other methods ignore it.")
    text_ensemble: bool = field(False, "Test-time ensemble: softmax(logits) + softmax(100 cos(z, t_hat)).")
    balance: str = field("none", "Batch composition: none = a uniform draw from all source training images (RISE's "
                                 "reference, DomainBed); domains = an equal share of each source domain per batch.",
                         choices=BALANCES)
    val_average: str = field("mean", "Source validation accuracy used for selection: mean over the source domains "
                                     "(DomainBed) or pooled over all their validation images (RISE's reference).",
                             choices=VAL_AVERAGES)
    workers: int = field(ONE_PER_CORE, "DataLoader worker processes decoding planned batches (speed only: any count "
                                       f"gives the same batches and result; 0: in the training process, "
                                       f"{ONE_PER_CORE_HELP}).")
    device: str = field("auto", "Where the student trains (bf16 autocast on cuda).", choices=DEVICES)
    threads: int = field(0, "torch CPU threads of the training process (0: torch's default, one per core). Speed "
                            "only, like workers and device (float rounding may differ in the last bits). On a few "
                            "cores with small students, 1 thread plus loader workers uses the cores best.")

    def __post_init__(self) -> None:
        """Refuse values that cannot train, each with one line naming the option."""
        for name in ("w_kd", "w_ce", "w_dist"):
            check_weight(name, getattr(self, name))
        for name, rule, ok in (("epochs", ">= 1", lambda v: v >= 1), ("batch_size", ">= 2", lambda v: v >= 2),
                               ("image_size", ">= 16", lambda v: v >= 16),
                               ("lr", "a finite number > 0", _finite_positive),
                               ("temperature", "a finite number > 0", _finite_positive),
                               ("workers", f">= {ONE_PER_CORE} ({ONE_PER_CORE_HELP})",
                                lambda v: v >= ONE_PER_CORE), ("threads", ">= 0", lambda v: v >= 0),
                               ("lr_decay_at", "in (0, 1]", lambda v: 0 < v <= 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
                raise UserError(f"{name} must be {rule}, got {value!r}")


# Options that change how fast a run goes, never its result: a finished run is "up to date" and a killed
# one resumes whatever they are. One list for both rules.
NON_RESULT_FIELDS = ("device", "workers", "threads")


def result_config(config: dict) -> dict:
    """The part of a run's config (`to_dict(cfg)`) that its result depends on. Local weights pinned by their
    SHA-256 are the same weights wherever the file lies (a plan makes the path absolute; a DVC experiment
    runs in another folder), so the path counts only while no digest is recorded."""
    skip = set(NON_RESULT_FIELDS) | ({"checkpoint"} if config.get("checkpoint_sha256") else set())
    return {k: v for k, v in config.items() if k not in skip}


def result_differences(a: dict, b: dict) -> list[str]:
    """The result-relevant fields in which two run configs differ (empty: the same run), sorted."""
    ra, rb = result_config(a), result_config(b)
    if a.get("checkpoint_sha256") or b.get("checkpoint_sha256"):  # the digests decide, not where the files lie
        ra.pop("checkpoint", None), rb.pop("checkpoint", None)
    return sorted(k for k in ra.keys() | rb.keys() if ra.get(k) != rb.get(k))


def effective(cfg: DistillConfig) -> DistillConfig:
    """`cfg` with the loss weights its method trains with (`losses.method_weights`): ERM is plain cross-entropy
    (w_ce 1, w_kd 0, w_dist 0) and KD has no distance term (w_dist 0). Members of a sweep whose effective
    configs are equal are one student, trained once, and config.json states the weights it trained with.
    The temperature is kept: every method logs the KD term (epochs.csv `loss_kd`), which depends on it."""
    if cfg.method not in MIXES and cfg.mix_lrs:
        cfg = dataclasses.replace(cfg, mix_lrs=[])
    if cfg.method in MIXES and cfg.mix_lrs:
        # the first teacher's student trains at lr: a mix's lr is its first learning rate, and equal rates are
        # written as none (the same student either way)
        lrs = [float(v) for v in cfg.mix_lrs]
        same = len(set(lrs)) == 1 and len(lrs) == len(cfg.teachers)
        cfg = dataclasses.replace(cfg, lr=lrs[0], mix_lrs=[] if same else lrs)
    if cfg.method == "erm":
        return dataclasses.replace(cfg, w_ce=1.0, w_kd=0.0, w_dist=0.0)
    if cfg.method == "kd":
        return dataclasses.replace(cfg, w_dist=0.0)
    return cfg


def unit_lrs(cfg, n: int) -> list[float]:
    """The learning rate of each of a run's `n` students: `mix_lrs` for a mix that gives them, else lr each."""
    if cfg.method in MIXES and cfg.mix_lrs:
        if len(cfg.mix_lrs) != n:
            raise UserError(f"mix_lrs gives {len(cfg.mix_lrs)} learning rates for {n} teachers; give one per "
                            "teacher, in --teachers order, or none")
        return [float(v) for v in cfg.mix_lrs]
    return [float(cfg.lr)] * n


def _finite_positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def check_run(cfg: DistillConfig) -> None:
    """What training `cfg` as one run needs beyond valid values (see the module docstring): a target domain,
    one teacher store for every method but the mixes, two or more for a mix, with its learning rates if any."""
    if not cfg.target_domain:
        raise UserError("--target-domain is required")
    if len(set(cfg.teachers)) != len(cfg.teachers) or not cfg.teachers:
        raise UserError(f"teachers: name each store once, got {cfg.teachers}")
    if cfg.method in MIXES and len(cfg.teachers) < 2:
        raise UserError(f"{cfg.method} mixes students of several teachers: give two or more stores, e.g. "
                        "--teachers default,rn101")
    if cfg.method not in MIXES and len(cfg.teachers) != 1:
        raise UserError(f"{cfg.method} distils one teacher; several --teachers are for rise-mix")
    if cfg.method in MIXES:
        bad = [v for v in cfg.mix_lrs if not _finite_positive(v)]
        if bad:
            raise UserError(f"mix_lrs must be finite numbers > 0, got {bad[0]!r}")
        unit_lrs(cfg, len(cfg.teachers))


def check_weight(name: str, value) -> float:
    """A loss weight must be a finite number >= 0 (a NaN weight would poison every step)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value) \
            or value < 0:
        raise UserError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, inode: int, size: int, mtime_ns: int) -> str:
    """SHA-256 of a weights file, once per version of it (inode, size, mtime): every member of a group names
    the same file, which may be hundreds of MB."""
    return sha256_file(path)


def pin_checkpoint(cfg: DistillConfig) -> DistillConfig:
    """`cfg` with the content of the local weights it loads recorded: `checkpoint_sha256` set from the file (a
    run's identity is its result config, and the same path may come to hold other weights -- the demo's
    student-pretrain stage rewrites it). A digest already given must match the file. Without local weights,
    `cfg` itself."""
    if not (cfg.pretrained and cfg.checkpoint):
        return cfg
    path = Path(cfg.checkpoint)
    if not path.is_file():
        raise UserError(f"student weights not found: {path} (distill.checkpoint)")
    st = path.stat()
    digest = _file_digest(str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if cfg.checkpoint_sha256 and cfg.checkpoint_sha256 != digest:
        raise UserError(f"{path} holds other weights (sha256 {digest[:12]}...) than distill.checkpoint_sha256 "
                        f"{cfg.checkpoint_sha256[:12]}... names")
    return dataclasses.replace(cfg, checkpoint_sha256=digest)
