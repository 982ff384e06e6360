"""dvc.yaml's code dependencies cover every project file each stage's command imports (read with ast)."""

from __future__ import annotations

import copy

import pytest
from dvc_deps import REPO, closure, stages, uncovered


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_deps_cover_its_imports(name):
    assert uncovered(stages()[name]) == []


def test_closure_follows_relative_lazy_and_package_imports():
    files = {p.relative_to(REPO).as_posix() for p in closure("stages.distill")}
    # stages.distill imports the step lazily; the step imports the trainer lazily, which imports shards
    # through a relative import of a sibling package; every enclosing package's __init__ runs too.
    for expected in ("pipeline/distill/step.py", "pipeline/distill/trainer.py", "pipeline/shards.py",
                     "pipeline/distill/__init__.py", "pipeline/__init__.py", "stages/options.py"):
        assert expected in files
    assert not any(f.startswith("pipeline/extract/") for f in files)  # distill never imports stage one


@pytest.mark.parametrize("name", sorted(stages()))
def test_removing_any_code_dep_is_caught(name):
    stage = stages()[name]
    stage = stage.get("do", stage)  # a foreach stage: its template
    code = [d for d in stage["deps"] if str(d).startswith(("pipeline", "stages")) and not str(d).endswith("model_configs")]
    assert code, name
    for dep in code:
        broken = copy.deepcopy(stage)
        broken["deps"] = [d for d in broken["deps"] if d != dep]
        assert uncovered(broken), f"{name}: dropping {dep} went unnoticed"
