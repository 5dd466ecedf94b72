"""Real searches on a tiny model: MLflow records, resume after a kill, a two-node Ray cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ladasearch.compress import budget, count_parameters, Ratios
from ladasearch.config import DataConfig, TeacherConfig, TrainConfig
from ladasearch.errors import LadaError
from ladasearch.search import SearchConfig, _sampler, run_search, startup_trials
from ladasearch.space import SearchSpace

GLUE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "glue"
pytestmark = pytest.mark.skipif(not GLUE.is_dir(), reason="shared GLUE data not found")


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _runs(uri, search):
    client = _client(uri)
    exp = client.get_experiment_by_name("ladasearch")
    parents = client.search_runs([exp.experiment_id], f"tags.`ladasearch.search` = '{search}'")
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'") \
        if parents else []
    return parents, children


def _args(tiny_dir, tmp_path, name, trials, extra=()):
    return ["run", "--task", "sst2", "--target", "5x", "--data-dir", str(GLUE), "--model", str(tiny_dir),
            "--max-train", "200", "--max-dev", "64", "--teacher-steps", "5", "--rounds", "2",
            "--steps-per-round", "3", "--final-steps", "2", "--trials", str(trials), "--name", name,
            "--space", "ratios", "--storage", str(tmp_path / "runs"),
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--cache-dir", str(tmp_path / "cache"), *extra]


@pytest.mark.parametrize("trials, startup", [(1, 2), (3, 2), (8, 2), (16, 5), (30, 10), (200, 10)])
def test_model_based_samplers_start_after_a_third_of_the_budget(trials, startup):
    assert startup_trials(trials) == startup
    assert _sampler("tpe", 0, False, trials)._n_startup_trials == startup
    assert _sampler("gp", 0, False, trials)._n_startup_trials == startup
    assert _sampler("tpe", 0, False, trials, startup=7)._n_startup_trials == 7


@pytest.mark.parametrize("value", [0, -1, 2.5])
def test_bad_startup_trials(value):
    with pytest.raises(LadaError, match="startup_trials must be an integer >= 1"):
        SearchConfig(name="x", target=5.0, startup_trials=value)


def test_search_records_parent_children_params_and_rounds(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = SearchConfig(name="s1", target=5.0, num_samples=4, max_concurrent=2, storage=str(tmp_path / "runs"),
                       tracking_uri=uri)
    train = TrainConfig(rounds=2, steps_per_round=3, final_steps=2)
    outcome = run_search(DataConfig("sst2", str(GLUE), max_train=200, max_dev=64), str(tiny_dir),
                         TeacherConfig(steps=5), train, SearchSpace.load("ratios"), cfg,
                         cache_dir=str(tmp_path / "cache"), log=lambda s: None)

    parents, children = _runs(uri, "s1")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4
    assert {c.data.tags["ladasearch.role"] for c in children} == {"trial"}
    from ladasearch.models import load_classifier
    counts = count_parameters(load_classifier(str(tiny_dir), 2))
    client = _client(uri)
    for child in children:
        p = child.data.params
        ratios = Ratios(float(p["embedding_ratio"]), float(p["svd_ratio"]), float(p["weight_ratio"]))
        assert budget(counts, ratios) == pytest.approx(counts.total / 5.0, rel=1e-6)  # eq. 7 meets the target
        rounds = [m.step for m in client.get_metric_history(child.info.run_id, "achieved_factor")]
        assert rounds[:2] == [1, 2]
        last = client.get_metric_history(child.info.run_id, "achieved_factor")[-1].value
        if child.data.tags.get("ladasearch.outcome") == "completed":
            assert last == pytest.approx(5.0, rel=0.01)
            assert 0.0 <= child.data.metrics["score"] <= 1.0
    best = outcome.best
    assert best is not None and best["achieved_factor"] == pytest.approx(5.0, rel=0.01)
    artifacts = [a.path for a in client.list_artifacts(parents[0].info.run_id)]
    assert "best_model" in artifacts and "best_summary.json" in artifacts
    assert (outcome.best_model / "ladasearch.json").is_file()


def test_killed_search_resumes_without_losing_or_duplicating_runs(tiny_dir, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "ladasearch.cli"]
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(cli + _args(tiny_dir, tmp_path, "k", 5, ["--scheduler", "fifo", "--concurrency", "1",
                                                                     "--steps-per-round", "15"]),
                             cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    finished_before = []
    while time.time() < deadline and first.poll() is None:
        time.sleep(1)
        if (tmp_path / "mlflow.db").exists():
            try:
                _, children = _runs(uri, "k")
            except Exception:  # the store is being created
                continue
            finished_before = [c.data.tags["ladasearch.trial_id"] for c in children if c.info.status == "FINISHED"]
            if len(finished_before) >= 2:
                break
    assert first.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
    os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray it started
    first.wait()
    assert len(finished_before) >= 2

    done = subprocess.run(cli + ["resume", "k", "--storage", str(tmp_path / "runs")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    parents, children = _runs(uri, "k")
    ids = [c.data.tags["ladasearch.trial_id"] for c in children]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(ids) == len(set(ids)) == 5                       # no duplicates, none lost
    assert set(finished_before) <= set(ids)
    assert all(c.info.status == "FINISHED" for c in children)
    state = json.loads((tmp_path / "runs" / "k.ladasearch.json").read_text())
    assert state["parent_run_id"] == parents[0].info.run_id


def test_ctrl_c_marks_the_search_killed_and_resume_completes_it(tiny_dir, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "ladasearch.cli"]
    first = subprocess.Popen(cli + _args(tiny_dir, tmp_path, "c", 3, ["--scheduler", "fifo", "--concurrency", "1",
                                                                     "--steps-per-round", "15"]),
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None:
        time.sleep(1)
        try:
            _, children = _runs(uri, "c")
        except Exception:  # the store is not there yet
            continue
        if any(c.info.status == "FINISHED" for c in children):
            break
    assert first.poll() is None, first.communicate()[0][-2000:]
    first.send_signal(signal.SIGINT)  # what Ctrl-C sends the driver
    out = first.communicate(timeout=180)[0]
    assert first.returncode == 130, out[-2000:]
    assert "interrupted after" in out and "ladasearch resume c" in out and "Traceback" not in out
    parents, children = _runs(uri, "c")
    assert parents[0].info.status == "KILLED"

    done = subprocess.run(cli + ["resume", "c", "--storage", str(tmp_path / "runs")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    parents, children = _runs(uri, "c")
    ids = [c.data.tags["ladasearch.trial_id"] for c in children]
    assert parents[0].info.status == "FINISHED" and len(ids) == len(set(ids)) == 3


def test_search_runs_on_a_two_node_ray_cluster(tiny_dir, tmp_path, monkeypatch):
    from ray.cluster_utils import Cluster

    monkeypatch.chdir(tmp_path)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        cfg = SearchConfig(name="c", target=5.0, num_samples=2, max_concurrent=2, storage=str(tmp_path / "runs"),
                           tracking_uri=uri, address=cluster.address, objectives=("score", "latency_ms"),
                           sampler="random")
        outcome = run_search(DataConfig("sst2", str(GLUE), max_train=200, max_dev=64), str(tiny_dir),
                             TeacherConfig(steps=5), TrainConfig(rounds=2, steps_per_round=20, final_steps=2),
                             SearchSpace.load("ratios"), cfg, cache_dir=str(tmp_path / "cache"), log=lambda s: None)
    finally:
        cluster.shutdown()
    _, children = _runs(uri, "c")
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    nodes = {c.data.params["ray.node_id"] for c in children}
    assert len(nodes) == 2  # one CPU per node, two trials at once: one trial on each node
    assert outcome.pareto and all(r["latency_ms"] > 0 for r in outcome.pareto)
