"""A distill run's checkpoints: `RUN/checkpoints/last.pt` (resume) and `best.pt` (the selected epoch's model).

Both are written atomically (docs/design.md, "Atomic outputs") and hold nothing but tensors and plain data
(numbers, strings, lists, dicts) under a format marker, so they are read with `torch.load(weights_only=True)`:
a file in a shared runs folder that would build any other object (that is, run code) is refused, never run.

`last.pt` resumes a run only when it is the same run: the same result config (`config.result_differences`,
the rule the step's "up to date" check uses, so options such as --device may differ) and the same teacher
store (`store_identity`). Anything else is refused, or discarded under `restart_stale`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..io import write_torch
from .config import result_differences

log = logging.getLogger(__name__)
FORMAT = "rise-pipeline/checkpoint/1"
LAST, BEST = "last.pt", "best.pt"
# What each file must hold, with the type of each entry (checked before anything is used).
_COMMON = {"format": str, "config": dict, "store": dict, "store_id": str}
# last.pt: one state per student of the run (model, optimizer, scheduler, rng: its CPU and device generator
# states), then the run's record. best.pt: the selected epoch's model (a mix: one per student, "0", "1", ...).
LAST_KEYS = {**_COMMON, "units": list, "epochs_done": int, "history": list}
UNIT_KEYS = {"model": dict, "optimizer": dict, "scheduler": dict, "rng": dict}
BEST_KEYS = {**_COMMON, "model": dict, "epoch": int, "metrics": dict}
# What last.pt held before each student's state had its own entry (one model, one CPU generator state).
_EARLIER_LAST = ("model", "optimizer", "scheduler", "torch_rng")


def store_identity(store) -> str:
    """What a run's targets depend on: the store's provenance plus its text embeddings (prompts, anchors
    and class names change those without changing any image embedding)."""
    h = hashlib.sha256(json.dumps(store.attrs, sort_keys=True, default=str).encode())
    for arr in (store.text_class, store.text_class_raw, store.text_anchor):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def run_identity(stores: list) -> str:
    """The identity of what a run distils from: one store's `store_identity`, or, for a mix of teachers, a
    hash of each store's identity in order."""
    if len(stores) == 1:
        return store_identity(stores[0])
    return hashlib.sha256("\n".join(store_identity(s) for s in stores).encode()).hexdigest()


def plain(obj):
    """A JSON-typed copy (dict, list, str, int, float, bool, None): what a checkpoint holds besides tensors."""
    return json.loads(json.dumps(obj))


def _first_line(e: BaseException) -> str:
    """`Type: first sentence` of an exception, for a one-line message."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0].split('. ')[0][:160]}" if text else type(e).__name__


def _why_unloadable(e: Exception) -> str:
    # torch's safe-loader message is long and suggests weights_only=False, the one thing not to do here:
    # keep only what it refused.
    text = str(e)
    refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if refused:
        return f"it names {refused.group(1)}, beyond tensors and plain data, so the safe loader refused it"
    detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    if detail:
        return f"unreadable: {detail.group(1).split('. ')[0][:160]}"
    return f"unreadable: {_first_line(e)}"


def _not_ours(path: Path, why: str) -> UserError:
    # Never deleted here, not even under --restart-stale: a file we cannot read may be someone's data, or
    # tampering worth looking at. The person decides.
    return UserError(f"{path} is not a checkpoint written by rise-pipeline ({why}); it was not used. Check where "
                     "it came from, then delete it to train this run from scratch, or use another --out "
                     "(--restart-stale does not remove files it cannot read)")


def read_checkpoint(path: str | Path, keys: dict = LAST_KEYS, map_location="cpu") -> dict:
    """Load a checkpoint of this tool with the safe loader and check its marker and entries; anything else
    (not a torch file, truncated, objects beyond tensors and plain data, no marker) is a one-line UserError."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about unusual pickle protocols: the answer is one line
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever a foreign file makes the loader raise, the answer is the same
        raise _not_ours(path, _why_unloadable(e)) from None
    if not isinstance(state, dict) or "format" not in state:
        raise _not_ours(path, "no checkpoint format marker")
    if state["format"] != FORMAT:
        raise _not_ours(path, f"format {str(state['format'])[:60]!r}, this version reads {FORMAT!r}")
    return check_entries(path, state, keys)


def check_entries(path: Path, state: dict, keys: dict) -> dict:
    """`state` when it holds `keys` with their types (and, for last.pt, each unit its entries)."""
    wrong = [k for k, t in keys.items() if not isinstance(state.get(k), t)]
    if keys is LAST_KEYS and not wrong:
        wrong = sorted({f"units.{k}" for u in state["units"] for k, t in UNIT_KEYS.items()
                        if not isinstance(u, dict) or not isinstance(u.get(k), t)})
    if wrong:
        raise _not_ours(path, f"missing or malformed {', '.join(wrong)}")
    return state


class Checkpointer:
    """Writes and reads one run's `checkpoints/` folder; knows nothing about training itself."""

    def __init__(self, out: str | Path, config: dict, store, restart_stale: bool = False, store_id: str | None = None):
        self.out = Path(out)
        self.folder = self.out / "checkpoints"
        self.config = plain(config)
        self.store_attrs = plain(store.attrs)
        self.store_id = store_id or store_identity(store)
        self.restart_stale = restart_stale

    def _save(self, name: str, entries: dict) -> None:
        state = {"format": FORMAT, "config": self.config, "store": self.store_attrs, "store_id": self.store_id,
                 **entries}
        write_torch(self.folder / name, state)

    def save_last(self, training_state: dict) -> None:
        """`training_state`: units (each: model, optimizer, scheduler, rng), epochs_done, history."""
        self._save(LAST, training_state)

    def save_best(self, model_state: dict, epoch: int, metrics: dict) -> None:
        self._save(BEST, {"model": model_state, "epoch": epoch, "metrics": plain(metrics)})

    def discard(self) -> None:
        """Remove this tool's checkpoint files (never rewritten in place: DVC may hardlink them)."""
        for name in (LAST, BEST):
            (self.folder / name).unlink(missing_ok=True)

    def resume(self, restore: Callable[[dict], None], map_location="cpu") -> int:
        """Hand `last.pt` to `restore` when it holds this run and return the epochs it covers; 0 when the run
        starts from scratch (no checkpoint, or a stale one discarded under `restart_stale`)."""
        path = self.folder / LAST
        if not path.is_file():
            return 0
        earlier = read_checkpoint(path, _COMMON, map_location)
        if "units" not in earlier and all(k in earlier for k in _EARLIER_LAST):
            # Written by an earlier release, before a run's students each kept their own state.
            if self.restart_stale:
                self.discard()
                log.warning("%s: checkpoints of an earlier release removed; training from scratch", self.out)
                return 0
            raise UserError(f"{self.out} holds checkpoints of an earlier release; delete them (or pass "
                            "--restart-stale) to train this run from scratch, or use another --out")
        state = check_entries(path, earlier, LAST_KEYS)
        changed = result_differences(self.config, state["config"])
        other_store = state["store_id"] != self.store_id
        if (changed or other_store) and self.restart_stale:
            # Under DVC the stage reruns because its inputs changed: the old checkpoints are stale (and
            # already in DVC's cache). Remove them and train from scratch.
            self.discard()
            log.warning("%s: checkpoints from another config or store removed; training from scratch", self.out)
            return 0
        if changed:
            raise UserError(f"{self.out} holds a run with a different config ({', '.join(changed)}); "
                            "use another --out or delete it (or pass --restart-stale)")
        if other_store:
            raise UserError(f"{self.out} was trained from a different teacher store; use another --out "
                            "(or pass --restart-stale)")
        try:
            restore(state)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
            # Marker, config and store match, yet the states do not load (e.g. the student's code changed).
            raise UserError(f"{path} does not fit this run ({_first_line(e)}); delete it to train from scratch "
                            "or use another --out") from None
        log.info("resuming %s after epoch %d", self.out, state["epochs_done"])
        return state["epochs_done"]
