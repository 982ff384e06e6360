"""A model to score images with: a run folder, or a folder written by `rise-pipeline export` (or any timm
model folder whose config names its classes). `open_model(path, work, device)` decides which and returns a
`Scorer`; both kinds give class probabilities per image, in the class order of `label_names`."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from ..errors import UserError
from .timm_folder import ENSEMBLE


class Scorer:
    """`prepare(PIL RGB image) -> tensor` (one image, as the model's own eval transform makes it) and
    `probs(batch) -> B x C` probabilities (softmax outputs averaged over what the model sums)."""

    label_names: list[str]
    description: str

    def prepare(self, img: Image.Image) -> torch.Tensor:
        raise NotImplementedError

    def probs(self, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class RunScorer(Scorer):
    """A run folder, scored as distill scored it: `eval_image` (resize to size x size, bilinear, no crop), the
    student's normalisation, softmax(logits) (+ the text ensemble) summed over a rise-mix run's students."""

    def __init__(self, run, device: str):
        from .runs import student_scores

        self.run, self.device = run, torch.device(device)
        self.students = [s.to(self.device) for s in run.students]
        self.texts = [torch.as_tensor(t, device=self.device) if run.text_ensemble else None for t in run.text_class]
        self.label_names = list(run.class_names)
        self._scores = student_scores
        kind = f"{len(self.students)} students summed" if run.is_mix else run.config["student"]
        ensemble = " + text ensemble" if run.text_ensemble else ""
        self.description = f"run {run.path} (epoch {run.epoch}, {kind}{ensemble})"

    def prepare(self, img: Image.Image) -> torch.Tensor:
        from ..distill.data import eval_image

        return eval_image(img, self.run.image_size)

    @torch.no_grad()
    def probs(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device)
        total = sum(self._scores(s, batch, t) for s, t in zip(self.students, self.texts, strict=True))
        terms = len(self.students) * (2 if self.run.text_ensemble else 1)
        return (total / terms).cpu()


class TimmScorer(Scorer):
    """timm model folder(s), scored with timm's own eval transform; several folders' softmax outputs summed."""

    def __init__(self, folders: list[Path], device: str, description: str):
        import timm

        self.device = torch.device(device)
        self.models = []
        for folder in folders:
            try:
                model = timm.create_model(f"local-dir:{folder}", pretrained=True)
            except Exception as e:  # noqa: BLE001 - whatever timm raises on a foreign folder: one line
                first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                raise UserError(f"timm cannot load {folder} ({first})") from None
            self.models.append(model.eval().to(self.device))
        first = self.models[0]
        self.label_names = list(first.pretrained_cfg["label_names"])
        self.transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=first))
        self.description = description

    def prepare(self, img: Image.Image) -> torch.Tensor:
        return self.transform(img)

    @torch.no_grad()
    def probs(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device)
        return (sum(m(batch).float().softmax(-1) for m in self.models) / len(self.models)).cpu()


def _timm_config(folder: Path) -> dict:
    """config.json of a timm model folder that names its classes, or one line saying why FOLDER is not one."""
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{folder}/config.json is unreadable ({type(e).__name__}); not a timm model folder") from None
    import timm

    arch = cfg.get("architecture") if isinstance(cfg, dict) else None
    if not isinstance(arch, str) or not timm.is_model(arch):
        other = f" (it looks like a {cfg['model_type']!r} model of another library)" \
            if isinstance(cfg, dict) and cfg.get("model_type") else ""
        raise UserError(f"{folder} is not a timm model folder: its config.json names no timm architecture{other}; "
                        "give a folder written by `rise-pipeline export` or a run folder")
    labels = cfg.get("label_names") or (cfg.get("pretrained_cfg") or {}).get("label_names")
    if not isinstance(labels, list) or not labels:
        raise UserError(f"{folder} is a timm model without label_names in its config.json: its classes have no "
                        "names to report or to match a dataset's class folders by")
    if not any((folder / f).is_file() for f in ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors")):
        raise UserError(f"{folder} holds a timm config.json but no weights (model.safetensors or pytorch_model.bin)")
    return cfg


def open_model(path: str | Path, work: str | Path, device: str = "auto") -> Scorer:
    """A run folder (needs WORK, its teacher store holds the class names), an export of rise-pipeline (one
    timm folder, or a rise-mix ensemble of them), or a timm folder with label_names."""
    from ..devices import resolve_device
    from .runs import load_run

    path = Path(path)
    device = resolve_device(device)
    if not path.is_dir():
        raise UserError(f"model folder not found: {path}")
    if (path / ENSEMBLE).is_file():
        try:
            spec = json.loads((path / ENSEMBLE).read_text())
            members = [path / m for m in spec["members"]]
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(f"{path / ENSEMBLE} is unreadable or lists no members") from None
        for m in members:
            _timm_config(m)
        return TimmScorer(members, device, f"exported ensemble {path} ({len(members)} students summed)")
    if (path / "config.json").is_file() and not (path / "metrics.json").is_file() \
            and not (path / "checkpoints").is_dir():
        cfg = _timm_config(path)
        return TimmScorer([path], device, f"timm model {path} ({cfg['architecture']})")
    return RunScorer(load_run(path, work), device)
