"""RISE's per-dataset settings (docs/method.md) as params.yaml overlays, and the named loss-weight grids.

A dataset preset is what changes in params.yaml when moving from the embedded demo world to a real
DomainBed dataset with a real CLIP teacher: the data root, the domains to hold out, RISE's anchors,
learning rate and loss-weight grid, the teacher and the student. `rise-pipeline preset NAME` applies one.
"""

from __future__ import annotations

import copy

from .extract.prompts import PHOTO_ANCHORS, RISE_TEMPLATES

# RISE's hyper-parameter grids: (w_kd, w_ce) pairs x w_dist in {0.5, 1, 2}, T = 3 (docs/method.md).
_W_DIST = (0.5, 1.0, 2.0)


def _grid(pairs: tuple[tuple[float, float], ...]) -> list[dict]:
    return [{"w_kd": kd, "w_ce": ce, "w_dist": wd, "temperature": 3.0} for kd, ce in pairs for wd in _W_DIST]


GRIDS: dict[str, list[dict]] = {
    "base": [{}],  # one config: the distill section's own weights
    "pacs": _grid(((0.9, 0.1), (0.8, 0.2))),
    "vlcs": _grid(((0.9, 0.1), (0.8, 0.2))),
    "officehome": _grid(((0.2, 0.8), (0.1, 0.9))),
    "terraincognita": _grid(((0.2, 0.8), (0.3, 0.7))),
    # RISE publishes no DomainNet grid; we use OfficeHome's (many classes, CE-weighted). Our choice.
    "domainnet": _grid(((0.2, 0.8), (0.1, 0.9))),
}

# DomainBed folder names of each dataset's domains, and RISE's anchors / lr / test-time ensemble.
DATASETS: dict[str, dict] = {
    "pacs": {"domains": ["art_painting", "cartoon", "photo", "sketch"],
             "anchors": ["art painting", "cartoon", "photo", "sketch"], "lr": 1e-3},
    "vlcs": {"domains": ["Caltech101", "LabelMe", "SUN09", "VOC2007"], "anchors": list(PHOTO_ANCHORS), "lr": 1e-3},
    "officehome": {"domains": ["Art", "Clipart", "Product", "Real World"],
                   "anchors": ["Art", "Clipart", "Product", "RealWorld"], "lr": 1e-3},
    "terraincognita": {"domains": ["location_100", "location_38", "location_43", "location_46"],
                       "anchors": list(PHOTO_ANCHORS), "lr": 2e-3, "text_ensemble": True},
    "domainnet": {"domains": ["clipart", "infograph", "painting", "quickdraw", "real", "sketch"],
                  "anchors": ["clipart", "infograph", "painting", "quickdraw", "real photo", "sketch"], "lr": 1e-3},
}



def dataset_overlay(name: str, data_root: str, teacher: str = "ViT-B-16", pretrained: str = "openai",
                    student: str = "resnetv2_50x1_bit.goog_in21k_ft_in1k") -> dict:
    """The params.yaml sections a real dataset needs, with RISE's published defaults."""
    d = DATASETS[name]
    return {
        "data": {"root": data_root},
        "world": {"enabled": False},
        "teacher": {"enabled": False},
        "embed": {"model": teacher, "pretrained": pretrained, "templates": list(RISE_TEMPLATES),
                  "anchors": list(d["anchors"]), "views": 20, "audit_threshold": 0.95},
        "distill": {"student": student, "pretrained": True, "image_size": 224, "epochs": 20,
                    "batch_size": 128, "lr": d["lr"], "text_ensemble": d.get("text_ensemble", False),
                    "workers": 8},
        "sweep": {"domains": list(d["domains"]), "methods": ["erm", "kd", "rise"], "seeds": [0, 1, 2],
                  "grid": copy.deepcopy(GRIDS[name])},
    }


def apply_overlay(node, overlay: dict) -> None:
    """Merge `overlay` into the mapping `node` in place (nested mappings merge, everything else is
    replaced), so a round-tripped params.yaml keeps its comments and key order."""
    for k, v in overlay.items():
        if isinstance(v, dict) and isinstance(node.get(k), dict):
            apply_overlay(node[k], v)
        else:
            node[k] = v
