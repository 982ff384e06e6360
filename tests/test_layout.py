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
