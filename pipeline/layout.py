"""The work folder's layout: every file and folder under WORK (`data.work`), named here and nowhere else.

    WORK/shards/<domain>/<domain>-NNNNNN.tar   the shards (shard step), with
    WORK/shards/index.json, stats.json        their index (checksums, counts, offsets) and statistics
    WORK/manifest.jsonl                        every input file's fate
    WORK/embeddings.h5                         the default teacher's store (embed step), with
    WORK/teacher_report.json, audit.json,      its zero-shot report, near-duplicate audit and config
         embed_config.json
    WORK/parts/                                its per-shard embedding parts (resume)
    WORK/teachers/embeddings-NAME.h5, ...      another teacher's store `NAME` (rise-mix) and its files
    WORK/parts-NAME/                           that store's parts

A store's files follow one rule (`store_file`); the readers and writers ask the functions below for paths.
Schemas: docs/contracts.md. dvc.yaml spells the same paths in its stages' deps and outs.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import UserError

DEFAULT_STORE = "default"
SHARDS_DIR = "shards"
INDEX_NAME = "index.json"
STATS_NAME = "stats.json"
MANIFEST_NAME = "manifest.jsonl"
TEACHERS_DIR = "teachers"
PARTS_DIR = "parts"
_STORE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def check_store_name(name: str) -> str:
    """`name` if it can name a teacher store, else a one-line user error."""
    if not _STORE_ID.fullmatch(name):
        raise UserError(f"store name {name!r}: use letters, digits, '-' and '_' (e.g. rn101)")
    return name


def store_file(name: str = DEFAULT_STORE, stem: str = "embeddings", suffix: str = ".h5") -> str:
    """A teacher store's file, relative to WORK: `default` -> embeddings.h5, `NAME` ->
    teachers/embeddings-NAME.h5 (the same rule names its teacher report, audit and config:
    teachers/teacher_report-NAME.json, ...). Several stores built from the same shards hold several
    teachers' embeddings (rise-mix); the extra ones share one folder, which distill depends on as a whole."""
    check_store_name(name)
    return f"{stem}{suffix}" if name == DEFAULT_STORE else f"{TEACHERS_DIR}/{stem}-{name}{suffix}"


def shards_dir(work: str | Path) -> Path:
    return Path(work) / SHARDS_DIR


def shard_index(work: str | Path) -> Path:
    return shards_dir(work) / INDEX_NAME


def shard_stats(work: str | Path) -> Path:
    return shards_dir(work) / STATS_NAME


def manifest(work: str | Path) -> Path:
    return Path(work) / MANIFEST_NAME


def store(work: str | Path, name: str = DEFAULT_STORE) -> Path:
    """The teacher store `name`'s HDF5 file."""
    return Path(work) / store_file(name)


def teacher_report(work: str | Path, name: str = DEFAULT_STORE) -> Path:
    """The store's teacher report (zero-shot accuracy per domain x split)."""
    return Path(work) / store_file(name, "teacher_report", ".json")


def audit(work: str | Path, name: str = DEFAULT_STORE) -> Path:
    """The store's near-duplicate audit."""
    return Path(work) / store_file(name, "audit", ".json")


def embed_config(work: str | Path, name: str = DEFAULT_STORE) -> Path:
    """The embed step's config that wrote the store."""
    return Path(work) / store_file(name, "embed_config", ".json")


def teachers_dir(work: str | Path) -> Path:
    """The extra teachers' stores (exists, maybe empty, once any embed step ran: distill depends on it)."""
    return Path(work) / TEACHERS_DIR


def parts_dir(work: str | Path, name: str = DEFAULT_STORE) -> Path:
    """The store's per-shard embedding parts: each store its own folder (under DVC, one stage's output)."""
    return Path(work) / (PARTS_DIR if check_store_name(name) == DEFAULT_STORE else f"{PARTS_DIR}-{name}")
