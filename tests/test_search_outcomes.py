"""One search with a trial of each outcome, forced: every view says the same of each; then its store, copied
elsewhere with the original removed, still exports and reports."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import GLUE_DIR

from ladasearch.config import DataConfig, TeacherConfig, TrainConfig
from ladasearch.search import SearchConfig, SearchSettings, SearchSpace, run_search

pytestmark = [pytest.mark.skipif(not GLUE_DIR.is_dir(), reason="shared GLUE data not found"), pytest.mark.ray]

# trial (in the order they start, one at a time) -> when the scheduler stops it; the last runs to the end
FORCED = ("stopped_before_target", "stopped_at_target", "completed")


def scripted_scheduler(cfg, space, train_cfg):
    """A Tune scheduler that stops the first trial after its first report (before the target size), the second at
    its first report at the target size, and lets the third finish: ASHA's decisions, made certain."""
    import math

    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    class Scripted(FIFOScheduler):
        def __init__(self):
            super().__init__()
            self.order: list[str] = []

        def on_trial_add(self, tune_controller, trial):
            self.order.append(trial.trial_id)

        def on_trial_result(self, tune_controller, trial, result):
            plan = FORCED[self.order.index(trial.trial_id)]
            at_target = not math.isnan(result["score_at_target"])
            if plan == "stopped_before_target" or (plan == "stopped_at_target" and at_target):
                return TrialScheduler.STOP
            return TrialScheduler.CONTINUE

    return Scripted()


@pytest.fixture(scope="module")
def forced(tiny_dir, tmp_path_factory):
    import ladasearch.search.driver as driver

    root = tmp_path_factory.mktemp("outcomes")
    store = root / "store"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    cfg = SearchConfig(name="forced", target=5.0, num_samples=3, max_concurrent=1, storage=str(root / "runs"),
                       tracking_uri=uri)
    # pruning lands on the target exactly, so the second trial's round 2 is at the target
    settings = SearchSettings(DataConfig("sst2", str(GLUE_DIR), max_train=200, max_dev=64), str(tiny_dir), cfg,
                              SearchSpace.load("prune_only"), TeacherConfig(steps=5),
                              TrainConfig(rounds=2, steps_per_round=3, final_steps=2),
                              cache_dir=str(root / "cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(driver, "make_scheduler", scripted_scheduler)
        outcome = run_search(settings, log=lambda s: None)
    return root, store, outcome


def _cli(*args):
    from ladasearch.cli.commands import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_every_view_tells_each_trials_outcome_alike(forced, tmp_path):
    import optuna
    from mlflow.tracking import MlflowClient

    from ladasearch.report.sources import load_all
    from ladasearch.search.study import journal_storage, study_file

    root, store, outcome = forced
    uri = f"sqlite:///{store / 'mlflow.db'}"
    rows = {t.trial_id: t for t in outcome.trials}           # trials.json
    assert sorted(t.outcome for t in rows.values()) == sorted(FORCED)
    client = MlflowClient(uri)
    parent = client.search_runs([client.get_experiment_by_name("ladasearch").experiment_id],
                                "tags.`ladasearch.search` = 'forced'")[0]
    logged = json.loads(Path(client.download_artifacts(parent.info.run_id, "trials.json", str(tmp_path))).read_text())
    assert {t["trial_id"]: t["outcome"] for t in logged["trials"]} == {k: t.outcome for k, t in rows.items()}

    # MLflow: the outcome tag, the run status, the parent's count per outcome
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    mlflow_outcomes = {c.data.tags["ladasearch.trial_id"]: c.data.tags["ladasearch.outcome"] for c in children}
    assert mlflow_outcomes == {k: t.outcome for k, t in rows.items()}
    status = {c.data.tags["ladasearch.trial_id"]: c.info.status for c in children}
    assert {k: status[k] for k in rows} == {k: "KILLED" if t.outcome == "stopped_before_target" else "FINISHED"
                                           for k, t in rows.items()}
    assert {o: parent.data.metrics[f"trials_{o}"] for o in FORCED} == {o: 1.0 for o in FORCED}

    # Optuna: the score at the target where there is one (COMPLETE), PRUNED where the trial stopped before it
    study = optuna.load_study(study_name="forced", storage=journal_storage(study_file(root / "runs" / "forced")))
    states = sorted((t.state.name, t.value) for t in study.trials)
    expected = sorted(("COMPLETE", t.score_at_target) if t.score_at_target is not None else ("PRUNED", None)
                      for t in rows.values())
    assert states == expected and [s for s, _ in states].count("COMPLETE") == 2

    # the data behind `report`'s plots (every trial) and `export --all` (those with a score at the target)
    plotted = {t.source.run_id: t.summary.outcome for t in load_all(["forced"], uri, include_incomplete=True)}
    by_run = {c.info.run_id: c.data.tags["ladasearch.outcome"] for c in children}
    assert plotted == by_run
    result = _cli("export", "forced", "--all", "--format", "csv", "--tracking-uri", uri)
    assert result.exit_code == 0, result.output
    table = list(csv.DictReader(io.StringIO(result.output)))
    assert sorted(r["outcome"] for r in table) == ["completed", "stopped_at_target"]


def test_a_copied_store_exports_and_reports_with_the_original_gone(forced, tmp_path):
    root, store, _ = forced
    copy = tmp_path / "elsewhere"
    shutil.copytree(store, copy)
    gone = root / "store-gone"
    store.rename(gone)          # the original is removed (and put back for the other tests afterwards)
    try:
        uri = f"sqlite:///{copy / 'mlflow.db'}"
        result = _cli("export", "forced", "--all", "--format", "csv", "--tracking-uri", uri)
        assert result.exit_code == 0, result.output
        assert len(list(csv.DictReader(io.StringIO(result.output)))) == 2
        result = _cli("report", "forced", "--out", tmp_path / "report", "--tracking-uri", uri)
        assert result.exit_code == 0, result.output
        assert (tmp_path / "report" / "score_vs_compression.png").stat().st_size > 0
        assert list((copy / "artifacts").rglob("plots/score_vs_compression.png"))   # logged into the copy
        result = _cli("export-model", "forced", "--format", "hf", "--out", tmp_path / "hf", "--no-measure",
                      "--tracking-uri", uri)
        assert result.exit_code == 0, result.output
        assert (tmp_path / "hf" / "config.json").is_file()
        shutil.rmtree(copy / "artifacts")   # a store copied without its artifacts: said so, with the folder
        result = _cli("export-model", "forced", "--format", "hf", "--out", tmp_path / "hf2", "--no-measure",
                      "--tracking-uri", uri)
        assert result.exit_code == 2 and "which is not there" in result.output and "artifacts/" in result.output
        result = _cli("export", "forced", "--tracking-uri", uri)
        assert result.exit_code == 2 and "which is not there" in result.output
    finally:
        gone.rename(store)


@pytest.mark.parametrize("reports", [("b", "a"), ("a", "b"), ("b", "a", "b")])
def test_a_tie_names_the_same_best_trial_in_the_status_line_and_the_result(reports):
    """Two trials at one validation score: the progress line and ``best_trial`` pick the same one (the first in
    the search's trial order), whichever reported first."""
    from types import SimpleNamespace

    from ladasearch.search.callbacks import Progress
    from ladasearch.search.results import best_trial

    trials = [SimpleNamespace(trial_id=name, status="RUNNING") for name in ("a", "b")]
    lines = []
    progress = Progress(total=2, metric="val score", target=5.0, echo=lines.append, every_s=0.0)
    for name in reports:
        progress.on_trial_result(0, trials, next(t for t in trials if t.trial_id == name),
                                 {"score_at_target": 0.75, "achieved_factor": 5.0})
    gathered = [SimpleNamespace(checkpoint=f"/ckpt/{t.trial_id}", summary=object(), name=t.trial_id,
                                row=SimpleNamespace(score_at_target=0.75)) for t in trials]
    assert progress.best[1] == best_trial(gathered).name == "a"
    assert "best val score 0.7500 (trial a, 5.00x)" in lines[-1]
