"""`rise-pipeline sweep run` and dvc.yaml's distill stage: the sweep plan's groups as dask tasks, in-process, on a local cluster of worker
processes, or on an existing scheduler; a killed worker's group is rerun and resumes; `dvc commit` afterwards
leaves nothing for `dvc repro` to do.

Data: the tiny real work folder of tests/distill_fixtures.py (3 domains, 2 classes, random-weight teacher);
sweeps of 2 held-out domains x 1 seed x 2 methods, 2 epochs of the tiny `test_resnet`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import yaml
from distributed import Client, LocalCluster, WorkerPlugin

import pipeline.sweep as sweep_module
from pipeline.plan import plan_sweep
from pipeline.sweep import local_cluster, run_sweep
from tests.distill_fixtures import shared_work
from tests.dvc_fixtures import RAN, make_repo, real_data_params, repro, run

REPO = Path(__file__).resolve().parents[1]


def _inproc(cli, argv) -> tuple[int, str, str]:
    """`rise-pipeline ARGV` in this process through the shared harness: (exit code, stdout, stderr)."""
    r = cli(*argv, in_process=True)
    return r.code, r.out, r.err

def _params(work, **sweep) -> dict:
    # the student starts from local weights given relative to the params file (as the demo's), which the
    # plan makes absolute and pins by their SHA-256 -- commands here run from the repository, not from there
    return {"data": {"work": str(work)},
            "distill": {"student": "test_resnet", "pretrained": True, "checkpoint": "weights/backbone.pth",
                        "epochs": 2, "image_size": 32, "batch_size": 8, "workers": 0, "device": "cpu", "lr": 0.01},
            "sweep": {"domains": ["cartoon", "photo"], "methods": ["erm", "rise"], "seeds": [0], "grid": [{}],
                      **sweep},
            "report": {"teacher_row": False}}


def _backbone() -> bytes:
    """A timm state_dict of the tiny student, the same bytes every time (seeded)."""
    import io

    import timm
    import torch

    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(timm.create_model("test_resnet", num_classes=0).state_dict(), buf)
    return buf.getvalue()


def _project(folder: Path, params: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "weights" / "backbone.pth"
    if not weights.exists():
        weights.parent.mkdir()
        weights.write_bytes(_backbone())
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _members(params: Path) -> set[str]:
    """`<group>/<member>` of every distinct student the plan of `params` trains."""
    return set(plan_sweep(params).expected_runs())


def _results(folder: Path) -> dict[str, tuple[str, list[list[str]]]]:
    """Per member `<group>/<member>`: metrics.json's text and epochs.csv's rows."""
    runs = folder / "data" / "runs"
    return {f"{p.parent.parent.name}/{p.parent.name}": (p.read_text(),
                                                        list(csv.reader((p.parent / "epochs.csv").open())))
            for p in runs.glob("*/*/metrics.json")}


def _assert_same(results: dict, reference: dict, root: Path, reference_root: Path) -> None:
    """metrics.json identical but for the project folder (the plan records the weights' absolute path);
    epochs.csv equal up to float summation order (torch's CPU thread count may differ between a worker and
    this process)."""
    assert set(results) == set(reference) and len(results) == 4
    for name, (metrics, rows) in results.items():
        assert metrics.replace(str(root), "P") == reference[name][0].replace(str(reference_root), "P"), name
        ref_rows = reference[name][1]
        assert rows[0] == ref_rows[0] and len(rows) == len(ref_rows), name
        for row, ref in zip(rows[1:], ref_rows[1:], strict=True):
            assert [float(v) for v in row] == pytest.approx([float(v) for v in ref], rel=1e-5, abs=1e-6), name


def _lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


@pytest.fixture(scope="module")
def work():
    return shared_work(2)


@pytest.fixture(scope="module")
def reference(work, tmp_path_factory, cli):
    """(project folder, `_results`, results.md): the sweep trained in this process (the library call `sweep
    run` makes without a cluster), with one torch thread like a dask worker's, then dvc.yaml's report stage.
    The report is made here, not left to a test, so every test that compares with it runs on its own."""
    import torch

    folder = tmp_path_factory.mktemp("in_process")
    params = _project(folder, _params(work))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        outcomes = list(run_sweep(plan_sweep(params)))
    finally:
        torch.set_num_threads(threads)
    assert [(o.key, o.count("done"), o.where, o.error) for o in outcomes] == \
        [("cartoon-0", 2, "in-process", None), ("photo-0", 2, "in-process", None)]
    r = cli("report", "--params", params, "--sweep-only", in_process=True)
    assert r.code == 0, r.err
    return folder, _results(folder), (folder / "data/report/results.md").read_text()


def test_in_process_rerun_skips_complete_members_and_reports(reference, capsys, cli):
    folder, results, report = reference
    for name in ("results.md", "metrics.json"):
        (folder / "data/report" / name).unlink()  # written again by the rerun, not left from the fixture
    assert set(results) == _members(folder / "params.yaml") and len(results) == 4  # 2 groups x (erm, rise)
    code, out, _ = _inproc(cli, ["sweep", "run", "--params", str(folder / "params.yaml")])
    assert code == 0, out
    assert _lines(out, "cartoon-0: ") == [_lines(out, "cartoon-0: ")[0]]
    assert "cartoon-0: 0 done, 2 skipped in " in out and out.count(" s in-process\n") == 2
    table = out[out.index("group "):].splitlines()
    assert table[0].split() == ["group", "done", "skipped", "failed", "seconds", "where"]
    assert table[1].split()[:4] == ["cartoon-0", "0", "2", "0"] and table[1].endswith("in-process")
    assert "| erm |" in out and "| rise |" in out  # the report's table
    assert out.rstrip().splitlines()[-1] == "sweep: 0 done, 4 skipped, 0 failed"
    assert (folder / "data/report/results.md").read_text() == report  # the report stage's own bytes
    assert _results(folder) == results  # nothing retrained


@pytest.mark.slow
@pytest.mark.parametrize("command", ["sweep run --workers 2", "distill --sweep, sweep.jobs 2"])
def test_local_cluster_of_worker_processes_gives_the_in_process_results(reference, work, tmp_path, capsys, cli,
                                                                       command):
    """`sweep run --workers 2`, and dvc.yaml's distill stage (`distill --sweep`, no target domain) with
    sweep.jobs 2: both groups on a local cluster of two worker processes, the in-process results."""
    params = _project(tmp_path, _params(work, jobs=2 if command.startswith("distill") else 1))
    argv = ["sweep", "run", "--params", str(params), "--workers", "2"] if command.startswith("sweep") else \
        ["distill", "--params", str(params), "--sweep", "--restart-stale"]
    code, out, err = _inproc(cli, argv)
    assert code == 0, out + err
    for key in ("cartoon-0", "photo-0"):
        [line] = _lines(out, f"{key}: ")
        assert line.startswith(f"{key}: 2 done, 0 skipped in ") and " s on tcp://127.0.0.1:" in line
    assert "still alive" not in out + err  # closing the cluster says nothing
    _assert_same(_results(tmp_path), reference[1], tmp_path, reference[0])
    if command.startswith("distill"):
        assert out.splitlines()[0] == "distill: 2 group(s), 4 student(s), 2 at a time (local worker processes)"
        assert not (tmp_path / "data/report").exists()  # dvc.yaml's report stage writes the report
        return
    assert out.rstrip().splitlines()[-1] == "sweep: 4 done, 0 skipped, 0 failed"
    report = (tmp_path / "data/report/results.md").read_text()
    assert report.replace(str(tmp_path), "P") == reference[2].replace(str(reference[0]), "P")


def test_distill_sweep_without_a_target_domain_runs_every_group(reference, cli):
    """dvc.yaml's distill stage: every group of the plan (here sweep.jobs 1: in this process, one after
    another); complete students are skipped, so a rerun trains nothing."""
    folder, results, _ = reference
    code, out, _ = _inproc(cli, ["distill", "--params", str(folder / "params.yaml"), "--sweep", "--restart-stale"])
    assert code == 0, out
    assert out.splitlines()[0] == "distill: 2 group(s), 4 student(s), 1 at a time"
    assert [line.split(" in ")[0] for line in out.splitlines()[1:3]] == \
        ["cartoon-0: 0 done, 2 skipped", "photo-0: 0 done, 2 skipped"]
    assert out.count(" s in-process\n") == 2
    assert _results(folder) == results  # nothing retrained
    code, out, err = _inproc(cli, ["distill", "--params", str(folder / "params.yaml"), "--sweep", "--out", "x"])
    assert code != 0 and "give --target-domain" in out + err


class BlockOnce(WorkerPlugin):
    """On every worker: log each `Trainer.begin_epoch` (pid, domain, method, epochs done) and, the first time
    any member is about to start its second epoch, write this process's pid to `blocked` and wait to be
    killed. Only one worker ever blocks (`claimed` is created with O_EXCL): the rerun of its group goes on."""

    def __init__(self, folder: str):
        self.folder = folder

    def setup(self, worker):
        import pipeline.distill.trainer as trainer_module

        real = trainer_module.Trainer.begin_epoch
        if getattr(real, "blocking", False):
            return
        folder = Path(self.folder)

        def begin_epoch(trainer):
            with open(folder / "calls", "a") as f:
                cfg = trainer.cfg
                f.write(f"{os.getpid()} {cfg.target_domain} {cfg.method} {len(trainer.history)}\n")
            if len(trainer.history) == 1:
                try:
                    os.close(os.open(folder / "claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                    first = True
                except FileExistsError:
                    first = False
                if first:
                    (folder / "blocked.tmp").write_text(f"{os.getpid()} {trainer.cfg.target_domain}")
                    os.replace(folder / "blocked.tmp", folder / "blocked")
                    time.sleep(60)
                    raise RuntimeError("the test never killed this worker")
            return real(trainer)

        begin_epoch.blocking = True
        trainer_module.Trainer.begin_epoch = begin_epoch


def _kill_when_blocked(folder: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (folder / "blocked").exists():
            pid = int((folder / "blocked").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
            (folder / "killed").write_text(str(pid))
            return
        time.sleep(0.05)


@pytest.mark.slow
def test_a_group_whose_worker_is_killed_is_rerun_and_resumes(reference, work, tmp_path, capsys, cli):
    params = _project(tmp_path / "project", _params(work))
    flags = tmp_path / "flags"
    flags.mkdir()
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                      silence_logs=logging.CRITICAL) as cluster, Client(cluster) as client:
        client.register_plugin(BlockOnce(str(flags)))
        killer = threading.Thread(target=_kill_when_blocked, args=(flags,), daemon=True)
        killer.start()
        code, out, err = _inproc(cli, ["sweep", "run", "--params", str(params), "--scheduler",
                                  cluster.scheduler_address])
        killer.join(timeout=5)
    assert (flags / "killed").exists(), out + err
    assert code == 0, out + err
    assert out.rstrip().splitlines()[-1] == "sweep: 4 done, 0 skipped, 0 failed"
    _assert_same(_results(tmp_path / "project"), reference[1], tmp_path / "project", reference[0])
    # The killed group was rerun in another process and resumed from its epoch-1 checkpoints.
    killed_pid, domain = (flags / "blocked").read_text().split()
    calls = [line.split() for line in (flags / "calls").read_text().splitlines()]
    rerun = [int(epochs) for pid, dom, _, epochs in calls if dom == domain and pid != killed_pid]
    assert rerun and set(rerun) == {1}, calls
    [line] = _lines(out, f"{domain}-0: ")
    assert line.startswith(f"{domain}-0: 2 done (2 resumed), 0 skipped in "), line


def _dry_states(out: str) -> dict[str, str]:
    states, group = {}, None
    for line in out.splitlines():
        if line.startswith("  "):
            name, state = line.split("  [")[0].split(None, 1)
            states[f"{group}/{name}"] = state.strip()
        elif line.endswith(")") and "(" in line and not line.startswith("dry run"):
            group = line.split()[0]
    return states


def test_dry_run_says_what_the_real_run_will_do(reference, work, tmp_path, capsys, cli):
    folder = tmp_path / "p"
    shutil.copytree(reference[0] / "data/runs", folder / "data/runs")
    params = _project(folder, _params(work, grid=[{}, {"w_dist": 2.0}]))
    [erm, rise, rise2] = [m.name for m in plan_sweep(params).group("photo", 0).members]
    (folder / "data/runs/photo-0" / rise / "metrics.json").unlink()  # killed in its last epoch: has last.pt
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    code, out, _ = _inproc(cli, ["sweep", "run", "--params", str(params), "--dry-run"])
    assert code == 0, out
    # ERM ignores w_dist: its two grid entries are the one ERM student already trained
    assert _dry_states(out) == {f"cartoon-0/{erm}": "complete", f"cartoon-0/{rise}": "complete",
                                f"photo-0/{erm}": "complete", f"photo-0/{rise}": "partial (has last.pt)",
                                f"cartoon-0/{rise2}": "to run", f"photo-0/{rise2}": "to run"}
    assert "[erm, grid entries 0-1]" in out and "[rise, grid entry 1]" in out
    assert out.rstrip().splitlines()[-1] == \
        "dry run: 2 group(s), 6 student(s): 3 complete (skipped), 1 partial (resume), 2 to run"
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before  # nothing trained or written
    # Other weights at the same path: the pinned digest differs, so the complete runs and the checkpoints are
    # stale, as the real run would find.
    weights = folder / "weights/backbone.pth"
    original = weights.read_bytes()
    weights.write_bytes(original + b"\0")
    code, out, _ = _inproc(cli, ["sweep", "run", "--params", str(params), "--dry-run"])
    states = _dry_states(out)
    assert len(states) == 6 and all(state.startswith("to run") for state in states.values())
    assert states[f"photo-0/{rise}"] == states[f"cartoon-0/{erm}"] == "to run (checkpoints of another config: discarded)"
    weights.write_bytes(original)
    # The real run does what the first dry run said: 3 students trained (one resumed), 3 skipped.
    code, out, _ = _inproc(cli, ["sweep", "run", "--params", str(params)])
    assert code == 0, out
    assert "photo-0: 2 done (1 resumed), 1 skipped in " in out
    assert out.rstrip().splitlines()[-1] == "sweep: 3 done, 3 skipped, 0 failed"


def test_old_position_named_folders_are_refused_with_one_line(reference, work, tmp_path, capsys, cli):
    folder = tmp_path / "p"
    shutil.copytree(reference[0] / "data/runs", folder / "data/runs")
    params = _project(folder, _params(work))
    erm = next(iter(plan_sweep(params).group("photo", 0).members)).name
    shutil.copytree(folder / "data/runs/photo-0" / erm, folder / "data/runs/photo-0/erm-cfg0")
    code, out, err = _inproc(cli, ["sweep", "run", "--params", str(params)])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "holds run folders named by grid position (erm-cfg0)" in lines[0]
    assert "move them out of" in lines[0] and "or delete them, then rerun" in lines[0]
    code, out, _ = _inproc(cli, ["sweep", "run", "--params", str(params), "--dry-run"])
    assert code == 0 and "  refused: holds run folders named by grid position (erm-cfg0)" in out


def test_one_failed_group_never_hides_the_others(reference, work, tmp_path, capsys, cli):
    folder = tmp_path / "p"
    shutil.copytree(reference[0] / "data/runs", folder / "data/runs")
    params = _project(folder, _params(work, domains=["cartoon", "nowhere", "photo"]))
    code, out, _ = _inproc(cli, ["sweep", "run", "--params", str(params)])
    assert code == 1
    [line] = _lines(out, "nowhere-0: ")
    assert line.startswith("nowhere-0: FAILED after ") and "2 failed" in line and "'nowhere'" in line
    assert "| erm |" in out  # the report of the groups that are complete
    assert out.rstrip().splitlines()[-1] == "sweep: 0 done, 4 skipped, 2 failed"


def test_a_store_the_worker_cannot_read_fails_each_group_with_one_line(work, tmp_path, capsys, cli):
    missing = tmp_path / "elsewhere" / "work"
    params = _project(tmp_path / "p", _params(missing))
    code, out, err = _inproc(cli, ["sweep", "run", "--params", str(params)])
    assert code == 1 and "Traceback" not in out + err
    for key in ("cartoon-0", "photo-0"):
        [line] = _lines(out, f"{key}: ")
        assert line.endswith(f"cannot read the store {missing / 'embeddings.h5'} on in-process "
                             "(sweep run needs WORK and the runs folder on a file system every worker sees)")
    assert "report: no complete run in this sweep" in out
    assert out.rstrip().splitlines()[-1] == "sweep: 0 done, 0 skipped, 4 failed"


@pytest.mark.parametrize("args, message", [
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"], "give one of them"),
    (["--scheduler", "tcp://127.0.0.1:1"], "cannot reach dask scheduler tcp://127.0.0.1:1: "),
    (["--scheduler", "no-port"], "cannot reach dask scheduler no-port: "),
    (["--workers", "0"], "--workers must be >= 1"),
])
def test_cluster_options_errors_are_one_line(args, message, work, tmp_path, capsys, cli, monkeypatch):
    monkeypatch.setattr(sweep_module, "CONNECT_TIMEOUT", "1s")
    params = _project(tmp_path, _params(work))
    code, out, err = _inproc(cli, ["sweep", "run", "--params", str(params), *args])
    assert code == 2 and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not (tmp_path / "data/runs").exists() or not any((tmp_path / "data/runs").iterdir())


def _flaky_once(tries: Path):
    """A stand-in for `run_group_task` that trains nothing: each group's first attempt raises (as a bug or
    a lost file would), any later one reports its members done. Attempts are counted in files, since dask
    may run a copy of this function."""

    def task(group, where=None, restart_stale=True):
        mark = tries / group.key
        if not mark.exists():
            mark.write_text("1")
            raise RuntimeError(f"attempt 1 of {group.key} failed")
        return sweep_module.Outcome(group.key, {m.name: "done" for m in group.members}, 0.0, "test-worker")

    return task


@pytest.mark.parametrize("retries, last", [("1", "sweep: 4 done, 0 skipped, 0 failed"),
                                           ("0", "sweep: 0 done, 0 skipped, 4 failed")])
def test_retries_reruns_a_group_whose_task_raised(retries, last, work, tmp_path, capsys, cli, monkeypatch):
    tries = tmp_path / "tries"
    tries.mkdir()
    monkeypatch.setattr(sweep_module, "run_group_task", _flaky_once(tries))
    params = _project(tmp_path / "p", _params(work))
    with LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address=None,
                      silence_logs=logging.CRITICAL) as cluster:
        code, out, err = _inproc(cli, ["sweep", "run", "--params", str(params), "--scheduler",
                                       cluster.scheduler_address, "--retries", retries])
    assert sorted(p.name for p in tries.iterdir()) == ["cartoon-0", "photo-0"], out + err
    assert out.rstrip().splitlines()[-1] == last, out + err
    if retries == "0":
        assert code == 1
        for key in ("cartoon-0", "photo-0"):
            [line] = _lines(out, f"{key}: ")
            assert line.startswith(f"{key}: FAILED after ") and line.endswith(f"RuntimeError: attempt 1 of {key} failed")


def test_negative_retries_is_a_one_line_error(work, tmp_path, capsys, cli):
    params = _project(tmp_path, _params(work))
    code, out, err = _inproc(cli, ["sweep", "run", "--params", str(params), "--retries", "-1"])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and lines == ["error: --retries must be >= 0, got -1"], err


def test_loader_processes_on_a_daemon_worker_fail_the_group_with_the_way_out(work, tmp_path, capsys, cli,
                                                                            monkeypatch):
    """A daemon process cannot start DataLoader processes: the group fails with one line saying how to start
    the workers (dask's default workers are daemons; `--workers` starts non-daemon ones)."""
    monkeypatch.setattr(sweep_module.multiprocessing, "current_process", lambda: type("P", (), {"daemon": True}))
    loaders = _params(work)
    loaders["distill"]["workers"] = 1
    params = _project(tmp_path, loaders)
    code, out, err = _inproc(cli, ["sweep", "run", "--params", str(params)])
    assert code == 1 and "Traceback" not in out + err
    for key in ("cartoon-0", "photo-0"):
        [line] = _lines(out, f"{key}: ")
        assert line.endswith("distill.workers=1 needs DataLoader processes, but the dask worker in-process is a "
                             "daemon process: start workers with DASK_DISTRIBUTED__WORKER__DAEMON=False (or set "
                             "distill.workers: 0)"), line
    assert not list((tmp_path / "data/runs").glob("*/*/metrics.json"))  # refused before training


def test_gpu_workers_see_one_device_each_and_declare_it(tmp_path):
    """With GPUs the local cluster gives worker i its own CUDA_VISIBLE_DEVICES and the resource GPU=1 (checked
    here with made-up device ids: no GPU is touched)."""
    with local_cluster(3, ["4", "6"]) as cluster, Client(cluster) as client:
        seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        assert sorted(seen.values()) == ["4", "4", "6"]
        info = client.scheduler_info()["workers"].values()
        assert [w["resources"] for w in info] == [{"GPU": 1}] * 3
        assert sweep_module._gpu_restricted(client)
        assert client.submit(lambda: 1, resources={"GPU": 1}).result() == 1


def test_sweep_grid_and_the_short_form_are_the_same_command(capsys, cli):
    results = [_inproc(cli, ["sweep", *args]) for args in
               (["grid", "pacs", "--dry-run"], ["pacs", "--dry-run"], ["--dry-run", "pacs"])]
    assert results[0][0] == 0 and results[0][1].startswith("dvc exp run -n sweep-pacs -S 'sweep.grid=[")
    assert results[0][:2] == results[1][:2] == results[2][:2]
    code, _, err = _inproc(cli, ["sweep", "nosuch"])
    assert code == 2 and err.count("\n") == 1


# --- DVC: sweep run + dvc commit leave nothing to repro -----------------------------------------------------


def _dvc_params() -> dict:
    return real_data_params(views=1, templates=["a photo of a {}."], batch_size=8, device="cpu",
                            sweep={"domains": ["photo", "sketch"], "methods": ["erm"], "seeds": [0], "grid": [{}]})


def _readme_recipe() -> list[list[str]]:
    """The commands of the "Sweeps on a cluster" block of docs/sweeps.md (the page the README links for it), up
    to the local-workers run (the next line needs a running dask cluster), each `a && b` split in two."""
    import shlex

    text = (REPO / "docs" / "sweeps.md").read_text()
    block = text[text.index("## Sweeps on a cluster"):]
    block = block[block.index("```bash") + 7:block.index("```", block.index("```bash") + 7)]
    commands = []
    for line in block.strip().splitlines():
        words = shlex.split(line, comments=True)
        if "--scheduler" in words:
            break
        while "&&" in words:
            i = words.index("&&")
            commands.append(words[:i])
            words = words[i + 1:]
        commands.append(words)
    return commands


@pytest.mark.slow
def test_the_readme_cluster_recipe_gives_the_report_stage_byte_for_byte(tmp_path):
    from pipeline.demo.world import WorldConfig, write_world

    params = _dvc_params()
    params["extra_teachers"] = [{"name": "rn", "model": "RISE-micro-ViT", "pretrained": "random"}]
    repo = make_repo(tmp_path / "repo", params)
    write_world(WorldConfig(per_cell=4, image_size=32, classes=["car", "fish"],
                            domains=["cartoon", "photo", "sketch"]), repo / "data" / "images")
    recipe = _readme_recipe()
    assert [c[:2] for c in recipe] == [["dvc", "repro"], ["rise-pipeline", "sweep"], ["rise-pipeline", "sweep"],
                                       ["dvc", "commit"]], recipe
    outs = [run(repo, cmd) for cmd in recipe]
    assert {"world", "teacher", "student-pretrain", "shard", "embed", "embed-teacher@0"} <= \
        set(RAN.findall(outs[0].stdout + outs[0].stderr))
    assert outs[1].stdout.rstrip().splitlines()[-1] == \
        "dry run: 2 group(s), 4 student(s): 0 complete (skipped), 0 partial (resume), 4 to run"
    assert outs[2].stdout.rstrip().splitlines()[-1] == "sweep: 4 done, 0 skipped, 0 failed"  # erm + rise-mix
    runs = repo / "data/runs"
    trained = {str(p.parent.relative_to(runs)) for p in runs.glob("*/*/metrics.json")}
    assert trained == _members(repo / "params.yaml") and sum("/rise-mix-" in t for t in trained) == 2
    report = {p.name: p.read_bytes() for p in (repo / "data/report").iterdir()}
    assert set(report) == {"results.md", "results.csv", "results.png", "metrics.json", "epochs.csv"}
    metrics = json.loads(report["metrics.json"])
    assert "rise-mix" in metrics and metrics["learning_check"]["runs"] == 4  # extra teacher, learning check
    status = run(repo, ["dvc", "status"]).stdout
    assert "up to date" in status and "changed" not in status, status
    # the report stage, forced, writes exactly what sweep run wrote
    assert RAN.findall(run(repo, ["dvc", "repro", "-f", "-s", "report"]).stdout) == ["report"]
    assert {p.name: p.read_bytes() for p in (repo / "data/report").iterdir()} == report
    status = run(repo, ["dvc", "status"]).stdout
    assert "up to date" in status and "changed" not in status, status
    # a rerun of the sweep skips every student and still writes the same report
    again = run(repo, ["rise-pipeline", "sweep", "run"]).stdout
    assert again.rstrip().splitlines()[-1] == "sweep: 0 done, 4 skipped, 0 failed"
    assert {p.name: p.read_bytes() for p in (repo / "data/report").iterdir()} == report
    ran, _ = repro(repo)
    assert ran == set()


def _worker_settings(_):
    import os

    import dask

    return (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS"),
            dask.config.get("distributed.worker.profile.enabled"),
            dask.config.get("distributed.admin.system-monitor.gil.enabled"))


def test_local_workers_start_without_the_nannys_malloc_trim_and_profilers():
    """dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 by default, which made every torch step in a worker page-
    fault its buffers again (benchmarks/bench_worker_env.py); the sweep's workers must start without it, and
    without the statistical profiler and GIL monitor, with the cores shared out as torch threads."""
    from pipeline.sweep import sweep_client

    # as a cluster with dask's defaults leaves it in the environment of the process that ran it
    os.environ["MALLOC_TRIM_THRESHOLD_"] = "65536"
    try:
        with sweep_client(2, None, 0, gpus=[]) as client:
            settings = client.gather(client.map(_worker_settings, [0, 1], pure=False))
        assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"  # this process's environment is left as it was
    finally:
        os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    assert settings == [(None, threads, False, False)] * 2


@pytest.mark.parametrize("jobs, domains, seeds, expected", [(1, 2, 2, None), (2, 2, 2, 2), (2, 1, 1, None),
                                                             (8, 3, 1, 3)])
def test_sweep_jobs_become_local_workers_capped_by_the_groups(jobs, domains, seeds, expected, work, tmp_path):
    from pipeline.sweep import local_jobs

    params = _project(tmp_path, _params(work, jobs=jobs, domains=["cartoon", "photo", "sketch"][:domains],
                                        seeds=list(range(seeds))))
    plan = plan_sweep(params)
    assert len(plan.groups) == domains * seeds and local_jobs(plan) == expected


@pytest.mark.parametrize("jobs, message", [(0, "sweep.jobs must be an integer >= 1, got 0"),
                                           (-1, "sweep.jobs must be an integer >= 1, got -1"),
                                           (1.5, "sweep.jobs"), (True, "sweep.jobs")])
def test_bad_sweep_jobs_is_a_one_line_error(jobs, message, work, tmp_path, cli):
    params = _project(tmp_path, _params(work, jobs=jobs))
    code, out, err = _inproc(cli, ["distill", "--params", str(params), "--sweep"])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
