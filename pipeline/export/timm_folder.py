"""Writing a run's student as a plain timm model folder (`config.json` + `model.safetensors`, what
`timm.models.save_for_hf` writes and `timm.create_model("local-dir:DIR", pretrained=True)` or the HF hub
read), and recognising such folders again.

The pretrained config carries the class folder names (`label_names`) and the run's evaluation preprocessing:
distill resizes the whole image to size x size, bilinear with antialiasing, no crop (`distill.data.eval_image`),
then normalises with the backbone's mean/std. timm's eval transform does exactly that with `crop_pct=1.0,
crop_mode="squash"` (Resize((s, s)) then a centre crop of the same size, which keeps every pixel).

A rise-mix run is several students whose softmax outputs are summed: DIR/student-K/ is each one's timm
folder and DIR/ensemble.json names them and the rule. A run scored with the test-time text ensemble exports
its classifier alone (the ensemble needs the embedding z, which the fold removes); the export says so."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from ..errors import UserError
from ..io import _new_file, dumps_json, write_text

log = logging.getLogger(__name__)
FORMAT = "rise-pipeline/export/1"
ENSEMBLE = "ensemble.json"
MARKER = "rise_pipeline"  # top-level key of config.json: where the export came from (timm ignores it)
TEXT_ENSEMBLE_LEFT_OUT = ("the run's test-time text ensemble (softmax(logits) + softmax(100 cos(z, t)), "
                          "distill.text_ensemble) is left out: the export scores with softmax(logits) alone; "
                          "`rise-pipeline predict/evaluate RUN` keep it")


def data_config(student, image_size: int) -> dict:
    """The run's eval preprocessing as timm data-config fields (see the module docstring)."""
    return {"input_size": (3, image_size, image_size), "interpolation": "bilinear", "crop_pct": 1.0,
            "crop_mode": "squash", "mean": tuple(float(v) for v in student.mean.flatten()),
            "std": tuple(float(v) for v in student.std.flatten())}


def provenance(run, fold_diffs: list[float]) -> dict:
    m = run.metrics
    return {"format": FORMAT, "run": str(run.path), "method": m.get("method"), "student": run.config["student"],
            "target_domain": m.get("target_domain"), "seed": m.get("seed"), "selected_epoch": run.epoch,
            "target_acc": m.get("target_acc"), "source_val_acc": m.get("source_val_acc"),
            "teachers": run.config.get("teachers"), "fold_max_abs_logit_diff": max(fold_diffs),
            "left_out": TEXT_ENSEMBLE_LEFT_OUT if run.text_ensemble else None}


def _prepare_out(out: Path) -> Path:
    """A fresh temporary folder beside OUT; OUT itself may not hold anything but an earlier export."""
    if out.exists():
        if not out.is_dir():
            raise UserError(f"--out {out} exists and is not a folder")
        if any(out.iterdir()) and not is_our_export(out):
            raise UserError(f"--out {out} is not empty and holds no earlier export of rise-pipeline; "
                            "choose another folder or empty it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_file(out.parent, f".{out.name}.", ".tmp")
    tmp.unlink()
    tmp.mkdir()
    return tmp


def is_our_export(folder: Path) -> bool:
    for cfg in (folder / ENSEMBLE, folder / "config.json"):
        try:
            data = json.loads(cfg.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and (data.get("format") == FORMAT
                                       or isinstance(data.get(MARKER), dict)):
            return True
    return False


def _save_one(model, folder: Path, labels: list[str], dcfg: dict, info: dict) -> None:
    import timm.models

    timm.models.save_for_hf(model, str(folder), model_config={"label_names": list(labels), MARKER: info},
                            safe_serialization=True, data_config=dcfg)


def write_export(run, models: list, out: str | Path, fold_diffs: list[float]) -> dict:
    """Write the folded `models` (one per student of `run`) into OUT, atomically (a temporary folder renamed
    into place). Returns the provenance recorded."""
    out = Path(out)
    info = provenance(run, fold_diffs)
    dcfg = data_config(run.students[0], run.image_size)
    tmp = _prepare_out(out)
    try:
        if len(models) == 1:
            _save_one(models[0], tmp, run.class_names, dcfg, info)
        else:
            members = [f"student-{k}" for k in range(len(models))]
            for k, (model, name) in enumerate(zip(models, members, strict=True)):
                _save_one(model, tmp / name, run.class_names, dcfg, {**info, "member": k})
            write_text(tmp / ENSEMBLE, dumps_json({
                "format": FORMAT, "members": members, "label_names": list(run.class_names),
                "combine": "sum of the members' softmax(logits)", MARKER: info}))
        write_text(tmp / "README.md", readme(out, info, len(models), run.class_names))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def readme(out: Path, info: dict, n_models: int, labels: list[str]) -> str:
    name = out.name
    head = (f"# {name}\n\nA {info['student']} student distilled from CLIP by rise-pipeline ({info['method']}, "
            f"held-out domain {info['target_domain']!r}: accuracy {info['target_acc']:.4f} at epoch "
            f"{info['selected_epoch']}). Classes: {', '.join(labels)}.\n\n")
    if n_models == 1:
        body = f"""```python
import timm, torch
from PIL import Image

model = timm.create_model("local-dir:{name}", pretrained=True).eval()
transform = timm.data.create_transform(**timm.data.resolve_data_config({{}}, model=model))
labels = model.pretrained_cfg["label_names"]
with torch.no_grad():
    probs = model(transform(Image.open("image.jpg").convert("RGB")).unsqueeze(0)).softmax(-1)[0]
print(labels[int(probs.argmax())], float(probs.max()))

# to the Hugging Face hub (then timm.create_model("hf-hub:ORG/{name}", pretrained=True)):
timm.models.push_to_hf_hub(model, "ORG/{name}", model_config={{"label_names": labels}},
                           data_config=timm.data.resolve_data_config({{}}, model=model))
```
"""
    else:
        body = f"""A rise-mix run: {n_models} students (`student-0` ... `student-{n_models - 1}`, each a timm model
folder like any other), whose softmax outputs are summed (`{ENSEMBLE}`).

```python
import timm, torch
from PIL import Image

members = [timm.create_model(f"local-dir:{name}/student-{{k}}", pretrained=True).eval() for k in range({n_models})]
transform = timm.data.create_transform(**timm.data.resolve_data_config({{}}, model=members[0]))
x = transform(Image.open("image.jpg").convert("RGB")).unsqueeze(0)
with torch.no_grad():
    scores = sum(m(x).softmax(-1) for m in members)[0]
print(members[0].pretrained_cfg["label_names"][int(scores.argmax())])
```
"""
    note = f"\nNote: {info['left_out']}.\n" if info.get("left_out") else ""
    return head + body + note
