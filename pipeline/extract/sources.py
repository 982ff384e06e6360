"""Finding the input files: a DomainBed folder `DATA/<domain>/<class>/<file>` or an index file.

`scan` lists EVERY file under a folder root (or every row of an index) as a `FileEntry`; entries that
cannot be a sample for structural reasons (outside a class folder, inside an ignored folder, missing
from disk) carry their skip reason already, so the manifest can give every file its fate. It also
returns the class list (sorted union of the class names after `class_map`), and refuses class names
that differ only by case, spaces or underscores (a user fixes the data or passes a class map).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import UserError

INDEX_SUFFIXES = (".csv", ".jsonl")
INDEX_COLUMNS = ("path", "domain", "class")
# Folders that archivers and notebooks leave behind; never a domain, their files are recorded as skipped.
IGNORED_DIRS = ("__MACOSX",)


@dataclass
class FileEntry:
    source: str                 # path relative to the data root (folder) or as written in the index
    path: str                   # absolute path on disk
    domain: str | None = None
    class_name: str | None = None
    skip: str | None = None     # structural skip reason, None for a candidate image
    detail: str = ""


@dataclass
class Source:
    root: Path
    kind: str                   # "folder" or "index"
    entries: list[FileEntry]
    domains: list[str]
    classes: list[str]
    warnings: list[str] = field(default_factory=list)

    def domain_path(self, domain: str) -> str:
        """Where a domain lives, for error messages."""
        return str(self.root / domain) if self.kind == "folder" else f"domain '{domain}' of {self.root}"


def _ignored(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_DIRS


def scan(root: str | os.PathLike, class_map: dict[str, str] | None = None) -> Source:
    root = Path(root)
    if not root.exists():
        raise UserError(f"data root not found: {root}")
    if root.is_file():
        if root.suffix.lower() not in INDEX_SUFFIXES:
            raise UserError(f"data root is a file but not a .csv or .jsonl index: {root}")
        entries = _scan_index(root)
        kind = "index"
    else:
        entries = _scan_folder(root)
        kind = "folder"
    class_map = dict(class_map or {})
    for e in entries:
        if e.class_name is not None:
            e.class_name = class_map.get(e.class_name, e.class_name)
    candidates = [e for e in entries if e.skip is None]
    _check_class_clashes(candidates)
    domains = sorted({e.domain for e in candidates})
    classes = sorted({e.class_name for e in candidates})
    return Source(root=root, kind=kind, entries=entries, domains=domains, classes=classes,
                  warnings=_missing_class_warnings(candidates, domains, classes))


def _scan_folder(root: Path) -> list[FileEntry]:
    top = sorted(os.scandir(root), key=lambda d: d.name)
    if not top:
        raise UserError(f"data root is empty: {root}")
    domain_dirs = [d.name for d in top if d.is_dir() and not _ignored(d.name)]
    if not domain_dirs:
        raise UserError(f"no domain folders in {root} (expected DATA/<domain>/<class>/<image>)")
    entries = []
    seen_dirs: set[str] = set()
    # Follow symlinked folders (datasets are often assembled from links) but never twice (loops).
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        seen_dirs.add(os.path.realpath(dirpath))
        dirnames[:] = sorted(d for d in dirnames if os.path.realpath(os.path.join(dirpath, d)) not in seen_dirs)
        for name in sorted(filenames):
            abs_path = Path(dirpath) / name
            rel = abs_path.relative_to(root).as_posix()
            entries.append(_folder_entry(rel, str(abs_path)))
    for domain in domain_dirs:
        if not any(e.domain == domain and e.skip is None for e in entries):
            raise UserError(f"domain folder has no images in class folders: {root / domain}")
    return entries


def _folder_entry(rel: str, abs_path: str) -> FileEntry:
    parts = rel.split("/")
    if any(_ignored(p) for p in parts[:-1]):
        return FileEntry(rel, abs_path, skip="ignored_folder", detail="inside a hidden or archiver folder")
    if len(parts) < 3:
        return FileEntry(rel, abs_path, skip="outside_class_folder",
                         detail="not under DATA/<domain>/<class>/")
    return FileEntry(rel, abs_path, domain=parts[0], class_name=parts[1])


def _read_index_rows(index: Path) -> list[dict]:
    try:
        text = index.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read index {index}: {e}") from None
    if index.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        missing = [c for c in INDEX_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"index {index} lacks column(s) {', '.join(missing)} (needs {', '.join(INDEX_COLUMNS)})")
        return list(reader)
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise UserError(f"index {index} line {lineno} is not JSON: {e}") from None
        missing = [c for c in INDEX_COLUMNS if not isinstance(row, dict) or c not in row]
        if missing:
            raise UserError(f"index {index} line {lineno} lacks {', '.join(missing)} (needs {', '.join(INDEX_COLUMNS)})")
        rows.append(row)
    return rows


def _scan_index(index: Path) -> list[FileEntry]:
    rows = _read_index_rows(index)
    if not rows:
        raise UserError(f"index file has no rows: {index}")
    base = index.parent
    seen: set[str] = set()
    entries = []
    for row in rows:
        source = PurePosixPath(str(row["path"]).replace("\\", "/")).as_posix()
        abs_path = str(base / source)
        domain, cls = str(row["domain"] or "").strip(), str(row["class"] or "").strip()
        if source in seen:
            entries.append(FileEntry(source, abs_path, skip="duplicate_row", detail="listed again in the index"))
        elif not domain or not cls:
            entries.append(FileEntry(source, abs_path, skip="bad_index_row", detail="empty domain or class"))
        elif "/" in domain or "\\" in domain or domain in (".", ".."):
            # The domain names a shard folder: it must not reach outside WORK/shards.
            entries.append(FileEntry(source, abs_path, skip="bad_index_row", detail=f"domain {domain!r} is not a folder name"))
        elif not os.path.isfile(abs_path):
            entries.append(FileEntry(source, abs_path, skip="missing_file", detail="listed but not on disk"))
        else:
            entries.append(FileEntry(source, abs_path, domain=domain, class_name=cls))
        seen.add(source)
    return entries


def normalise_class(name: str) -> str:
    return re.sub(r"[\s_]+", "", name).lower()


def _check_class_clashes(entries: list[FileEntry]) -> None:
    where: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for e in entries:
        where[normalise_class(e.class_name)][e.class_name].add(e.domain)
    clashes = []
    for variants in (v for _, v in sorted(where.items()) if len(v) > 1):
        clashes.append(", ".join(f"'{name}' ({', '.join(sorted(doms))})" for name, doms in sorted(variants.items())))
    if clashes:
        raise UserError("class names differ only by case, spaces or underscores: " + "; ".join(clashes)
                        + " -- rename the folders or map them with shard.class_map in params.yaml")


def _missing_class_warnings(entries: list[FileEntry], domains: list[str], classes: list[str]) -> list[str]:
    present = defaultdict(set)
    for e in entries:
        present[e.class_name].add(e.domain)
    out = []
    for cls in classes:
        missing = [d for d in domains if d not in present[cls]]
        if missing:
            out.append(f"class '{cls}' is missing from domain(s) {', '.join(missing)}")
    return out
