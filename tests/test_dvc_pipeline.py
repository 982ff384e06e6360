"""The real `dvc repro` on tiny data: each staleness rule of dvc.yaml, and a `dvc exp run -S` override.

The tests in this module run in order on one repository (module-scoped), each step building on the last,
as a user's session would. Data: a tiny dataset made with the demo-world generator but used as a plain
folder (world/teacher stages disabled, as with a real dataset), a random-weight RISE-micro-ViT teacher.
"""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from pipeline.demo.world import WorldConfig, write_world
from tests.dvc_fixtures import make_repo, real_data_params, repro, run, write_params

# The real `dvc repro` several times over: the longest module of the suite (`pytest -m "not slow"` skips it).
pytestmark = pytest.mark.slow

DISTILL_RUNS = {"distill"}  # one group here: every method x grid config of (sketch, seed 0)
EVERYTHING_AFTER_EMBED = {"embed", *DISTILL_RUNS, "report"}


def tiny_params() -> dict:
    return real_data_params(views=2, templates=["a photo of a {}.", "a sketch of a {}."], batch_size=16, lr=0.01,
                            sweep={"domains": ["sketch"], "methods": ["erm", "rise"], "seeds": [0], "grid": [{}]})


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("dvc") / "repo", tiny_params())
    write_world(WorldConfig(per_cell=5, image_size=32, classes=["car", "fish", "star"],
                            domains=["cartoon", "photo", "sketch"]), repo / "data" / "images")
    return repo


def _folders(repo) -> dict[tuple[str, float], str]:
    """(method, w_dist) -> the folder name of that student in group sketch-0, by the plan of the repo's params."""
    from pipeline.plan import plan_sweep

    return {(m.method, m.cfg.w_dist): m.name for m in plan_sweep(repo / "params.yaml").group("sketch", 0).members}


def _set(repo, section, **values):
    p = yaml.safe_load((repo / "params.yaml").read_text())
    p[section].update(values)
    write_params(repo, p)


def test_first_repro_runs_every_stage(repo):
    ran, out = repro(repo)
    assert ran == {"world", "teacher", "student-pretrain", "shard", *EVERYTHING_AFTER_EMBED}
    for stage in ("world", "teacher", "student"):  # demo stages cost nothing with a real dataset
        assert sorted(p.name for p in (repo / "data" / stage).iterdir()) == ["DISABLED.txt"]
    folders = _folders(repo)
    assert sorted(p.name for p in (repo / "data/runs/sketch-0").iterdir()) == sorted(folders.values())
    assert len(folders) == 2 and set(folders) == {("erm", 0.0), ("rise", 1.0)}
    for (method, _), name in folders.items():
        m = json.loads((repo / "data/runs/sketch-0" / name / "metrics.json").read_text())
        assert (m["status"], m["method"], m["target_domain"], m["epochs"]) == ("complete", method, "sketch", 1)
    assert "| erm" in out and "| rise" in out  # the report's table is printed at the end of dvc repro
    assert _numbers(json.loads((repo / "data/report/metrics.json").read_text())) == _expected_report(repo)


def _run_metrics(repo) -> dict[str, dict]:
    """method -> metrics.json of every complete run in group sketch-0 the current plan names."""
    runs = repo / "data/runs/sketch-0"
    return {m["method"]: m for m in (json.loads((runs / n / "metrics.json").read_text())
                                     for n in _folders(repo).values())}


def _expected_report(repo) -> dict:
    """The report's numbers, worked out from the runs: one run per method, so each row's only cell and its
    average are that run's target accuracy in percent; the teacher's row is its accuracy every run records."""
    runs = _run_metrics(repo)
    [teacher] = {m["teacher_target_acc"] for m in runs.values()}
    rows = {method: m["target_acc"] for method, m in runs.items()} | {"teacher_zero_shot": teacher}
    return {**{row: {"sketch": round(100 * acc, 4), "avg": round(100 * acc, 4)} for row, acc in rows.items()},
            "n_runs": {"complete": len(runs), "incomplete": 0, "failed": 0}}


def _numbers(metrics: dict) -> dict:
    """A report's metrics.json without the paired verdicts and the learning check (not per-run numbers)."""
    return {k: v for k, v in metrics.items() if not k.startswith("vs_") and k != "learning_check"}


def test_second_repro_does_nothing(repo):
    ran, _ = repro(repo)
    assert ran == set()


def test_distill_param_reruns_only_distill_and_report(repo):
    _set(repo, "distill", lr=0.02)
    ran, _ = repro(repo)
    assert ran == {*DISTILL_RUNS, "report"}
    m = json.loads((repo / "data/runs/sketch-0" / _folders(repo)[("rise", 1.0)] / "metrics.json").read_text())
    assert m["config"]["lr"] == 0.02


def test_growing_the_grid_trains_only_the_new_members(repo):
    before = {n: (repo / "data/runs/sketch-0" / n / "metrics.json").stat().st_mtime_ns
              for n in _folders(repo).values()}
    _set(repo, "sweep", grid=[{"w_dist": 2.0}, {}])  # inserted before the existing entry
    ran, out = repro(repo)
    assert ran == {*DISTILL_RUNS, "report"}
    after = {n: (repo / "data/runs/sketch-0" / n / "metrics.json").stat().st_mtime_ns for n in before}
    assert after == before  # the complete members were skipped, not retrained
    new = _folders(repo)[("rise", 2.0)]
    assert len(_folders(repo)) == 3  # ERM ignores w_dist: still one ERM student
    assert json.loads((repo / "data/runs/sketch-0" / new / "metrics.json").read_text())["config"]["w_dist"] == 2.0
    assert "up to date" in out
    _set(repo, "sweep", grid=[{}])


def test_prompt_change_reruns_embed_onwards_never_shard(repo):
    _set(repo, "embed", templates=["a photo of a {}.", "a drawing of a {}."])
    ran, _ = repro(repo)
    assert ran == EVERYTHING_AFTER_EMBED


def test_added_image_reruns_shard_and_embeds_only_its_shard(repo):
    parts = repo / "data/work/parts"
    before = set(parts.iterdir())
    shards_before = {p.name: p.read_bytes() for p in (repo / "data/work/shards/photo").glob("*.tar")}
    src = repo / "data/images/photo/fish/00000.png"
    shutil.copy(src, src.with_name("00000_new.png"))
    (src.with_name("00000_new.png")).write_bytes(src.read_bytes() + b"\0")  # a new file, not a duplicate
    ran, _ = repro(repo)
    assert ran == {"shard", *EVERYTHING_AFTER_EMBED}
    shards_after = {p.name: p.read_bytes() for p in (repo / "data/work/shards/photo").glob("*.tar")}
    changed = [n for n, b in shards_after.items() if b not in shards_before.values()]
    # content-defined shard boundaries: the receiving shard changes, the rest of the domain does not ...
    assert 1 <= len(changed) < len(shards_after), (changed, len(shards_after))
    # ... and the embed step computes a part for exactly the changed shards, reusing all the others
    assert len(set(parts.iterdir()) - before) == len(changed)


def test_exp_run_with_override_shows_its_metrics(repo):
    run(repo, ["git", "add", "-A"])
    run(repo, ["git", "commit", "-qm", "baseline"])
    r = run(repo, ["dvc", "exp", "run", "-n", "wdist2", "-S", "distill.w_dist=2"])
    assert "Running stage 'shard'" not in r.stdout and "Running stage 'embed'" not in r.stdout
    shown = json.loads(run(repo, ["dvc", "exp", "show", "--json"]).stdout)
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("name") == "wdist2" and node.get("data"):
                found.append(node["data"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(shown)
    assert found, "experiment not listed by dvc exp show"
    data = found[0]
    params = data["params"]["params.yaml"]["data"]
    assert params["distill"]["w_dist"] == 2
    # the experiment's results are left in the workspace: what dvc shows is the report of its runs
    assert _run_metrics(repo)["rise"]["weights"]["w_dist"] == 2
    metrics = data["metrics"]["data/report/metrics.json"]["data"]
    assert _numbers(metrics) == _expected_report(repo)


def test_an_extra_teacher_adds_its_embed_stage_and_rise_mix(repo):
    p = yaml.safe_load((repo / "params.yaml").read_text())
    p["extra_teachers"] = [{"name": "rn", "model": "RISE-tiny-RN", "pretrained": "random"}]
    write_params(repo, p)
    ran, out = repro(repo)
    assert ran == {"embed-teacher@0", *DISTILL_RUNS, "report"}  # never shard or the main embed
    assert (repo / "data/work/teachers/embeddings-rn.h5").is_file()
    [mix_name] = [name for (method, _), name in _folders(repo).items() if method == "rise-mix"]
    mix = json.loads((repo / "data/runs/sketch-0" / mix_name / "metrics.json").read_text())
    assert mix["method"] == "rise-mix" and mix["teachers"] == ["default", "rn"]
    assert "rise-mix" in json.loads((repo / "data/report/metrics.json").read_text())
    assert "up to date" in out  # the other members were complete: only rise-mix trained
    ran, _ = repro(repo)
    assert ran == set()
