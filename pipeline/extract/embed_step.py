"""Step "embed" of `rise-pipeline extract`: the teacher runs once, into WORK/embeddings.h5.

Per shard, a part file under WORK/parts/ (reused when the shard's checksum and the teacher/augmentation
config match, so a killed run resumes and an added shard costs only itself); the parts are then merged into
the store, and the teacher report and the near-duplicate audit are computed from the store.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from .. import __version__, layout
from ..augment import PARAM_COLUMNS, AugmentConfig
from ..config import field, to_dict
from ..devices import DEVICES, ONE_PER_CORE, ONE_PER_CORE_HELP, PRECISION_NAMES, worker_count
from ..errors import UserError
from ..io import write_json
from ..store import SCHEMA_VERSION, SPLITS, ImageChunk, StoreReader, write_store
from .prompts import (
    RISE_TEMPLATES,
    TEXT_AVERAGES,
    anchor_domains,
    anchor_names,
    display_names,
    text_embeddings,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EmbedConfig:
    # RISE's teacher by default; the embedded demo's params.yaml names its own small teacher instead.
    model: str = field("ViT-B-16-quickgelu", "open_clip model name (ViT-B-16-quickgelu: OpenAI's weights with their "
                                               "QuickGELU), hf-hub:ORG/REPO, or local-dir:PATH")
    pretrained: str = field("openai", "open_clip pretrained tag (openai), a checkpoint file, or 'random' (tests only)")
    views: int = field(20, "augmented views K per training image; K >= distill epochs (RISE: 20) gives a fresh "
                           "view every epoch")
    batch_size: int = field(256, "images per teacher forward pass")
    precision: str = field("bf16", "autocast precision on GPU (the CPU always runs fp32)", choices=PRECISION_NAMES)
    device: str = field("auto", "where the teacher runs", choices=DEVICES)
    workers: int = field(ONE_PER_CORE, f"DataLoader worker processes that decode and augment (0: in this process, "
                                       f"{ONE_PER_CORE_HELP})")
    seed: int = field(0, "seed of the augmented views (per sample: hash of seed and key)")
    dtype: str = field("float16", "embedding dtype in the store", choices=("float16", "float32"))
    templates: list[str] = field(list(RISE_TEMPLATES), "class prompt templates, each with one {}", cli=False)
    anchors: list[str] = field([], "domain anchor phrases; empty: readable domain names (art_painting -> "
                                   "'art painting')", cli=False)
    class_names: dict = field({}, "display name overrides: class folder name -> name used in prompts", cli=False)
    text_average: str = field("raw", "class text embedding: mean of the raw template features, then normalised "
                                     "(RISE's reference), or mean of normalised features (CLIP's zero-shot "
                                     "recipe)", choices=TEXT_AVERAGES)
    audit_threshold: float = field(0.95, "cosine at or above which two clean views count as near-duplicates")
    audit_neighbours: int = field(10, "neighbours searched per image by the audit")
    store: str = field(layout.DEFAULT_STORE, f"name of the teacher store written: default -> "
                                         f"WORK/{layout.store_file()}, NAME -> WORK/{layout.store_file('NAME')} "
                                         "(another teacher of the same shards, for rise-mix)")

    def __post_init__(self) -> None:
        layout.check_store_name(self.store)  # a bad store name is a one-line error before the teacher loads
        if self.views < 0:
            raise UserError(f"views must be >= 0, got {self.views}")
        if self.batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.workers < ONE_PER_CORE:
            raise UserError(f"workers must be >= {ONE_PER_CORE} ({ONE_PER_CORE_HELP}), got {self.workers}")
        if not self.templates or any(t.count("{}") != 1 for t in self.templates):
            raise UserError("templates: give at least one, each with exactly one {} for the class name")
        if not 0 < self.audit_threshold <= 1:
            raise UserError(f"audit_threshold must be in (0, 1], got {self.audit_threshold}")


def _task_workers(device: str) -> int:
    """One dask worker per GPU when there are several; otherwise inline (the loader workers parallelise)."""
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 1:
        return torch.cuda.device_count()
    return 1


def _chunks(paths: list[Path], classes: list[str], domains: list[str]):
    """Parts loaded one at a time, so merging holds one shard's embeddings in memory, not the dataset's."""
    from .parts import load_part

    cidx, didx = {c: i for i, c in enumerate(classes)}, {d: i for i, d in enumerate(domains)}
    for path in paths:
        p = load_part(path)
        if p is None:
            raise UserError(f"part file {path} became unreadable during the merge; rerun to recompute it")
        yield ImageChunk(keys=p["keys"].astype(object), labels=np.array([cidx[c] for c in p["class_names"]], np.int64),
                         domains=np.array([didx[d] for d in p["domains"]], np.int64), splits=p["splits"],
                         clean=p["clean"], view_keys=p["view_keys"].astype(object), view_emb=p["view_emb"],
                         view_params=p["view_params"])


def teacher_report(reader: StoreReader, skipped: list[dict], block: int = 65536) -> dict:
    """Zero-shot accuracy (prompt ensemble, clean view) per domain x split, with counts."""
    from ..store import zero_shot_hits

    hits = zero_shot_hits(reader, block=block)
    correct = np.zeros((len(reader.domain_names), len(SPLITS)), np.int64)
    total = np.zeros_like(correct)
    np.add.at(total, (reader.domains, reader.splits), 1)
    np.add.at(correct, (reader.domains, reader.splits), hits.astype(np.int64))
    per = {dom: {sp: {"acc": round(float(correct[i, j] / total[i, j]), 6) if total[i, j] else None,
                      "n": int(total[i, j])} for j, sp in enumerate(SPLITS)}
           for i, dom in enumerate(reader.domain_names)}
    return {"zero_shot_acc": round(float(correct.sum() / max(1, total.sum())), 6), "per_domain": per,
            "n_images": len(reader), "n_view_rows": len(reader.view_keys), "views": reader.views_k,
            "skipped": len(skipped), "skipped_samples": skipped,
            "model": reader.attrs["model"], "pretrained": reader.attrs["pretrained"]}


def run(cfg: EmbedConfig, work: str | os.PathLike, scheduler: str | None = None) -> Path:
    """Embed every shard of WORK/shards (reusing valid parts), merge into the store `cfg.store`
    (WORK/embeddings.h5 by default), write its reports."""
    from ..parallel import run_tasks
    from ..shards import decode_limit, load_index, shard_set_checksum
    from .audit import audit
    from .parts import SMALL_ARRAYS, EmbedSpec, embed_shards, get_teacher, load_part

    work = Path(work)
    report_path, audit_path = layout.teacher_report(work, cfg.store), layout.audit(work, cfg.store)
    index = load_index(work)
    classes, domains = list(index["classes"]), list(index["domains"])
    spec = EmbedSpec(model=cfg.model, pretrained=cfg.pretrained, device=cfg.device, precision=cfg.precision,
                     views=cfg.views, seed=cfg.seed, batch_size=cfg.batch_size,
                     loader_workers=worker_count(cfg.workers), dtype=cfg.dtype, augment=AugmentConfig(),
                     max_pixels=decode_limit(index))
    teacher = get_teacher(spec)
    fp = spec.fingerprint(teacher)
    parts_dir = layout.parts_dir(work, cfg.store)
    # The extra teachers' folder exists even when empty: distill depends on it as a whole (dvc.yaml).
    layout.teachers_dir(work).mkdir(parents=True, exist_ok=True)
    items = [{"path": str(layout.shards_dir(work) / s["path"]), "rel": s["path"], "sha256": s["sha256"],
              "part": str(parts_dir / f"{s['sha256'][:24]}-{fp[:16]}.npz")} for s in index["shards"]]
    todo = []
    for it in items:
        part = load_part(Path(it["part"]), SMALL_ARRAYS) if Path(it["part"]).is_file() else None
        if part is None or part["info"]["sha256"] != it["sha256"]:
            todo.append(it)
    log.info("embed: %d shard(s), %d reused, %d to embed (teacher %s / %s on %s)", len(items),
             len(items) - len(todo), len(todo), cfg.model, cfg.pretrained, teacher.device)
    n_tasks = _task_workers(teacher.device)
    # In-process: one loader streams every pending shard (no per-shard worker start-up or drain). On a
    # cluster: one shard per task, so dask balances them over the workers (GPUs).
    groups = [todo] if todo and n_tasks <= 1 and not scheduler else [[it] for it in todo]
    for _ in run_tasks(embed_shards, groups, workers=n_tasks, scheduler=scheduler, desc="embed", unit="task",
                       extra=(spec,)):
        pass
    parts = [load_part(Path(it["part"]), SMALL_ARRAYS) for it in items]
    if any(p is None for p in parts):
        raise UserError(f"a part file under {parts_dir} is unreadable; rerun to recompute it")
    skipped = [dict(b, shard=p["info"]["shard"]) for p in parts for b in p["info"]["bad"]]
    unknown = {str(c) for p in parts for c in p["class_names"]} - set(classes)
    if unknown:
        raise UserError(f"shards hold class(es) {', '.join(sorted(unknown))} missing from the shard index")
    n_images, n_views = sum(len(p["keys"]) for p in parts), sum(len(p["view_keys"]) for p in parts)
    if n_images == 0:
        raise UserError(f"no decodable image in the shards of {work}; see {report_path}")

    displays = display_names(classes, cfg.class_names)
    anchors = anchor_names(domains, cfg.anchors)
    text = text_embeddings(teacher.encode_text, displays, cfg.templates, anchors, cfg.text_average)
    text["anchor_domain"] = np.asarray(anchor_domains(anchors, domains), dtype=np.int64)
    attrs = dict(teacher.provenance, schema_version=SCHEMA_VERSION, tool_version=__version__, views=cfg.views,
                 augment=spec.augment.to_dict(), seed=cfg.seed, shard_set_sha256=shard_set_checksum(work),
                 dtype=cfg.dtype, precision=teacher.precision,
                 parts_fingerprint=fp, skipped=len(skipped), max_pixels=spec.max_pixels,
                 text_average=cfg.text_average)
    store = layout.store(work, cfg.store)
    write_store(store, attrs=attrs, class_names=classes, display_names=displays, domain_names=domains,
                templates=list(cfg.templates), anchors=anchors, text=text, n_images=n_images, n_views=n_views,
                chunks=_chunks([Path(it["part"]) for it in items], classes, domains), param_columns=PARAM_COLUMNS)
    del parts
    reader = StoreReader(store)
    report = teacher_report(reader, skipped)
    write_json(report_path, report)
    found = audit(reader, cfg.audit_threshold, cfg.audit_neighbours, use_gpu=teacher.device.startswith("cuda"))
    write_json(audit_path, found)
    write_json(layout.embed_config(work, cfg.store), to_dict(cfg))
    c = found["counts"]
    log.info(f"embed: {n_images} images, {n_views} with {cfg.views} views, {len(skipped)} skipped; "
         f"{len(items) - len(todo)}/{len(items)} shard parts reused; teacher zero-shot acc "
         f"{report['zero_shot_acc']:.3f} -> {store}")
    log.info(f"audit: {found['pairs']} near-duplicate pairs (cos >= {cfg.audit_threshold}): {c['cross_domain']} "
         f"cross-domain, {c['cross_split']} train/val leakage, {c['within']} within -> {audit_path}")
    return store
