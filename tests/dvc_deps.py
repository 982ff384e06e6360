"""Which project files a DVC stage's command really runs, read statically from the imports (with `ast`).

A stage's command is `rise-pipeline COMMAND ...`; its code is the stages module that defines COMMAND plus
every project module that module imports, transitively (imports inside functions count: they run too).
dvc.yaml must list each of those files, or a folder that holds it, among the stage's deps -- else
editing that file would not rerun the stage.
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "stages")


def _module_file(dotted: str) -> Path | None:
    base = REPO.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(path: Path) -> list[str]:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return parts[:-1] if parts[-1] != "__init__" else parts[:-1]


def imported_modules(path: Path) -> set[str]:
    """Dotted names of the project modules `path` imports (a `from X import name` that names a submodule
    counts as that submodule; packages count through their __init__)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    pkg = _package_of(path)
    if path.name == "__init__.py":
        pkg = list(path.relative_to(REPO).parent.parts)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [mod] + [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) \
                == "import_module" and node.args and isinstance(node.args[0], ast.Constant):
            names = [node.args[0].value]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                parts = name.split(".")
                # every enclosing package's __init__ runs too
                for i in range(1, len(parts) + 1):
                    if _module_file(".".join(parts[:i])) is not None:
                        found.add(".".join(parts[:i]))
    return found


def closure(module: str) -> set[Path]:
    """Project files that running `module` imports, transitively (module included)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        if path is not None:
            todo.extend(imported_modules(path) - seen)
    return {p for p in (_module_file(n) for n in seen) if p is not None}


def stage_command_module(cmd: str) -> str:
    from stages.cli import COMMANDS

    words = cmd.split()
    command = words[words.index("rise-pipeline") + 1]
    return COMMANDS[command][0]


def uncovered(stage: dict) -> list[str]:
    """Files the stage's command imports that none of its deps covers (relative paths, sorted). A `foreach`
    stage is checked through its `do` template."""
    stage = stage.get("do", stage)
    deps = [REPO / str(d) for d in stage.get("deps", []) if "${" not in str(d)]
    cmd = stage["cmd"] if isinstance(stage["cmd"], str) else " ".join(stage["cmd"])
    files = closure(stage_command_module(cmd))
    missing = [p for p in files if not any(p == d or d in p.parents for d in deps)]
    return sorted(str(p.relative_to(REPO)) for p in missing)


def stages() -> dict[str, dict]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
