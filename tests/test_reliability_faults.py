"""Faults in real searches on a tiny model: a diverging trial, a trial process killed (as by the OOM killer),
and a search killed while its teacher is being fine-tuned."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import GLUE_DIR

from ladasearch.cli.commands import main
from ladasearch.config import DataConfig, TeacherConfig, TrainConfig
from ladasearch.search import SearchConfig, SearchSettings, SearchSpace, run_search

GLUE = GLUE_DIR  # conftest: the shared GLUE folder
pytestmark = [pytest.mark.skipif(not GLUE.is_dir(), reason="shared GLUE data not found"), pytest.mark.ray]

HUGE_LR = 1.0e12
# Fixed ratios (feasible for the tiny model at 5x: embedding ratios [0.18, 0.20]); only the learning rate varies.
NAN_SPACE = f"""
name: nan_lr
ratios:
  embedding_ratio: 0.19
  svd_split: 0.5
train:
  learning_rate: {{choices: [1.0e-4, {HUGE_LR:.1e}]}}
"""


@pytest.fixture(scope="module")
def store_template(tmp_path_factory):
    """An empty MLflow SQLite store with its tables made (once: making them takes seconds)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def uri(store_template, tmp_path):
    """tmp_path/mlflow.db, a copy of the empty store; the searches' --tracking-uri."""
    shutil.copy(store_template, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _runs(uri, search):
    """(parent runs, child runs sorted by start time) of ``search``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ladasearch")
    if exp is None:
        return [], []
    parents = client.search_runs([exp.experiment_id], f"tags.`ladasearch.search` = '{search}'")
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'") \
        if parents else []
    return parents, sorted(children, key=lambda c: c.info.start_time)


def _cli_args(tiny_dir, tmp_path, name, *extra):
    return ["run", "--task", "sst2", "--target", "5x", "--data-dir", str(GLUE), "--model", str(tiny_dir),
            "--max-train", "200", "--max-dev", "64", "--teacher-steps", "5", "--final-budget", "0", "--name", name,
            "--space", "ratios", "--storage", str(tmp_path / "runs"),
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--cache-dir", str(tmp_path / "cache"), *extra]


CLI = [sys.executable, "-m", "ladasearch.cli"]
ENV = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "PYTHONUNBUFFERED": "1"}


def test_diverging_trial_fails_alone(tiny_dir, tmp_path, uri, monkeypatch):
    """A learning rate of 1e12 makes the loss NaN: exactly those trials fail (run FAILED, error tag naming the
    loss), the others finish, the parent finishes and run_search returns normally."""
    monkeypatch.chdir(tmp_path)
    space_file = tmp_path / "nan_lr.yaml"
    space_file.write_text(NAN_SPACE)
    # the sampler seed is search_seed(3, 'sst2', 5.0): RandomSampler then draws 1e-4, 1e12, 1e-4 for the three
    # trials, both values for certain
    cfg = SearchConfig(name="nan", target=5.0, num_samples=3, max_concurrent=2, sampler="random", scheduler="fifo",
                       seed=3, storage=str(tmp_path / "runs"), tracking_uri=uri)
    settings = SearchSettings(DataConfig("sst2", str(GLUE), max_train=200, max_dev=64), str(tiny_dir), cfg,
                              SearchSpace.load(str(space_file)), TeacherConfig(steps=5),
                              TrainConfig(rounds=2, steps_per_round=3, final_steps=2), cache_dir=str(tmp_path / "cache"))
    outcome = run_search(settings, log=lambda s: None)

    parents, children = _runs(uri, "nan")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 3
    huge = {c.info.run_id for c in children if float(c.data.params["config.learning_rate"]) == HUGE_LR}
    normal = {c.info.run_id for c in children if float(c.data.params["config.learning_rate"]) == 1.0e-4}
    assert len(huge) == 1 and len(normal) == 2, [c.data.params for c in children]
    for child in children:
        tags = child.data.tags
        if child.info.run_id in huge:
            assert child.info.status == "FAILED", (child.info.status, tags)
            assert tags["ladasearch.outcome"] == "failed"
            assert "loss became nan" in tags["ladasearch.error"], tags["ladasearch.error"]
            assert "TrialFailed" in tags["ladasearch.error"]
        else:
            assert child.info.status == "FINISHED", (child.info.status, tags.get("ladasearch.error"))
            assert tags["ladasearch.outcome"] == "completed"
            assert 0.0 <= child.data.metrics["val_score"] <= 1.0
            assert child.data.params["train.learning_rate"] == "0.0001"
    assert parents[0].data.metrics["trials_failed"] == len(huge)
    assert parents[0].data.metrics["trials_completed"] == len(normal)

    statuses = sorted(t.status for t in outcome.trials)
    assert statuses == sorted(["failed"] * len(huge) + ["completed"] * len(normal))
    assert all(t.config["learning_rate"] == HUGE_LR for t in outcome.trials if t.status == "failed")
    assert outcome.best is not None and outcome.best.config["learning_rate"] == 1.0e-4
    assert (outcome.best_model / "ladasearch.json").is_file()


def _trial_processes(pid: int) -> list:
    """Descendants of ``pid`` that are Ray workers running a Tune trial (process title ray::ImplicitFunc...)."""
    import psutil

    found = []
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return found
    for proc in children:
        try:
            text = " ".join(proc.cmdline()) + " " + proc.name()
        except psutil.Error:
            continue
        if "ImplicitFunc" in text or "run_trial" in text:
            found.append((proc, text.strip()))
    return found


@contextlib.contextmanager
def _search_process(tiny_dir, tmp_path, name: str, trials: str):
    """``ladasearch run`` in its own session, FIFO, one trial at a time with 60 steps each; yields (process, log
    path); whatever is still running at the end is killed with its Ray."""
    log_path = tmp_path / "search.log"
    with open(log_path, "w") as log:
        search = subprocess.Popen(
            CLI + _cli_args(tiny_dir, tmp_path, name, "--trials", trials, "--concurrency", "1", "--scheduler", "fifo",
                            "--rounds", "2", "--steps-per-round", "30", "--final-steps", "2"),
            cwd=tmp_path, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield search, log_path
    finally:
        if search.poll() is None:
            os.killpg(search.pid, signal.SIGKILL)
            search.wait()


def test_killed_trial_process_fails_that_trial_only(tiny_dir, tmp_path, uri):
    """SIGKILL the Ray worker of the first trial while it trains (as the OOM killer would): that trial's MLflow run
    is FAILED, the search runs the remaining trials and exits 0."""
    killed = None
    with _search_process(tiny_dir, tmp_path, "oom", "3") as (search, log_path):
        deadline = time.time() + 240
        while time.time() < deadline and search.poll() is None and killed is None:
            time.sleep(0.3)
            training = [(p, t) for p, t in _trial_processes(search.pid) if "ImplicitFunc.train" in t]
            if training:
                time.sleep(0.5)  # let it get into its training steps
                proc, text = training[0]
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                killed = text
        if killed is None:  # say what there was instead
            seen = "; ".join(f"{p.pid} {t[:80]}" for p, t in _trial_processes(search.pid)) or "none"
            pytest.fail(f"no Ray trial worker in training found (trial workers: {seen}); search exit code "
                        f"{search.poll()}; log:\n{log_path.read_text()[-3000:]}")
        rc = search.wait(timeout=300)
    output = log_path.read_text()
    assert rc == 0, output[-3000:]
    parents, children = _runs(uri, "oom")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", output[-2000:]
    assert len(children) == 3
    first, *rest = children  # concurrency 1: the first trial is the one that was killed
    assert first.info.status == "FAILED", (first.info.status, first.data.tags)
    assert first.data.tags["ladasearch.outcome"] == "failed"
    assert "died" in first.data.tags["ladasearch.error"], first.data.tags["ladasearch.error"]
    for child in rest:
        assert child.info.status == "FINISHED", (child.data.tags, output[-2000:])
        assert child.data.tags["ladasearch.outcome"] == "completed"
        assert 0.0 <= child.data.metrics["val_score"] <= 1.0
    assert parents[0].data.metrics["trials_failed"] == 1 and parents[0].data.metrics["trials_completed"] == 2
    assert "search oom: 3 trials: 2 completed, 0 stopped at target, 0 stopped before target, 1 failed" in output


def test_search_killed_during_teacher_fine_tuning(tiny_dir, tmp_path, uri, monkeypatch):
    """Killed before any trial (the teacher was being fine-tuned): nothing of the search was recorded yet, so
    `resume NAME` says there is no such search (exit 2, one line), and a fresh `run` with that name works."""
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        first = subprocess.Popen(
            CLI + _cli_args(tiny_dir, tmp_path, "early", "--trials", "1")
            + ["--teacher-steps", "100000"],  # later options win: a teacher that would take hours
            cwd=tmp_path, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and first.poll() is None and "teacher: fine-tuning" not in log_path.read_text():
            time.sleep(0.3)
        assert first.poll() is None, log_path.read_text()[-2000:]
        assert "teacher: fine-tuning" in log_path.read_text()
        time.sleep(2)  # inside the fine-tuning loop
        assert first.poll() is None
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert "search early:" not in log_path.read_text()  # it never got to start the search
    assert not (tmp_path / "runs" / "early.ladasearch.json").exists()
    assert _runs(uri, "early") == ([], [])  # no MLflow parent run either
    teachers = tmp_path / "cache" / "teachers"
    assert not teachers.exists() or not any(teachers.iterdir())  # no half-written teacher in the cache

    # the rest in-process (CliRunner): the same commands without another interpreter start-up
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for args in (["resume", "early"], ["run", "--resume", "--name", "early", "--task", "sst2", "--target", "5x"]):
        resumed = CliRunner().invoke(main, args + ["--storage", str(tmp_path / "runs")])
        assert resumed.exit_code == 2, (resumed.output, resumed.exception)
        assert resumed.stderr.strip() == f"error: no search named 'early' in {tmp_path / 'runs'}"
        assert "Traceback" not in resumed.output

    fresh = CliRunner().invoke(main, _cli_args(tiny_dir, tmp_path, "early", "--trials", "1", "--rounds", "1",
                                               "--steps-per-round", "2", "--final-steps", "1"))
    assert fresh.exit_code == 0, (fresh.output[-3000:], fresh.exception)
    assert "search early: 1 trials: 1 completed, 0 stopped at target, 0 stopped before target, 0 failed" in fresh.stdout
    parents, children = _runs(uri, "early")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    spec = json.loads((tmp_path / "runs" / "early.ladasearch.json").read_text())
    assert spec["parent_run_id"] == parents[0].info.run_id


# Ray 2.60's error file of a trial whose worker the memory monitor killed at start-up (object-store stats cut)
RAY_OOM_TEXT = """Failure # 1 (occurred at 2026-12-07_07-03-47)
1 worker(s) were killed due to the node running low on memory. Memory on the node (IP: 192.0.2.2, ID: 36509e03) \
was 3.08GB used / 23.54GB limit (0.130781)
OOM kill reason: Memory usage 3305652224B exceeded threshold of 1263809792B (5.0% of 25276194816B limit)
Ray killed 1 worker(s) based on the killing policy
Selected to kill: (Task: job ID=01000000, task name=ImplicitFunc.{task}, required resources={{CPU: 1}}, pid=20055)
Refer to the documentation on how to address the out of memory issue: https://docs.ray.io/en/latest/ray-observability/\
user-guides/debug-apps/debug-memory.html. Consider provisioning more memory on this node or reducing task parallelism.
"""


@pytest.mark.parametrize(("task", "when"), [("__init__", "while it started"), ("train", "while it trained"),
                                            ("save", "")])
def test_memory_kill_is_one_line_with_the_numbers(task, when):
    from ladasearch.search.callbacks import memory_kill

    line = memory_kill(RAY_OOM_TEXT.format(task=task))
    assert "\n" not in line and "docs.ray.io" not in line
    assert line.startswith(f"Ray's memory monitor killed the trial's worker{' ' + when if when else ''} (")
    assert "node memory 3.08GB used of 23.54GB, above the kill threshold of 5.0%" in line
    assert "--concurrency" in line and "RAY_memory_usage_threshold" in line


def test_trials_killed_for_memory_fail_and_the_search_goes_on(tiny_dir, tmp_path, uri):
    """Ray's memory monitor set to kill at 1% of the machine's memory kills every trial's worker as it starts
    (the case that stopped a search in `search_vs_fixed`): each trial is a failed trial with one line saying
    so, and the search ends normally."""
    env = {**ENV, "RAY_memory_usage_threshold": "0.01", "RAY_memory_monitor_refresh_ms": "100"}
    done = subprocess.run(CLI + _cli_args(tiny_dir, tmp_path, "oomstart", "--trials", "2", "--concurrency", "2",
                                          "--rounds", "1", "--steps-per-round", "5", "--final-steps", "1"),
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    parents, children = _runs(uri, "oomstart")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 2
    for child in children:
        assert child.info.status == "FAILED"
        assert child.data.tags["ladasearch.error"].startswith("Ray's memory monitor killed the trial's worker")
    failed = [line for line in output.splitlines() if "failed: Ray's memory monitor killed" in line]
    assert len(failed) == 2 and "docs.ray.io" not in output, output[-3000:]
    assert "0 completed, 0 stopped at target, 0 stopped before target, 2 failed" in output


def test_dead_raylet_fails_the_search_in_one_line_and_resume_continues(tiny_dir, tmp_path, uri):
    """SIGKILL the private Ray's raylet while a trial trains: Ray's core would end the driver with exit code 1,
    40 lines of the raylet's log and the parent run RUNNING.  Instead: one line, exit 1, the parent and the
    running trial FAILED with the reason, and `resume` finishes the search."""
    import psutil

    with _search_process(tiny_dir, tmp_path, "raylet", "2") as (search, log_path):
        deadline = time.time() + 240
        while time.time() < deadline and search.poll() is None:
            if any("ImplicitFunc.train" in t for _, t in _trial_processes(search.pid)):
                break
            time.sleep(0.3)
        raylets = [p for p in psutil.Process(search.pid).children(recursive=True) if p.name() == "raylet"]
        assert len(raylets) == 1, log_path.read_text()[-3000:]
        raylets[0].send_signal(signal.SIGKILL)
        rc = search.wait(timeout=120)
    output = log_path.read_text()
    assert rc == 1, output[-3000:]
    assert "Raylet is terminated" not in output and "Traceback" not in output and "state-dump" not in output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and output.rstrip().endswith(errors[0]), output[-3000:]
    assert f"raylet (pid {raylets[0].pid}) died" in errors[0] and "`ladasearch resume raylet`" in errors[0]
    parents, children = _runs(uri, "raylet")
    assert parents[0].info.status == "FAILED"
    assert "raylet" in parents[0].data.tags["ladasearch.error"]
    assert children and all(c.info.status != "RUNNING" for c in children)
    assert any(c.info.status == "FAILED" and "raylet" in c.data.tags.get("ladasearch.error", "") for c in children)

    resumed = subprocess.run(CLI + ["resume", "raylet", "--storage", str(tmp_path / "runs")], cwd=tmp_path, env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    parents, children = _runs(uri, "raylet")
    assert parents[0].info.status == "FINISHED" and len(children) == 2
    assert all(c.data.tags["ladasearch.outcome"] == "completed" for c in children)
