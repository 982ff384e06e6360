"""RISE's per-dataset settings (docs/method.md) as params.yaml overlays, and the named loss-weight grids.

A dataset preset is what changes in params.yaml when moving from the embedded demo world to a real
DomainBed dataset with a real CLIP teacher: the data root, the domains to hold out, RISE's anchors,
learning rate and loss-weight grid, the teacher and the student. `rise-pipeline preset NAME` applies one.

The domains come from the data root when it exists (`plan_domains`): copies of a dataset spell their
domain folders differently (`caltech` for DomainBed's `Caltech101`), and every later stage needs the
spellings the data really has.
"""

from __future__ import annotations

import copy
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .devices import ONE_PER_CORE
from .errors import UserError
from .extract import sources
from .extract.prompts import PHOTO_ANCHORS, RISE_TEMPLATES, readable

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


@dataclass(frozen=True)
class Dataset:
    """One dataset's known settings. `domains` are DomainBed's folder names. Anchors either name the
    domains (`domain_anchors`: known domain -> RISE's phrase) or are the same fixed phrases for every
    domain (`fixed_anchors`: VLCS and TerraIncognita, whose domain names are places, not styles)."""

    title: str
    domains: tuple[str, ...]
    lr: float
    # The second teacher's student in RISE's mix (train_rise_mix_teacher.py, --learning_rate_2); the first
    # trains at `lr`. DomainNet: not in the reference, `lr`, our choice.
    mix_lr: float
    domain_anchors: dict[str, str] = field(default_factory=dict)
    fixed_anchors: tuple[str, ...] = ()
    text_ensemble: bool = False

    def anchors(self, found: list[str], matched: dict[str, str]) -> list[str]:
        """Anchors for the domains `found` in the data. A domain that matched a known one keeps RISE's
        phrase (`real` -> "real photo", `Real World` -> "RealWorld", as the reference spells it); any other
        domain gets its readable folder name, the embed step's own default for unconfigured anchors."""
        if self.fixed_anchors:
            return list(self.fixed_anchors)
        return [self.domain_anchors[matched[d]] if d in matched else readable(d) for d in found]


DATASETS: dict[str, Dataset] = {
    "pacs": Dataset("PACS", ("art_painting", "cartoon", "photo", "sketch"), lr=1e-3, mix_lr=2e-3,
                    domain_anchors={"art_painting": "art painting", "cartoon": "cartoon", "photo": "photo",
                                    "sketch": "sketch"}),
    "vlcs": Dataset("VLCS", ("Caltech101", "LabelMe", "SUN09", "VOC2007"), lr=1e-3, mix_lr=2e-3,
                    fixed_anchors=PHOTO_ANCHORS),
    "officehome": Dataset("OfficeHome", ("Art", "Clipart", "Product", "Real World"), lr=1e-3, mix_lr=1e-3,
                          domain_anchors={"Art": "Art", "Clipart": "Clipart", "Product": "Product",
                                          "Real World": "RealWorld"}),
    "terraincognita": Dataset("TerraIncognita", ("location_100", "location_38", "location_43", "location_46"),
                              lr=2e-3, mix_lr=4e-3, fixed_anchors=PHOTO_ANCHORS, text_ensemble=True),
    "domainnet": Dataset("DomainNet", ("clipart", "infograph", "painting", "quickdraw", "real", "sketch"), lr=1e-3,
                         mix_lr=1e-3,
                         domain_anchors={"clipart": "clipart", "infograph": "infograph", "painting": "painting",
                                         "quickdraw": "quickdraw", "real": "real photo", "sketch": "sketch"}),
}


# ---------------------------------------------------------------------------------------------------
# Matching the domains found in the data onto a dataset's known domains


def _key(name: str) -> str:
    """`Real World`, `real_world`, `RealWorld` -> "realworld": case, spaces and punctuation dropped."""
    return "".join(ch for ch in name.casefold() if ch.isalnum())


def _key_without_number(name: str) -> str:
    """`SUN09` -> "sun", `Caltech101` -> "caltech": the key without a trailing number (year, size)."""
    return re.sub(r"\d+$", "", _key(name))


def match_domains(found: list[str], known: tuple[str, ...] | list[str]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Map domain names found in the data onto `known` ones; returns (matched, ambiguous).

    The rule, in two passes, each one-to-one:
      1. same key: equal after lower-casing and dropping everything but letters and digits
         (`SUN09` ~ `sun09` ~ `Sun-09`, `Real World` ~ `real_world` ~ `RealWorld`);
      2. for what pass 1 left, a folder may omit a known name's trailing number (`sun` ~ `SUN09`,
         `caltech` ~ `Caltech101`), never the reverse and never more than that, so `cal` matches nothing.
    A found name with several candidates in a pass (`location` ~ `location_38`, `location_43`, ...), or a
    known name claimed by several found names in a pass (`Art` and `art`), matches nothing; those found
    names are returned in `ambiguous` with their candidates. Everything else unmatched is simply unknown.
    """
    matched: dict[str, str] = {}
    ambiguous: dict[str, list[str]] = {}
    for known_key in (_key, _key_without_number):
        free = [k for k in known if k not in matched.values()]
        claims: dict[str, list[str]] = defaultdict(list)
        for name in found:
            if name in matched or name in ambiguous or not _key(name):
                continue
            hits = [k for k in free if known_key(k) == _key(name)]
            if len(hits) == 1:
                claims[hits[0]].append(name)
            elif hits:
                ambiguous[name] = hits
        for k, names in claims.items():
            if len(names) == 1:
                matched[names[0]] = k
            else:
                ambiguous.update({n: [k] for n in names})
    return matched, ambiguous


@dataclass
class DomainPlan:
    """What a preset writes about the data: sweep.domains, embed.anchors, and the lines to show."""

    domains: list[str]
    anchors: list[str]
    classes: list[str] = field(default_factory=list)   # found in the data; empty when it is not there yet
    messages: list[str] = field(default_factory=list)  # "warning: ..." / "note: ..." lines for stderr


def canonical_plan(name: str) -> DomainPlan:
    """The dataset's DomainBed spellings and RISE's anchors for them."""
    ds = DATASETS[name]
    return DomainPlan(list(ds.domains), ds.anchors(list(ds.domains), {d: d for d in ds.domains}))


def plan_domains(name: str, data_root: str | os.PathLike, class_map: dict[str, str] | None = None) -> DomainPlan:
    """The domains (and anchors) of dataset `name` as `data_root` spells them.

    A root that does not exist yet gets the canonical DomainBed spellings and a note. Otherwise the root
    is listed (folders or index rows, no image is opened) and its domains are matched onto the known ones
    (`match_domains`): sweep.domains are then the found spellings, all of them, with one warning per
    known domain that is missing and per found domain that is not known (it is kept: a user may add a
    domain on purpose). A root that shares no domain with the dataset is refused (wrong dataset or root).

    Class display names are not planned (embed.class_names is left alone): the embed step already turns
    each class the shards hold into words with `readable` (`Alarm_Clock` -> "alarm clock"), and open_clip's
    CLIP tokenizer lower-cases every prompt anyway, so a map written here would only repeat that, and go
    stale when the data or shard.class_map changes. The classes are listed only to report their number.
    """
    ds = DATASETS[name]
    if not Path(data_root).exists():
        plan = canonical_plan(name)
        plan.messages.append(f"note: {data_root} does not exist yet; sweep.domains are {ds.title}'s canonical "
                             f"names {', '.join(ds.domains)} (run preset again once the data is there)")
        return plan
    source = sources.scan(data_root, class_map)
    matched, ambiguous = match_domains(source.domains, ds.domains)
    if not matched:
        raise UserError(_no_match_message(name, data_root, source.domains))
    messages = [f"warning: known {ds.title} domain {k} not found in {data_root}"
                for k in ds.domains if k not in matched.values()]
    for d in source.domains:
        if d in ambiguous:
            messages.append(f"warning: domain '{d}' in {data_root} matches {ds.title}'s "
                            f"{', '.join(ambiguous[d])} ambiguously; it is kept as an unknown domain")
        elif d not in matched:
            messages.append(f"warning: domain '{d}' in {data_root} is not a known {ds.title} domain; it is kept")
    return DomainPlan(list(source.domains), ds.anchors(source.domains, matched), list(source.classes), messages)


def _no_match_message(name: str, data_root, found: list[str]) -> str:
    ds = DATASETS[name]
    msg = (f"no domain in {data_root} ({', '.join(found)}) is a {ds.title} domain ({', '.join(ds.domains)}); "
           f"check the data root")
    counts = {other: len(match_domains(found, d.domains)[0]) for other, d in DATASETS.items() if other != name}
    best = max(counts.values())
    likely = [other for other, n in counts.items() if n == best]
    if best and len(likely) == 1:
        msg += (f", or run `rise-pipeline preset {likely[0]} --data-root {data_root}` "
                f"(its domains look like {DATASETS[likely[0]].title}'s)")
    return msg


# ---------------------------------------------------------------------------------------------------
# params.yaml overlays


def dataset_overlay(name: str, data_root: str, plan: DomainPlan | None = None, teacher: str = "ViT-B-16-quickgelu",
                    pretrained: str = "openai", student: str = "resnetv2_50x1_bit.goog_in21k_ft_in1k") -> dict:
    """The params.yaml sections a real dataset needs, with RISE's published defaults; the domains and
    anchors are `plan`'s (default: the dataset's canonical ones)."""
    d = DATASETS[name]
    plan = plan or canonical_plan(name)
    return {
        "data": {"root": data_root},
        "world": {"enabled": False},
        "teacher": {"enabled": False},
        "student": {"enabled": False},
        "embed": {"model": teacher, "pretrained": pretrained, "templates": list(RISE_TEMPLATES),
                  "anchors": list(plan.anchors), "views": 20, "audit_threshold": 0.95},
        # The whole recipe is set, not only what differs from the demo: no demo value may leak into a real run
        # (the student starts from timm's ImageNet weights, not the demo's local checkpoint).
        "distill": {"student": student, "pretrained": True, "checkpoint": "", "checkpoint_sha256": "",
                    "image_size": 224, "epochs": 20, "batch_size": 128, "lr": d.lr, "mix_lrs": [d.lr, d.mix_lr], "momentum": 0.9,
                    "weight_decay": 5e-4, "lr_decay_at": 0.8, "lr_gamma": 0.1, "text_ensemble": d.text_ensemble,
                    "workers": ONE_PER_CORE, "threads": 0},
        # One group at a time with every core's torch threads (or the GPU): a ResNet-50's steps are large
        # enough to use them, unlike the demo's tiny student (demo: 2 groups at once, 1 thread each).
        "sweep": {"domains": list(plan.domains), "methods": ["erm", "kd", "rise"], "seeds": [0, 1, 2],
                  "grid": copy.deepcopy(GRIDS[name]), "jobs": 1},
    }


def apply_overlay(node, overlay: dict) -> None:
    """Merge `overlay` into the mapping `node` in place (nested mappings merge, everything else is
    replaced), so a round-tripped params.yaml keeps its comments and key order."""
    for k, v in overlay.items():
        if isinstance(v, dict) and isinstance(node.get(k), dict):
            apply_overlay(node[k], v)
        else:
            node[k] = v
