"""Library and application (docs/design.md): `pipeline` never imports the application or its frameworks, and
the commands in `stages` declare no config of their own. Read statically with `ast`, so imports inside
functions count too."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# What only the application may import: the CLI itself, its framework, DVC, the comment-keeping YAML writer.
APPLICATION_ONLY = ("stages", "click", "dvc", "ruamel")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("path", sorted(REPO.glob("pipeline/**/*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_library_never_imports_the_application(path):
    assert not _imports(path) & set(APPLICATION_ONLY), f"{path.relative_to(REPO)} imports {_imports(path)}"


@pytest.mark.parametrize("path", sorted(REPO.glob("stages/*.py")), ids=lambda p: p.name)
def test_commands_declare_no_dataclasses(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    declared = [n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)
                and any("dataclass" in ast.unparse(d) for d in n.decorator_list)]
    assert declared == [], f"{path.name} declares config classes {declared}; they belong in pipeline/"


def test_every_config_class_lives_in_the_library():
    from stages.options_doc import sections

    for _, cls in sections():
        assert dataclasses.is_dataclass(cls) and cls.__module__.startswith("pipeline."), cls


# The files under WORK, as the code would spell them (docs/contracts.md, `pipeline/layout.py`).
WORK_NAMES = ("embeddings.h5", "teacher_report.json", "audit.json", "embed_config.json", "index.json",
              "stats.json", "manifest.jsonl")


def _code_strings(tree: ast.AST) -> list[str]:
    """String constants that are not docstrings."""
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docs]


@pytest.mark.parametrize("path", sorted(set(REPO.glob("pipeline/**/*.py")) - {REPO / "pipeline" / "layout.py"}),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_only_the_layout_module_names_the_work_files(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    spelt = sorted({s for s in _code_strings(tree) for name in WORK_NAMES if name in s})
    assert spelt == [], f"{path.relative_to(REPO)} spells WORK's file names {spelt}: ask pipeline.layout"


def test_layout_names_each_store_file_by_one_rule(tmp_path):
    from pipeline import layout

    assert layout.store(tmp_path) == tmp_path / "embeddings.h5"
    assert layout.store(tmp_path, "rn101") == tmp_path / "teachers" / "embeddings-rn101.h5"
    assert layout.teacher_report(tmp_path, "rn101") == tmp_path / "teachers" / "teacher_report-rn101.json"
    assert layout.parts_dir(tmp_path, "rn101") == tmp_path / "parts-rn101"
    assert layout.shard_index(tmp_path) == tmp_path / "shards" / "index.json"
