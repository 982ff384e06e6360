"""The CLIP teacher: any open_clip model, loaded once, run under `torch.inference_mode`.

Accepted sources:
- `model=NAME, pretrained=TAG`  an open_clip (model, tag) pair (`ViT-B-16`, `openai`);
- `model=NAME, pretrained=PATH` a local checkpoint file for an open_clip config (the demo teacher);
- `model=hf-hub:ORG/REPO`      a Hugging Face hub model (its own weights; `pretrained` ignored);
- `model=local-dir:PATH`       an open_clip model folder (`open_clip_config.json` + weights, the hub format);
- `pretrained=random`          untrained weights, seeded, for tests and speed benchmarks only.
Every other source is loaded with open_clip's `require_pretrained=True`, so a teacher never runs on random
weights by accident (open_clip itself only logs a warning when an `hf-hub:` or `local-dir:` source has none).
Names, tags and paths are checked here first, and hub downloads go through `pipeline.hub` (offline use,
no half-minute retries), so every failure is a one-line `UserError` that says where to look.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..devices import resolve_device
from ..errors import UserError
from ..hub import hub_weights, open_clip_files
from .project_models import register_project_models

RANDOM = "random"
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
_LOOK = "see open_clip.list_models() and open_clip.list_pretrained()"


def _check_source(model: str, pretrained: str) -> None:
    """Refuse unknown names, tags and paths with one-line errors before open_clip is asked to load them."""
    import open_clip

    if model.startswith("local-dir:"):
        folder = Path(model[len("local-dir:"):])
        if not (folder / "open_clip_config.json").is_file():
            raise UserError(f"--model {model}: expected a folder with open_clip_config.json and weights "
                            "(open_clip's hub format)")
        if not any(any(folder.glob(f"*.{ext}")) for ext in ("safetensors", "bin", "pth")):
            raise UserError(f"--model {model}: no weights (*.safetensors, *.bin or *.pth) in {folder}")
        return
    if model.startswith("hf-hub:"):
        return
    if model.replace("/", "-") not in open_clip.list_models():
        raise UserError(f"unknown open_clip model {model!r}; {_LOOK}")
    if not pretrained:
        raise UserError(f"--pretrained is required for {model}: a tag (e.g. openai), a checkpoint file, or "
                        f"'{RANDOM}' for untrained weights; {_LOOK}")
    if pretrained == RANDOM or Path(pretrained).is_file():
        return
    tags = open_clip.list_pretrained_tags_by_model(model.replace("/", "-"))
    if pretrained not in tags:
        looks_like_path = "/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))
        what = "checkpoint file not found" if looks_like_path else "unknown pretrained tag"
        raise UserError(f"{what} {pretrained!r} for {model} (its tags: {', '.join(tags) or 'none'}); {_LOOK}")


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 of the loaded weights (state_dict tensors in name order): identifies the teacher whatever the
    source (tag, file, hub, folder, seeded random)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class Teacher:
    model: torch.nn.Module
    tokenizer: object
    preprocess: object          # open_clip's eval transform (PIL -> normalised tensor)
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    embed_dim: int
    device: str
    precision: str
    provenance: dict

    def _autocast(self):
        dtype = PRECISIONS[self.precision]
        if dtype is None or not self.device.startswith("cuda"):
            return nullcontext()
        return torch.autocast("cuda", dtype=dtype)

    @torch.inference_mode()
    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised float32 embeddings of a normalised image batch (B, 3, H, W)."""
        x = x.to(self.device, non_blocking=True)
        if self.device.startswith("cuda"):
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            z = self.model.encode_image(x)
        return torch.nn.functional.normalize(z.float(), dim=-1)

    @torch.inference_mode()
    def encode_text(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        """Unnormalised float32 text embeddings (n, D); callers normalise (the ensemble needs both)."""
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(texts[i:i + batch_size]).to(self.device)
            with self._autocast():
                out.append(self.model.encode_text(tokens).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.embed_dim), np.float32)


def load_teacher(model: str, pretrained: str, device: str = "auto", precision: str = "fp32") -> Teacher:
    """Load an open_clip teacher in eval mode on `device` (see the module docstring for the sources)."""
    import open_clip

    register_project_models()
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    _check_source(model, pretrained)
    device = resolve_device(device)
    if not device.startswith("cuda"):
        precision = "fp32"  # CPU autocast is slower than fp32 here; record what actually runs
    schema = model.startswith(("hf-hub:", "local-dir:"))
    untrained = pretrained == RANDOM and not schema
    if untrained:
        torch.manual_seed(0)  # every worker builds the same untrained teacher
    instead = ("pass a local open_clip folder with --model local-dir:PATH" if schema
               else "pass a local checkpoint with --pretrained PATH")
    try:
        with hub_weights(None if untrained else open_clip_files(model, pretrained),
                         f"teacher {model}" if schema else f"teacher {model} / {pretrained}", instead):
            net, _, preprocess = open_clip.create_model_and_transforms(
                model, pretrained=None if schema or untrained else pretrained, device="cpu",
                require_pretrained=not untrained)
            tokenizer = open_clip.get_tokenizer(model)  # an hf-hub: model reads its config from the hub too
    except (RuntimeError, ValueError, FileNotFoundError, OSError, KeyError) as e:
        raise UserError(f"cannot load teacher {model} / {pretrained}: {str(e).splitlines()[0]}; {_LOOK}") from None
    net.eval()
    if device.startswith("cuda"):
        net = net.to(device=device, memory_format=torch.channels_last)
    cfg = dict(open_clip.get_model_preprocess_cfg(net))
    size = cfg.get("size", net.visual.image_size)
    size = (size, size) if isinstance(size, int) else tuple(size)
    probe = tokenizer(["a"])
    with torch.inference_mode():
        dim = int(net.encode_text(probe.to(device)).shape[-1])
    sha = weights_sha256(net)
    prov = dict(model=model, pretrained=pretrained if not schema else model, pretrained_sha256=sha,
                open_clip_version=open_clip.__version__,
                preprocess=json.loads(json.dumps(cfg, default=list)), embed_dim=dim)
    logging.getLogger(__name__).info("teacher %s/%s on %s (%s), weights sha256 %s", model, pretrained, device,
                                     precision, sha[:12])
    return Teacher(model=net, tokenizer=tokenizer, preprocess=preprocess, image_size=size,
                   mean=tuple(cfg.get("mean", ())), std=tuple(cfg.get("std", ())), embed_dim=dim,
                   device=device, precision=precision, provenance=prov)
