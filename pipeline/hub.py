"""Pretrained weights from the Hugging Face hub, without the long wait when the hub cannot be reached.

open_clip (`--pretrained openai`, `--model hf-hub:ORG/REPO`) and timm (`pretrained=True`) fetch weights
through huggingface_hub, which retries an unreachable hub for half a minute per file and then fails with a
long message. `hub_weights` decides first, in about a second at most:

- the files are in the local HF cache: go ahead; when HF_HUB_OFFLINE is set or the hub cannot be reached,
  the download runs in huggingface_hub's offline mode, so the cached copy is used without any retry;
- HF_HUB_OFFLINE is set and they are not cached: one-line `UserError`;
- otherwise a short TCP probe of the hub (`HF_ENDPOINT`, default https://huggingface.co, or the proxy
  configured for it); no answer: one-line `UserError` saying how to work offline.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_SECONDS = 2.5
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's spelling of a true environment flag


@dataclass(frozen=True)
class HubFiles:
    """Files a library will download from one hub repository: every group is needed, and any one file of
    a group will do (a .safetensors file and its .bin alternative)."""

    repo_id: str
    groups: tuple[tuple[str, ...], ...]
    revision: str | None = None

    def cached(self) -> bool:
        from huggingface_hub import try_to_load_from_cache

        return all(any(isinstance(try_to_load_from_cache(self.repo_id, f, revision=self.revision), str)
                       for f in group) for group in self.groups)


def offline_mode() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, as huggingface_hub reads it."""
    return any((os.environ.get(v) or "").upper() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _probe_address(url: str) -> tuple[str, int]:
    """host:port a request to `url` connects to first: the proxy configured for it, else the server."""
    u = urllib.parse.urlsplit(url)
    host, port = u.hostname or "", u.port or (443 if u.scheme == "https" else 80)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(u.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = p.hostname or host, p.port or (443 if p.scheme == "https" else 80)
    return host, port


def reachable(url: str, seconds: float = PROBE_SECONDS) -> bool:
    """Whether a TCP connection to `url`'s server (or proxy) opens within `seconds`, name lookup included
    (run in a thread: a stuck DNS resolver ignores socket timeouts)."""
    address = _probe_address(url)
    answer: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(address, timeout=seconds):
                answer.append(True)
        except (OSError, ValueError):
            answer.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(seconds)
    return bool(answer and answer[0])


@contextmanager
def _hub_offline() -> Iterator[None]:
    """huggingface_hub's offline mode for the duration (it reads this flag on every request)."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


@contextmanager
def hub_weights(files: HubFiles | None, what: str, instead: str) -> Iterator[None]:
    """Run the block that downloads `files` (None: nothing from the hub) only when that can work.

    `what` names the weights in the error ("teacher ViT-B-16 / openai"); `instead` says what to pass to do
    without the hub ("pass a local checkpoint with --pretrained PATH").
    """
    if files is None:
        yield
        return
    offline = offline_mode()
    if files.cached():
        if offline or not reachable(endpoint()):
            with _hub_offline():
                yield
        else:
            yield  # the library may check the hub for a newer revision, as it normally does
        return
    where = f"the Hugging Face cache ({cache_dir()})"
    if offline:
        raise UserError(f"{what}: HF_HUB_OFFLINE is set and {files.repo_id} is not in {where}; download it "
                        f"once where the hub is reachable (same HF_HOME), or {instead}")
    if not reachable(endpoint()):
        raise UserError(f"{what}: cannot reach the Hugging Face hub ({endpoint()}) to download {files.repo_id}; "
                        f"to work offline set HF_HUB_OFFLINE=1 with the weights in {where}, or {instead}")
    yield


# Default weights file names on the hub (open_clip's and timm's), and the .safetensors twin that either
# library tries before a .bin/.pth file.
OPEN_CLIP_WEIGHTS, OPEN_CLIP_CONFIG = "open_clip_pytorch_model.bin", "open_clip_config.json"
TIMM_WEIGHTS = "pytorch_model.bin"
_SAFE_TWIN = {TIMM_WEIGHTS: "model.safetensors", OPEN_CLIP_WEIGHTS: "open_clip_model.safetensors"}


def _weights_group(filename: str) -> tuple[str, ...]:
    """A weights file and its .safetensors alternative: either one in the cache will do."""
    twin = _SAFE_TWIN.get(filename) or (filename[:-4] + ".safetensors" if filename.endswith((".bin", ".pth")) else None)
    return (twin, filename) if twin else (filename,)


def open_clip_files(model: str, pretrained: str) -> HubFiles | None:
    """What open_clip downloads from the hub for `model` (`hf-hub:ORG/REPO`) or for a pretrained *tag*;
    None when it needs nothing from the hub (a local file or folder, a tag with a plain URL)."""
    import open_clip

    if model.startswith("hf-hub:"):
        repo, _, revision = model[len("hf-hub:"):].partition("@")
        return HubFiles(repo, ((OPEN_CLIP_CONFIG,), _weights_group(OPEN_CLIP_WEIGHTS)), revision or None)
    if model.startswith("local-dir:") or not pretrained or Path(pretrained).is_file():
        return None
    cfg = open_clip.get_pretrained_cfg(model.replace("/", "-"), pretrained)
    if not cfg or cfg.get("file") or not cfg.get("hf_hub"):
        return None
    repo, filename = os.path.split(cfg["hf_hub"])  # "ORG/REPO/" means the default file name
    return HubFiles(repo, (_weights_group(filename or OPEN_CLIP_WEIGHTS),))


def timm_files(name: str) -> HubFiles | None:
    """What `timm.create_model(name, pretrained=True)` downloads from the hub; None when its weights come
    from elsewhere (a file, a plain URL) or it has none."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or cfg.file or cfg.state_dict or not cfg.hf_hub_id:
        return None
    repo, _, revision = cfg.hf_hub_id.partition("@")
    return HubFiles(repo, (_weights_group(cfg.hf_hub_filename or TIMM_WEIGHTS),), revision or None)
