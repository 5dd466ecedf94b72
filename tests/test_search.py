"""Real searches on a tiny model: MLflow records, resume after a kill, a two-node Ray cluster."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from conftest import GLUE_DIR, target_tolerance

from ladasearch.compress import Ratios, budget, count_parameters
from ladasearch.config import DataConfig, LossWeights, TeacherConfig, TrainConfig
from ladasearch.errors import LadaError
from ladasearch.search import SavedSearch, SearchConfig, SearchSettings, SearchSpace, run_search
from ladasearch.search.samplers import make_sampler, startup_trials
from ladasearch.summary import OUTCOMES, TrialSummary

GLUE = GLUE_DIR  # conftest: the shared GLUE folder
pytestmark = [pytest.mark.skipif(not GLUE.is_dir(), reason="shared GLUE data not found"), pytest.mark.ray]


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
            "--steps-per-round", "3", "--final-steps", "2", "--final-budget", "0", "--trials", str(trials),
            "--name", name,
            "--space", "ratios", "--storage", str(tmp_path / "runs"),
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--cache-dir", str(tmp_path / "cache"), *extra]


@pytest.mark.parametrize("trials, startup", [(1, 2), (3, 2), (8, 2), (16, 5), (30, 10), (200, 10)])
def test_model_based_samplers_start_after_a_third_of_the_budget(trials, startup):
    assert startup_trials(trials) == startup
    assert make_sampler("tpe", 0, False, trials)._n_startup_trials == startup
    assert make_sampler("gp", 0, False, trials)._n_startup_trials == startup
    assert make_sampler("tpe", 0, False, trials, startup=7)._n_startup_trials == 7


@pytest.mark.parametrize("value", [0, -1, 2.5])
def test_bad_startup_trials(value):
    with pytest.raises(LadaError, match="startup_trials must be an integer >= 1"):
        SearchConfig(name="x", target=5.0, startup_trials=value)


@pytest.mark.parametrize("sampler", ["cmaes", "gp"])
def test_single_objective_sampler_refused_with_latency(sampler):
    with pytest.raises(LadaError, match=f"sampler '{sampler}' is single-objective; use tpe, random, qmc, nsga2"):
        SearchConfig(name="x", target=5.0, sampler=sampler, objectives=("score", "latency_ms"))


@pytest.mark.parametrize("space", ["default", "ratios", "paper", "prune_only"])
def test_settings_come_back_from_the_spec_file_as_they_were(tmp_path, space):
    settings = SearchSettings(DataConfig("sst2", "/data/glue", max_train=200, max_dev=64, seed=3), "minilm",
                              SearchConfig(name="s", target=7.5, num_samples=3, sampler="random", seed=4,
                                           objectives=("score", "latency_ms"), storage=str(tmp_path / "runs")),
                              SearchSpace.load(space), TeacherConfig(steps=7),
                              TrainConfig(rounds=3, learning_rate=2e-4, loss_weights=LossWeights(hidden=0.5)),
                              teacher_path="/teachers/t1", device="cpu", cache_dir="/cache")
    path = SavedSearch(settings, "f" * 32).write()
    assert path == tmp_path / "runs" / "s.ladasearch.json"
    assert json.loads(path.read_text())["parent_run_id"] == "f" * 32
    saved = SavedSearch.read(path)
    assert saved.settings == settings and saved.parent_run_id == "f" * 32


@pytest.mark.parametrize("text, message", [
    ("{not json", "could not read the search spec"),
    ('{"model": "minilm"}', "has no MLflow parent run id"),
    ('{"parent_run_id": "abc", "model": "minilm"}', "has no 'train'"),
])
def test_broken_spec_file(tmp_path, text, message):
    path = tmp_path / "s.ladasearch.json"
    path.write_text(text)
    with pytest.raises(LadaError, match=message):
        SavedSearch.read(path)


def test_tracking_uri_resolver_creates_the_store_only_when_asked(tmp_path, monkeypatch):
    from ladasearch.tracking import resolve_tracking_uri

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    default = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert resolve_tracking_uri(create=False) == default and not (tmp_path / "mlruns").exists()
    assert resolve_tracking_uri() == default and (tmp_path / "mlruns").is_dir()
    assert resolve_tracking_uri("sqlite:////x/y.db", create=False) == "sqlite:////x/y.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:///elsewhere")
    assert resolve_tracking_uri() == resolve_tracking_uri(create=False) == "file:///elsewhere"


def _loop(tiny_model, tiny_features, target=5.0):
    """(payload, ratios, plans, records, ranks after each compression) of a 2-round run on the tiny model."""
    from ladasearch.compress import compressible_modules, make_plan
    from ladasearch.config import CompressionConfig
    from ladasearch.data import TASKS
    from ladasearch.train.ladabert import LoopHooks, compress_model
    from ladasearch.search.worker import SummaryContext, TrialPayload

    counts = count_parameters(tiny_model)
    space = SearchSpace.load("ratios").bounded(counts, target)
    low, high = space.embedding_ratio.low, space.embedding_ratio.high
    ratios = space.ratios({"embedding_ratio": (low + high) / 2, "svd_split": 0.5}, counts, target)
    train_cfg = TrainConfig(rounds=2, steps_per_round=1, final_steps=1, batch_size=8)
    payload = TrialPayload(None, {}, *tiny_features, TASKS["sst2"], counts, space, train_cfg, CompressionConfig(), 1,
                           16, ("score",), SummaryContext(target, "tiny", "/teacher", 0.5, data={"source": "x"},
                                                          space="ratios"))
    records, ranks = [], []

    def after_compress(number, student):
        ranks.append({n: m.rank for n, (_, m) in compressible_modules(student).items() if hasattr(m, "rank")})

    compress_model(tiny_model, *tiny_features, TASKS["sst2"], ratios, train_cfg,
                   hooks=LoopHooks(after_compress=after_compress, after_eval=records.append))
    return payload, ratios, make_plan(tiny_model, ratios), records, ranks


def test_a_trial_stopped_after_a_round_has_a_full_summary(tiny_model, tiny_features):
    """The summary every report carries: status stopped_early, the matrices at that round's size, valid JSON."""
    from ladasearch.search.worker import RoundReporter

    payload, ratios, plans, records, ranks = _loop(tiny_model, tiny_features)
    reporter = RoundReporter(payload, {"embedding_ratio": ratios.embedding, "svd_split": 0.5}, ratios, plans,
                             payload.counts, payload.train_cfg, {})
    reporter.history.append(records[0])
    summary = reporter.so_far(records[0])
    assert summary.status == "stopped_early" and not summary.completed
    assert summary.ranks == ranks[0] and summary.ranks != ranks[1]   # round 1's ranks, not the final ones
    assert summary.achieved_factor == records[0].achieved_factor < 5.0
    assert summary.history == (records[0],) and summary.score == records[0].score
    assert (summary.target, summary.teacher_score, summary.space) == (5.0, 0.5, "ratios")
    assert TrialSummary.from_json(json.loads(json.dumps(summary.to_json()))) == summary


def test_mlflow_trial_runs_get_the_task_metrics_and_the_stopped_summary(tiny_model, tiny_features, tmp_path):
    """Per-round MLflow metrics carry whatever the task measures (here a metric no list names), and a trial the
    scheduler stops keeps its typed summary; the tracker reads both back for the reports."""
    from types import SimpleNamespace

    from ladasearch.search.callbacks import MlflowTrials
    from ladasearch.search.worker import SUMMARY_KEY, RoundReporter
    from ladasearch.tracking import SearchTags, Tracker

    payload, ratios, plans, records, _ = _loop(tiny_model, tiny_features)
    reporter = RoundReporter(payload, {}, ratios, plans, payload.counts, payload.train_cfg, {})
    odd = [replace(r, metrics={**r.metrics, "balanced_accuracy": 0.25 * r.round}) for r in records]
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = tracker.start_search("s9", SearchTags(task="sst2"), {"target": 5.0})
    callback = MlflowTrials(tracker, parent, SearchTags(task="sst2"), {"target": 5.0})
    for trial_id, rounds in (("t1", 2), ("t2", 1)):  # t1 stops at the target size (round 2 of 2), t2 before it
        reporter.history.clear()
        trial = SimpleNamespace(trial_id=trial_id, config={"embedding_ratio": ratios.embedding}, last_result=None)
        for record in odd[:rounds]:
            reporter.history.append(record)
            trial.last_result = {**record.flat(), SUMMARY_KEY: json.dumps(reporter.so_far(record).to_json())}
            callback.on_trial_result(0, [], trial, trial.last_result)
        callback.on_trial_complete(0, [], trial)

    found = Tracker.existing(tracker.tracking_uri).find_search("s9")
    assert found is not None and found.run_id == parent
    experiment = tracker.client.get_run(parent).info.experiment_id
    by_name = {r.info.run_name: r for r in tracker.client.search_runs(
        [experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'")}
    run, early = by_name["trial-t1"], by_name["trial-t2"]
    history = tracker.client.get_metric_history(run.info.run_id, "balanced_accuracy")
    assert [(m.step, m.value) for m in history] == [(1, 0.25), (2, 0.5)]
    # the outcome, one rule: a tag and the run's status in the runs table
    assert (run.data.tags["ladasearch.outcome"], run.info.status) == ("stopped_at_target", "FINISHED")
    assert (early.data.tags["ladasearch.outcome"], early.info.status) == ("stopped_before_target", "KILLED")
    summary = TrialSummary.from_json(tracker.read_summary(run.info.run_id))
    assert summary.status == "stopped_early" and summary.history == tuple(odd[:2])
    assert summary.outcome == "stopped_at_target"
    assert tracker.read_summary(parent) is None


def test_search_records_parent_children_params_and_rounds(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = SearchConfig(name="s1", target=5.0, num_samples=4, max_concurrent=2, storage=str(tmp_path / "runs"),
                       tracking_uri=uri)
    train = TrainConfig(rounds=2, steps_per_round=3, final_steps=2)
    outcome = run_search(SearchSettings(DataConfig("sst2", str(GLUE), max_train=200, max_dev=64), str(tiny_dir), cfg,
                                        SearchSpace.load("ratios"), TeacherConfig(steps=5), train,
                                        cache_dir=str(tmp_path / "cache")), log=lambda s: None)

    parents, children = _runs(uri, "s1")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4
    assert {c.data.tags["ladasearch.role"] for c in children} == {"trial"}
    from ladasearch.models import load_classifier
    counts = count_parameters(load_classifier(str(tiny_dir), 2))
    client = _client(uri)
    for child in children:
        p = child.data.params
        ratios = Ratios(float(p["embedding_ratio"]), float(p["svd_ratio"]), float(p["weight_ratio"]),
                        method=p["method"])  # each trial picks its method in this space
        assert budget(counts, ratios) == pytest.approx(counts.total / 5.0, rel=1e-6)  # eq. 7 meets the target
        rounds = [m.step for m in client.get_metric_history(child.info.run_id, "achieved_factor")]
        assert rounds == list(range(1, len(rounds) + 1)) and rounds  # ASHA may stop a trial after any round
        last = client.get_metric_history(child.info.run_id, "achieved_factor")[-1].value
        if child.data.tags.get("ladasearch.outcome") == "completed":
            assert rounds == [1, 2, 3]  # two rounds and the final steps
            assert 0.0 <= child.data.metrics["val_score"] <= 1.0
            assert last == pytest.approx(5.0, rel=target_tolerance(p["method"]))
    best = outcome.best
    assert best is not None and best.achieved_factor == pytest.approx(5.0, rel=target_tolerance(best.ratios.method))
    artifacts = [a.path for a in client.list_artifacts(parents[0].info.run_id)]
    assert "best_model" in artifacts and "best_summary.json" in artifacts
    assert (outcome.best_model / "ladasearch.json").is_file()
    assert {"trials.json", "plots", "search_space.json"} <= set(artifacts)
    from ladasearch.tracking import Tracker

    tracker = Tracker(uri)
    for child in children:  # a trial stopped early still has its typed summary, up to the round it reached
        summary = TrialSummary.from_json(tracker.read_summary(child.info.run_id))
        assert summary.outcome == child.data.tags["ladasearch.outcome"]
        assert child.info.status == ("KILLED" if summary.outcome == "stopped_before_target" else "FINISHED")
        assert summary.history[-1].round == int(child.data.metrics["round"])
    # one outcome per trial in the search's rows (trials.json), the MLflow tags and the Optuna journal
    assert sorted(t.outcome for t in outcome.trials) == sorted(c.data.tags["ladasearch.outcome"] for c in children)
    import optuna

    from ladasearch.search.study import journal_storage, study_file

    study = optuna.load_study(study_name="s1", storage=journal_storage(study_file(tmp_path / "runs" / "s1")))
    # Optuna is told the score at the target size: COMPLETE with it (completed, or stopped at the target), else
    # PRUNED (stopped before it, or completed off it: a tiny SVD trial's ranks can round it more than 1% away)
    def state(row):
        return "FAIL" if row.outcome == "failed" else "COMPLETE" if row.score_at_target is not None else "PRUNED"

    assert sorted(t.state.name for t in study.trials) == sorted(state(t) for t in outcome.trials)
    assert sorted(t.value for t in study.trials if t.state.name == "COMPLETE") == \
        sorted(t.score_at_target for t in outcome.trials if t.score_at_target is not None)
    # the parent counts every outcome, by the one definition (TrialRow.outcome); the shipped model's latency
    parent = _client(uri).get_run(parents[0].info.run_id).data.metrics
    assert {o: parent[f"trials_{o}"] for o in OUTCOMES} == {o: sum(t.outcome == o for t in outcome.trials)
                                                          for o in OUTCOMES}
    assert sum(parent[f"trials_{o}"] for o in OUTCOMES) == 4
    assert math.isfinite(parent["best_latency_ms"]) and parent["best_latency_ms"] > 0


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
        # a second client migrating the store the driver is still making would break it: wait for its parent run
        if "search k:" in (tmp_path / "first.log").read_text():
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
    # fifo stops no trial: one cut off by the Ctrl-C is interrupted (a resume runs it), never "stopped"
    counts = next(line for line in out.splitlines() if line.startswith("search c: ") and "completed" in line)
    assert "0 stopped before target" in counts and "0 stopped at target" in counts, counts
    trials, completed = map(int, re.match(r"search c: (\d+) trials: (\d+) completed", counts).groups())
    assert f"{trials - completed} interrupted" in counts and trials - completed >= 1, counts
    # a trial cut off after it started has its run ended KILLED and marked interrupted (one still pending has none)
    cut = [c for c in children if c.info.status != "FINISHED"]
    assert all(c.info.status == "KILLED" and c.data.tags["ladasearch.outcome"] == "interrupted" for c in cut)

    done = subprocess.run(cli + ["resume", "c", "--storage", str(tmp_path / "runs")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    parents, children = _runs(uri, "c")
    ids = [c.data.tags["ladasearch.trial_id"] for c in children]
    assert parents[0].info.status == "FINISHED" and len(ids) == len(set(ids)) == 3


@pytest.mark.cluster
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
        settings = SearchSettings(DataConfig("sst2", str(GLUE), max_train=200, max_dev=64), str(tiny_dir), cfg,
                                  SearchSpace.load("ratios"), TeacherConfig(steps=5),
                                  TrainConfig(rounds=2, steps_per_round=20, final_steps=2),
                                  cache_dir=str(tmp_path / "cache"))
        outcome = run_search(settings, log=lambda s: None)
    finally:
        cluster.shutdown()
    _, children = _runs(uri, "c")
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    nodes = {c.data.params["ray.node_id"] for c in children}
    assert len(nodes) == 2  # one CPU per node, two trials at once: one trial on each node
    assert outcome.pareto and all(r.latency_ms > 0 for r in outcome.pareto)
