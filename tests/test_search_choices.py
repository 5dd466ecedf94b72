"""What a search decides on, and how: the validation split, warm starts, the sampler seed, ranking at the target
size only, the Optuna study kept beside the search, and MLflow's view of it (real tiny searches at the end)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import GLUE_DIR

from ladasearch.compress import count_parameters
from ladasearch.config import FinalBudget, TrainConfig
from ladasearch.data import VAL_CAP, load_task
from ladasearch.data.split import Split
from ladasearch.data.tasks import get_task
from ladasearch.data.validation import hold_out, sentence_rows, val_rows
from ladasearch.errors import LadaError
from ladasearch.models import load_classifier
from ladasearch.search import SearchSpace
from ladasearch.search.final_stage import FinalStage
from ladasearch.search.results import TrialRow
from ladasearch.search.warm_start import PastBest, WarmContext, plan
from ladasearch.serialize import saved_summary
from ladasearch.summary import ParamRecord, RatioRecord, RoundRecord, TrialSummary

GLUE = GLUE_DIR  # conftest: the shared GLUE folder
needs_glue = pytest.mark.skipif(not GLUE.is_dir(), reason="shared GLUE data not found")


# ---- the validation split -------------------------------------------------------------------------

@pytest.mark.parametrize("n, size, rows", [(67349, 0.1, VAL_CAP), (2000, 0.1, 200), (20, 0.1, 2), (9, 0.05, 1),
                                           (1000, 300, 300), (1000, 500, 500)])
def test_val_rows_fraction_is_capped_and_a_count_is_kept(n, size, rows):
    assert val_rows(n, size) == rows


@pytest.mark.parametrize("n, size, message", [
    (1000, 0, "row count >= 1"), (1000, 0.6, r"fraction must be in \(0, 0.5\]"), (1000, 1.5, "row count >= 1"),
    (1000, 501, r"at most half of it \(500\)"), (1000, True, "val_size True is invalid")])
def test_bad_val_size(n, size, message):
    with pytest.raises(LadaError, match=message):
        val_rows(n, size)


@needs_glue
@pytest.mark.parametrize("task, size", [("sst2", 0.1), ("rte", 100), ("stsb", 200)])
def test_validation_rows_are_stratified_seeded_and_never_trained_on(task, size):
    whole = load_task(task, GLUE)
    data = load_task(task, GLUE, val_size=size, max_train=300, seed=3)
    expected = val_rows(len(whole.train), size)
    assert len(data.val) == expected and len(data.train) == 300  # --max-train counts training rows only
    train_rows = set(zip(data.train.text_a, data.train.text_b or data.train.text_a, data.train.labels))
    val_rows_ = list(zip(data.val.text_a, data.val.text_b or data.val.text_a, data.val.labels))
    assert not train_rows.intersection(val_rows_)
    if not data.task.is_regression:  # each class keeps its share of the rows it is carved from, to one row
        pool = ([whole.train.labels[i] for i in sentence_rows(whole.train.text_a)]
                if data.task.val_rule == "sentences" else whole.train.labels)
        for label in set(pool):
            assert abs(data.val.labels.count(label) - pool.count(label) / len(pool) * expected) <= 1
    else:
        assert abs(sorted(data.val.labels)[expected // 2] - sorted(whole.train.labels)[len(whole.train) // 2]) < 0.5
    again = load_task(task, GLUE, val_size=size, max_train=300, seed=3)
    other = load_task(task, GLUE, val_size=size, max_train=300, seed=4)
    assert again.val == data.val and other.val != data.val
    # the teacher's cache key covers the held-out rows: a teacher trained on them is never reused
    assert len({data.train_fingerprint, other.train_fingerprint, load_task(task, GLUE, max_train=300, seed=3)
                .train_fingerprint}) == 3


@pytest.mark.parametrize("texts, sentences", [
    (["a good film", "good film", "film", "a bad one"], [0, 3]),
    (["Good  film ", "a good film .", "goodfilm"], [1, 2]),        # word boundaries, case and spacing ignored
    (["same row", "same row", "row"], [0, 1]),                    # an equal row does not hide its twin
    (["", "x"], [0, 1])])
def test_sentence_rows_are_the_rows_no_longer_row_contains(texts, sentences):
    assert sentence_rows(texts) == sentences


def test_the_sentence_rule_carves_whole_sentences_and_drops_their_phrases_from_train():
    sentences = [f"film number {i} was {'good' if i % 2 else 'bad'} ." for i in range(20)]
    phrases = [p for s in sentences for p in (s.split(" was ")[1], " ".join(s.split()[:3]))]
    train = Split(tuple(sentences + phrases + ["unrelated words"]), None,
                  tuple([i % 2 for i in range(20)] + [i // 2 % 2 for i in range(40)] + [1]))
    held = hold_out(train, get_task("sst2"), 4, seed=0)
    assert len(held.val) == 4 and set(held.val.text_a) <= set(sentences)
    assert sorted(held.val.labels) == [0, 0, 1, 1]
    # "film number 1" is inside "film number 1x ..." too: word boundaries keep it, only the held sentences' own go
    dropped = set(train.text_a) - set(held.train.text_a)
    assert dropped == {p for s in held.val.text_a for p in train.text_a if f" {p} " in f" {s} "}
    assert "unrelated words" in held.train.text_a and "whole sentences" in held.source
    assert hold_out(train, get_task("rte"), 4, seed=0).source.startswith("4 rows carved")


def test_the_sentence_rule_needs_enough_sentences():
    train = Split(("a b", "a", "b", "c d", "c"), None, (0, 0, 0, 1, 1))
    with pytest.raises(LadaError, match="has 2; 2 validation rows would take over half"):
        hold_out(train, get_task("sst2"), 2, seed=0)


@pytest.mark.parametrize("rule, source", [(None, "whole sentences"), ("sentences", "whole sentences"),
                                          ("rows", "rows carved")])
def test_a_validation_rule_is_the_tasks_own_unless_one_is_given(rule, source):
    from ladasearch.config import DataConfig

    sentences = [f"film {i} was {'good' if i % 2 else 'bad'} ." for i in range(20)]
    train = Split(tuple(sentences + [s.split(" was ")[1] for s in sentences]), None, tuple(i % 2 for i in range(40)))
    assert source in hold_out(train, get_task("sst2"), 4, 0, rule=rule).source
    assert DataConfig("sst2", val_rule=rule).val_rule == rule
    with pytest.raises(LadaError, match="val_rule must be one of rows, sentences or unset"):
        DataConfig("sst2", val_rule="phrases")


def test_a_search_spec_from_before_validation_rules_keeps_carving_rows():
    from ladasearch.config import DataConfig
    from ladasearch.search.settings import SearchConfig, SearchSettings

    settings = SearchSettings(DataConfig("sst2"), "minilm", SearchConfig(name="old", target=5.0), SearchSpace.load("ratios"))
    saved = settings.to_json()
    assert saved["data"]["val_rule"] is None and SearchSettings.from_json(saved).data.val_rule is None
    del saved["data"]["val_rule"]
    assert SearchSettings.from_json(saved).data.val_rule == "rows"


@needs_glue
def test_sst2_validation_rows_are_sentences_like_dev():
    data = load_task("sst2", GLUE, val_size=0.1, seed=0)
    words = [len(t.split()) for t in data.val.text_a]
    dev_words = [len(t.split()) for t in data.dev.text_a]
    assert abs(sum(words) / len(words) - sum(dev_words) / len(dev_words)) < 2   # dev: 19.5 words, phrases: 9.4
    train = {" " + " ".join(t.split()) + " " for t in data.train.text_a}
    inside = [t for t in train if any(t in " " + " ".join(v.split()) + " " for v in data.val.text_a[:50])]
    assert not inside


@needs_glue
def test_a_validation_file_replaces_the_carved_rows(tmp_path):
    path = tmp_path / "val.tsv"
    path.write_text("sentence\tlabel\ngood film\t1\nbad film\t0\nfine\t1\n")
    whole = load_task("sst2", GLUE)
    data = load_task("sst2", GLUE, val_file=path)
    assert data.val.text_a == ("good film", "bad film", "fine") and data.val.labels == (1, 0, 1)
    assert len(data.train) == len(whole.train) and str(path) in data.val_source
    with pytest.raises(LadaError, match="does not exist"):
        load_task("sst2", GLUE, val_file=tmp_path / "none.tsv")
    with pytest.raises(LadaError, match="is a folder; give a TSV file"):
        load_task("sst2", GLUE, val_file=tmp_path)


# ---- the sampler seed ------------------------------------------------------------------------------

def test_sampler_seed_mixes_task_and_target_and_is_stable_across_processes():
    from ladasearch.search.samplers import search_seed

    seeds = {search_seed(0, task, target) for task in ("sst2", "mnli") for target in (2.5, 5.0, 10.0)}
    assert len(seeds) == 6 and search_seed(1, "sst2", 5.0) not in seeds
    code = "from ladasearch.search.samplers import search_seed; print(search_seed(0, 'sst2', 5.0))"
    printed = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": hashseed},
                              capture_output=True, text=True, check=True).stdout.strip() for hashseed in ("1", "2")}
    assert printed == {str(search_seed(0, "sst2", 5.0))}


# ---- ranking at the target size only ---------------------------------------------------------------

def _summary(target: float, scores: list[tuple[float, float]], status: str, dev: float | None = None) -> TrialSummary:
    """A summary whose rounds had (achieved factor, val score) ``scores``."""
    params = ParamRecord(10, 10, 10)
    history = tuple(RoundRecord(i + 1, False, s, {"accuracy": s}, params, f, {}, 1.0, "val")
                    for i, (f, s) in enumerate(scores))
    return TrialSummary("sst2", "accuracy", RatioRecord("hybrid", 0.2, 0.5, 0.5), scores[-1][0], params, params, (),
                        scores[-1][1], {}, history, status=status, target=target, score_split="val", dev_score=dev)


@pytest.mark.parametrize("target", [2.5, 5.0, 10.0])
def test_only_trials_at_the_target_size_are_ranked(target, tmp_path):
    from ladasearch.search.results import GatheredTrial, TrialRow, best_trial, pareto

    half = math.sqrt(target)
    stopped = _summary(target, [(half, 0.95)], "stopped_early")            # larger model, higher score
    at_target_no_model = _summary(target, [(half, 0.9), (target, 0.91)], "stopped_early")
    good = _summary(target, [(half, 0.8), (target * 1.000001, 0.85)], "completed", dev=0.5)
    lucky_on_dev = _summary(target, [(half, 0.8), (target, 0.84)], "completed", dev=0.99)
    assert stopped.score_at_target is None and at_target_no_model.score_at_target == 0.91
    assert good.score_at_target == 0.85 and TrialSummary.from_json(good.to_json()).score_at_target == 0.85

    def gathered(i, summary, checkpoint):
        row = TrialRow(f"t{i}", summary.status, summary.score, summary.achieved_factor, len(summary.history), 1.0 + i,
                       {}, summary.score_at_target)
        return GatheredTrial(row, summary, tmp_path if checkpoint else None)

    trials = [gathered(0, stopped, False), gathered(1, at_target_no_model, False), gathered(2, good, True),
              gathered(3, lucky_on_dev, True)]
    assert best_trial(trials).row.trial_id == "t2"   # not the stopped one, not the one dev would pick
    assert best_trial(trials[:2]) is None
    assert [r.trial_id for r in pareto([t.row for t in trials])] == ["t2"]  # t3 is slower and worse on val


@pytest.mark.parametrize("final, counted", [(5.0, True), (4.96, True), (4.94, False), (5.3, True), (2.5, False)])
def test_at_the_target_means_at_most_one_percent_short(final, counted):
    """A model smaller than asked (SVD ranks round) is at its target; one more than 1% larger is not."""
    summary = _summary(5.0, [(2.2, 0.9), (final, 0.8)], "completed")
    assert summary.score_at_target == (0.8 if counted else None)


def test_stopped_trials_are_grey_and_the_front_has_target_size_trials_only(tmp_path):
    from ladasearch.report.plots import learning_curves, pareto_plot
    from ladasearch.report.records import LoadedTrial
    from ladasearch.report.table import best_per_group

    trials = [LoadedTrial(_summary(5.0, [(2.2, 0.95)], "stopped_early")),
              LoadedTrial(_summary(5.0, [(2.2, 0.8), (5.0, 0.85)], "completed")),
              LoadedTrial(_summary(5.0, [(2.2, 0.8), (5.0, 0.83)], "completed", dev=0.99))]
    assert best_per_group(trials) == [trials[1]]
    for plot in (pareto_plot, learning_curves):
        assert plot(trials, tmp_path / f"{plot.__name__}.png").stat().st_size > 5000
    with pytest.raises(LadaError):
        learning_curves([], tmp_path / "none.png")


# ---- warm starts -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_counts():
    from conftest import build_tiny

    return count_parameters(build_tiny(0))


def _hybrid_space(methods, split=(0.1, 0.9)):
    return SearchSpace.from_dict({"name": "h", "method": methods, "ratios": {
        "embedding_ratio": {"low": 0.02, "high": 1.0, "log": True}, "svd_split": {"low": split[0], "high": split[1]}}})


@pytest.mark.parametrize("space, target, corners", [
    ("ratios", 5.0, [("svd", None), ("prune", None)]),            # the pure methods where the space offers them
    ("default", 5.0, [("svd", None), ("prune", None)]),
    ("ratios", 2.5, [("svd", None), ("prune", None)]),
    (_hybrid_space("hybrid"), 5.0, [(None, 0.9), (None, 0.1)]),   # else the split's bounds
    (_hybrid_space({"choices": ["hybrid", "svd"]}, (0.0, 1.0)), 5.0, [("svd", None), ("hybrid", 0.0)]),
    ("prune_only", 5.0, [(None, None)])])
def test_corners_are_the_pure_recipes_at_the_uniform_embedding_ratio(tiny_counts, space, target, corners):
    bounded = (SearchSpace.load(space) if isinstance(space, str) else space).bounded(tiny_counts, target)
    points = [p for p in plan("corners", WarmContext(bounded, tiny_counts, target), 10) if p.source == "corner"]
    assert [(p.params.get("method"), p.params.get("svd_split")) for p in points] == corners
    c = tiny_counts
    uniform = (c.total / target - c.dense) / (c.embedding + c.encoder)
    expected = min(max(uniform, bounded.embedding_ratio.low), bounded.embedding_ratio.high)
    assert all(p.params["embedding_ratio"] == pytest.approx(expected) for p in points)
    for p in points:  # every point meets the target exactly
        ratios = bounded.ratios({"svd_split": bounded.svd_split.value, **p.params}, c, target)
        assert ratios.embedding * c.embedding + ratios.encoder * c.encoder + c.dense == pytest.approx(c.total / target)


@pytest.mark.parametrize("past_target, target", [(5.0, 10.0), (10.0, 5.0), (5.0, 5.0)])
def test_history_moves_a_past_best_to_the_new_target(tiny_counts, past_target, target):
    c = tiny_counts
    old = SearchSpace.load("ratios").bounded(c, past_target)
    emb = math.sqrt(old.embedding_ratio.low * old.embedding_ratio.high)
    ratios = old.ratios({"method": "hybrid", "embedding_ratio": emb, "svd_split": 0.3}, c, past_target)
    past = PastBest("earlier", past_target, ratios.record(), 0.8)
    space = SearchSpace.load("ratios").bounded(c, target)
    (point,) = plan("history", WarmContext(space, c, target, (past,)), 10)
    share = emb * c.embedding / (c.total / past_target - c.dense)   # the embedding's share of the budget is kept
    expected = min(max(share * (c.total / target - c.dense) / c.embedding, space.embedding_ratio.low),
                   space.embedding_ratio.high)
    assert point.params.pop("method") == "hybrid"   # the past best's method, which the space offers
    assert point.params == pytest.approx({"embedding_ratio": expected, "svd_split": 0.3})
    assert point.source == f"history:earlier@{past_target:g}x"
    assert plan("none", WarmContext(space, c, target, (past,)), 10) == []
    assert len(plan("all", WarmContext(space, c, target, (past,)), 10)) == 3
    assert len(plan("all", WarmContext(space, c, target, (past,)), 2)) == 2  # at most --trials


def test_unknown_warm_start_is_refused():
    from ladasearch.search import SearchConfig

    with pytest.raises(LadaError, match="unknown warm start 'some'; allowed: none, corners, history, all"):
        SearchConfig(name="x", target=5.0, warm_start="some")
    with pytest.raises(LadaError, match="reduction_factor must be a number > 1"):
        SearchConfig(name="x", target=5.0, reduction_factor=1)


# ---- the Optuna study ------------------------------------------------------------------------------

def _searcher(folder, points=()):
    import optuna

    from ladasearch.search.study import make_searcher

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.load("ratios")
    return make_searcher(space.define_by_run, "score_at_target", "max", optuna.samplers.RandomSampler(seed=0),
                         [dict(p) for p in points], folder, "s")


def test_optuna_is_told_scores_at_the_target_only(tmp_path):
    import optuna
    from optuna.trial import TrialState

    from ladasearch.search.study import journal_storage, study_file

    point = {"method": "hybrid", "embedding_ratio": 0.1, "svd_split": 0.0}
    searcher = _searcher(tmp_path, [point])
    configs = {t: searcher.suggest(t) for t in ("a", "b", "c")}
    assert configs["a"] == point  # the enqueued point comes first
    for trial, rounds in (("a", [0.6, 0.7]), ("b", [0.9]), ("c", [0.5])):
        for step, score in enumerate(rounds, 1):
            searcher.on_trial_result(trial, {"score": score, "round": step,
                                             "score_at_target": score if step == 2 else math.nan})
    searcher.on_trial_complete("a", {"score": 0.7, "round": 2, "score_at_target": 0.7})
    searcher.on_trial_complete("b", {"score": 0.9, "round": 1, "score_at_target": math.nan})  # stopped early
    searcher.on_trial_complete("c", {"score": 0.5, "round": 1, "score_at_target": 0.4}, error=True)
    study = optuna.load_study(study_name="s", storage=journal_storage(study_file(tmp_path)))  # as the dashboard does
    states = {t.number: (t.state, dict(t.intermediate_values)) for t in study.trials}
    assert states == {0: (TrialState.COMPLETE, {1: 0.6, 2: 0.7}), 1: (TrialState.PRUNED, {1: 0.9}),
                      2: (TrialState.FAIL, {1: 0.5})}
    assert study.best_trial.number == 0 and study.best_value == 0.7  # the larger model's 0.9 never counts


def test_a_restored_searcher_requeues_warm_starts_it_lost(tmp_path):
    import pickle

    import optuna
    from optuna.trial import TrialState

    points = [{"method": "hybrid", "embedding_ratio": 0.1, "svd_split": 0.0},
              {"method": "prune", "embedding_ratio": 0.2},  # a pure method's point has no split
              {"method": "hybrid", "embedding_ratio": 0.3, "svd_split": 0.5}]
    searcher = _searcher(tmp_path, points)
    assert searcher.suggest("a") == points[0]
    checkpoint = tmp_path / "searcher.pkl"
    searcher.save(str(checkpoint))                  # the last checkpoint before a kill ...
    assert searcher.suggest("b") == points[1]      # ... then a trial is asked, and the process dies
    restored = pickle.loads(pickle.dumps(searcher))  # as Tune unpickles its searcher, then restores the checkpoint
    restored.restore(str(checkpoint))
    study = restored._ot_study
    assert [t.state for t in study.get_trials()][:2] == [TrialState.RUNNING, TrialState.FAIL]
    asked = [restored.suggest(t) for t in ("c", "d")]
    assert asked == [points[2], points[1]]          # no warm start lost: the lost one comes again
    assert isinstance(optuna.load_study(study_name="s", storage=study._storage), optuna.Study)


# ---- MLflow ----------------------------------------------------------------------------------------

def test_experiment_opens_on_training_runs_and_a_copied_store_reads_its_own_artifacts(tmp_path):
    import shutil

    from ladasearch.tracking import EXPERIMENT_KIND, TRAINING_KIND, Relocation, SearchTags, Tracker

    store = tmp_path / "store"
    store.mkdir()
    tracker = Tracker(f"sqlite:///{store / 'mlflow.db'}")
    run = tracker.start_search("s", SearchTags(), {})
    tracker.log_json(run, {"a": 1}, "x.json")
    assert tracker.client.get_experiment(tracker.experiment_id).tags[EXPERIMENT_KIND] == TRAINING_KIND
    assert tracker.missing_artifact_roots() == [] and tracker.relocated == []
    tracker.log_json(run, {"a": 2}, "original.json")
    shutil.copytree(store, tmp_path / "copied")     # a copy reads and writes its own artifacts at once ...
    copied = Tracker(f"sqlite:///{tmp_path / 'copied' / 'mlflow.db'}")
    assert copied.read_summary(run, "x.json") == {"a": 1} and copied.missing_artifact_roots() == []
    assert copied.relocated == [Relocation("ladasearch", str(store / "artifacts" / "ladasearch"),
                                           str(tmp_path / "copied" / "artifacts" / "ladasearch"))]
    copied.log_json(run, {"b": 1}, "copy.json")
    assert not list(store.rglob("copy.json")) and list((tmp_path / "copied").rglob("copy.json"))  # ... not the original's
    shutil.rmtree(store)                                        # ... also once the original is gone
    assert Tracker(f"sqlite:///{tmp_path / 'copied' / 'mlflow.db'}").read_summary(run, "copy.json") == {"b": 1}
    bare = tmp_path / "bare"                                    # a store copied without its artifacts/ folder
    bare.mkdir()
    shutil.copy(tmp_path / "copied" / "mlflow.db", bare)
    shutil.rmtree(tmp_path / "copied")
    alone = Tracker(f"sqlite:///{bare / 'mlflow.db'}")
    folder = str(tmp_path / "copied" / "artifacts" / "ladasearch")
    assert alone.missing_artifact_roots() == [("ladasearch", folder)] and alone.relocated == []
    with pytest.raises(LadaError, match=f"written to {folder}, which is not there.*copy the store's artifacts/"):
        alone.require_artifacts(alone.find_search("s"), "s")


def test_a_store_that_is_not_a_database_is_named_as_unreadable(tmp_path):
    from ladasearch.tracking import Tracker

    (tmp_path / "mlflow.db").write_bytes(b"not sqlite" * 200)
    (tmp_path / "artifacts" / "ladasearch").mkdir(parents=True)
    with pytest.raises(LadaError, match="cannot be read .*is it an MLflow SQLite store"):
        Tracker.existing(f"sqlite:///{tmp_path / 'mlflow.db'}").find_search("s")


@pytest.mark.parametrize("tags, search, best", [
    ({"ladasearch.task": "sst2", "ladasearch.target": "5x", "ladasearch.best_trial": "t1",
      "ladasearch.best.method": "svd", "ladasearch.best.embedding_ratio": "0.2", "ladasearch.best.svd_ratio": "0.2",
      "ladasearch.best.weight_ratio": "1.0", "ladasearch.best.val_score": "0.8"},
     ("sst2", 5.0), ("t1", "svd", 0.2, 1.0, 0.8)),                      # written before the structured share
    ({"ladasearch.target": "10.0", "ladasearch.best.embedding_ratio": "0.1", "ladasearch.best.svd_ratio": "x",
      "ladasearch.best.weight_ratio": "0.5"}, (None, 10.0), None),        # a hand-edited ratio: no best
    ({"ladasearch.target": "soon"}, (None, None), None),
])
def test_the_tag_codec_reads_what_older_and_hand_written_runs_hold(tags, search, best):
    from ladasearch.tracking import BestTags, SearchTags

    parsed = SearchTags.of(tags)
    assert (parsed.task, parsed.target) == search
    read = BestTags.of(tags)
    assert (read if read is None else (read.trial_id, read.method, read.embedding_ratio, read.structured_ratio,
                                       read.val_score)) == best


def test_the_tag_codec_round_trips():
    from ladasearch.tracking import BestTags, SearchTags

    search = SearchTags("mnli", 7.5, "/models/x", "default")
    assert SearchTags.of(search.to_tags()) == search and search.to_tags()["ladasearch.target"] == "7.5x"
    best = BestTags("abc", "hybrid", 0.1, 0.3, 0.6, 0.75, 0.4, 0.81, None)
    assert BestTags.of(best.to_tags()) == best and "ladasearch.best.dev_score" not in best.to_tags()


# ---- real searches on a tiny model -----------------------------------------------------------------

def _data_dir(root: Path, flip: bool, train: Path) -> Path:
    """A GLUE folder with SST-2's train file (one shared file: one teacher) and 64 dev rows, labels flipped or not."""
    folder = root / ("flipped" if flip else "true") / "SST-2"
    folder.mkdir(parents=True)
    (folder / "train.tsv").symlink_to(train)
    lines = (GLUE / "SST-2" / "dev.tsv").read_text().splitlines()[:65]
    rows = [f"{text}\t{1 - int(label) if flip else label}" for text, label in (r.rsplit("\t", 1) for r in lines[1:])]
    (folder / "dev.tsv").write_text("\n".join([lines[0], *rows]) + "\n")
    return folder.parent


def _cli(tiny_dir, root: Path, data: Path, name: str, trials: int, *extra: str) -> list[str]:
    return ["run", "--task", "sst2", "--target", "5x", "--data-dir", str(data), "--model", str(tiny_dir),
            "--max-train", "300", "--val-size", "100", "--max-length", "32", "--teacher-steps", "60",
            "--teacher-lr", "3e-3", "--lr", "1e-3", "--rounds", "2", "--steps-per-round", "4", "--final-steps", "4",
            "--final-budget", "0",
            "--batch-size", "16", "--space", "ratios", "--trials", str(trials), "--concurrency", "1", "--name", name,
            "--storage", str(root / "runs"), "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--cache-dir", str(root / "cache"), *extra]


def _search(tiny_dir, root, data, name, trials, *extra):
    from click.testing import CliRunner

    from ladasearch.cli.commands import main

    result = CliRunner().invoke(main, _cli(tiny_dir, root, data, name, trials, *extra))
    assert result.exit_code == 0, (result.output[-3000:], result.exception)
    return result.output


def _records(root: Path, name: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ladasearch")
    (parent,) = client.search_runs([exp.experiment_id], f"tags.`ladasearch.search` = '{name}'")
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                                  order_by=["attributes.start_time ASC"])
    return SimpleNamespace(client=client, experiment=exp, parent=parent, children=children)


def _trials(root: Path, name: str) -> list[dict]:
    """The search's trials from its trials.json, in the order Tune made them (ids end in a running number)."""
    records = _records(root, name)
    path = records.client.download_artifacts(records.parent.info.run_id, "trials.json", str(root / f"dl-{name}"))
    rows = json.loads(Path(path).read_text())["trials"]
    return sorted(rows, key=lambda r: int(r["trial_id"].rsplit("_", 1)[-1]) if "_" in r["trial_id"] else 0)


@pytest.fixture(scope="module")
def searched(tiny_dir, tmp_path_factory):
    """The same search twice (true and flipped dev labels), then a search at 4x warm-started from their history."""
    if not GLUE.is_dir():
        pytest.skip("shared GLUE data not found")
    root = tmp_path_factory.mktemp("choices")
    train = root / "train.tsv"
    train.write_text("\n".join((GLUE / "SST-2" / "train.tsv").read_text().splitlines()[:3001]) + "\n")
    out = {flip: _search(tiny_dir, root, _data_dir(root, flip, train), f"s-{flip}", 3, "--warm-start", "corners")
           for flip in (False, True)}
    return SimpleNamespace(root=root, train=train, out=out)


def test_dev_labels_flipped_choose_the_same_trial(searched):
    true, flipped = _records(searched.root, "s-False"), _records(searched.root, "s-True")
    for name in ("ladasearch.best.embedding_ratio", "ladasearch.best.svd_split", "ladasearch.best.val_score"):
        assert true.parent.data.tags[name] == flipped.parent.data.tags[name]
    val = [[c.data.metrics.get("val_score") for c in r.children] for r in (true, flipped)]
    assert val[0] == val[1] and len(set(val[0])) > 1           # same trials on val, and they differ
    dev, dev_flipped = true.parent.data.metrics["dev_score"], flipped.parent.data.metrics["dev_score"]
    assert dev_flipped == pytest.approx(1 - dev)               # dev was scored, on the flipped rows
    for records in (true, flipped):                            # and only for the chosen trial
        scored = [c for c in records.children if "dev_score" in c.data.metrics]
        best_id = records.parent.data.tags["ladasearch.best_trial"]
        assert [c.data.tags["ladasearch.trial_id"] for c in scored] == [best_id]
        assert records.parent.data.metrics["val_score"] == float(records.parent.data.tags["ladasearch.best.val_score"])


def test_warm_start_trials_run_first_with_the_enqueued_configs(searched):
    records = _records(searched.root, "s-False")
    path = records.client.download_artifacts(records.parent.info.run_id, "warm_starts.json", str(searched.root / "w"))
    warm = json.loads(Path(path).read_text())
    assert [w["source"] for w in warm][:2] == ["corner", "corner"]
    trials = _trials(searched.root, "s-False")
    assert [t["config"] for t in trials[:len(warm)]] == [w["params"] for w in warm]
    assert "warm starts (corners): corner method svd, embedding_ratio" in searched.out[False]


def test_summary_and_mlflow_say_which_split_is_which(searched):
    records = _records(searched.root, "s-False")
    assert records.experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    best_id = records.parent.data.tags["ladasearch.best_trial"]
    (best,) = [c for c in records.children if c.data.tags["ladasearch.trial_id"] == best_id]
    local = records.client.download_artifacts(best.info.run_id, "summary.json", str(searched.root / "best"))
    summary = TrialSummary.from_json(json.loads(Path(local).read_text()))
    assert summary.score_split == "val" and {r.split for r in summary.history} == {"val"}
    assert summary.dev_score == records.parent.data.metrics["dev_score"] and "accuracy" in summary.dev_metrics
    data = summary.data
    assert (data["task"], data["dev_split"], data["train_rows"], data["val_rows"], data["dev_rows"], data["seed"]) == \
        ("sst2", "dev", 300, 100, 64, 0)
    metrics = set(best.data.metrics)
    assert {"val_score", "val_accuracy", "score_at_target"} <= metrics and not {"score", "accuracy"} & metrics
    assert all(t["status"] != "stopped_early" or t["trial_id"] != best_id for t in _trials(searched.root, "s-False"))


def test_a_reclaiming_final_budget_trains_the_steps_asha_saved(searched, tiny_dir):
    """Trials of 2 x 4 + 4 steps under ASHA (rungs at 4 and 8 steps): what the stopped ones did not train is added
    to the final budget's 4 steps.  The search is seeded, so the same trials stop every time."""
    root = searched.root
    out = _search(tiny_dir, root, root / "true", "s-reclaim", 5, "--scheduler", "asha", "--grace-period", "4",
                  "--final-budget", "4", "--final-reclaim", "--final-eval-every", "100")
    rows = _trials(root, "s-reclaim")
    stopped = [r["steps"] for r in rows if r["status"] == "stopped_early"]
    assert stopped and all(s in (4, 8) for s in stopped), rows   # ASHA stopped some, at its rungs
    assert all(r["steps"] == 12 for r in rows if r["status"] == "completed")
    total = 4 + sum(12 - s for s in stopped)
    assert f"final distillation: {total} steps ({total - 4} of them the trial steps the scheduler saved)" in out
    summary = saved_summary(root / "runs" / "s-reclaim" / "final" / "best")
    assert summary.final["steps"] == total and summary.final["budget"] == "4 steps + the trial steps saved"
    assert _records(root, "s-reclaim").parent.data.metrics["final_steps"] == total


def test_history_warm_start_moves_the_best_point_to_a_new_target(searched, tiny_dir):
    _search(tiny_dir, searched.root, _data_dir(searched.root / "h", False, searched.train), "s-4x", 1, "--target",
            "4x", "--warm-start", "history")
    c = count_parameters(load_classifier(str(tiny_dir), 2))
    tags = _records(searched.root, "s-True").parent.data.tags  # the latest earlier search is the nearest too
    embedding = float(tags["ladasearch.best.embedding_ratio"])
    share = embedding * c.embedding / (c.total / 5.0 - c.dense)
    space = SearchSpace.load("ratios").bounded(c, 4.0)
    expected = min(max(share * (c.total / 4.0 - c.dense) / c.embedding, space.embedding_ratio.low),
                   space.embedding_ratio.high)
    (trial,) = _trials(searched.root, "s-4x")
    config = dict(trial["config"])
    assert config.pop("method") == tags["ladasearch.best.method"]  # the space offers every method
    splits = tags["ladasearch.best.method"] == "hybrid"            # the pure methods take no split
    expected = {"embedding_ratio": expected, **({"svd_split": float(tags["ladasearch.best.svd_split"])}
                                                if splits else {})}
    assert config == pytest.approx(expected)


@needs_glue
def test_resume_keeps_the_optuna_study_and_the_warm_start_queue(tiny_dir, tmp_path):
    import optuna
    from optuna.trial import TrialState

    from ladasearch.search.study import journal_storage, study_file

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "ladasearch.cli"]
    args = _cli(tiny_dir, tmp_path, GLUE, "r", 4, "--scheduler", "fifo", "--warm-start", "corners",
                "--steps-per-round", "30")
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(cli + args, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    deadline, finished = time.time() + 600, []   # a loaded machine fine-tunes even the tiny teacher slowly
    while time.time() < deadline and first.poll() is None:
        time.sleep(1)
        if "search r:" not in (tmp_path / "first.log").read_text():  # the driver is still making the store
            continue
        try:
            finished = [c for c in _records(tmp_path, "r").children if c.info.status == "FINISHED"]
        except Exception:  # the store or the parent run is not there yet
            continue
        if finished:
            break
    assert first.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
    os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray it started
    assert finished, "no trial finished before the kill: " + (tmp_path / "first.log").read_text()[-2000:]
    first.wait()
    journal = study_file(tmp_path / "runs" / "r")
    before = optuna.load_study(study_name="r", storage=journal_storage(journal)).trials
    assert before and before[0].state == TrialState.COMPLETE

    done = subprocess.run(cli + ["resume", "r", "--storage", str(tmp_path / "runs")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    study = optuna.load_study(study_name="r", storage=journal_storage(journal))  # the same study, continued
    assert [t.params for t in study.trials[:len(before)]] == [t.params for t in before]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and not [t for t in study.trials if t.state == TrialState.WAITING]
    counts = count_parameters(load_classifier(str(tiny_dir), 2))
    warm = plan("corners", WarmContext(SearchSpace.load("ratios").bounded(counts, 5.0), counts, 5.0), 4)
    assert len(warm) >= 2  # and every warm start ran:
    assert all(any(t.params == pytest.approx(p.params) for t in complete) for p in warm)
    records = _records(tmp_path, "r")
    assert len(records.children) == 4 and records.parent.info.status == "FINISHED"


@pytest.mark.parametrize("status, at_target, outcome", [
    ("completed", 0.8, "completed"),
    ("stopped_early", 0.7, "stopped_at_target"),
    ("stopped_early", None, "stopped_before_target"),
    ("stopped_early", math.nan, "stopped_before_target"),
    ("failed", None, "failed"),
    ("interrupted", 0.7, "interrupted"),
    ("interrupted", None, "interrupted"),
])
def test_a_trials_outcome_has_one_definition(status, at_target, outcome):
    from ladasearch.search.results import OUTCOMES, TrialRow

    row = TrialRow("t", status, 0.5, 5.0, 2, None, {}, score_at_target=at_target)
    assert row.outcome == outcome and outcome in OUTCOMES


def test_a_trial_cut_off_by_the_stop_is_interrupted_not_stopped_early():
    """Its last report is a round in the middle (status stopped_early, as every report but the last), as for a
    trial the scheduler stopped: in a stopped search, what decides is whether its outcome was recorded."""
    from types import SimpleNamespace

    from ladasearch.search.results import gather
    from ladasearch.search.worker import SUMMARY_KEY

    def result(i, status, rounds, error=None):
        summary = _summary(5.0, [(2.5, 0.6), (5.0, 0.7)][:rounds], status) if rounds else None
        metrics = {"trial_id": f"t{i}", SUMMARY_KEY: json.dumps(summary.to_json())} if rounds else {}
        return SimpleNamespace(metrics=metrics, error=error, checkpoint=None, path=f"/runs/t{i}", config={})

    grid = [result(0, "completed", 2), result(1, "stopped_early", 1), result(2, "stopped_early", 2),
            result(3, "stopped_early", 1), result(4, "stopped_early", 2), result(5, "", 0),
            result(6, "stopped_early", 1, error=RuntimeError("boom")), result(7, "completed", 2)]
    recorded = {"t1", "t2"}   # the scheduler stopped those two (their outcome tags are set)
    rows = [t.row for t in gather(grid, lambda trial_id: trial_id in recorded)]
    assert [r.outcome for r in rows] == ["completed", "stopped_before_target", "stopped_at_target", "interrupted",
                                         "interrupted", "interrupted", "failed", "completed"]
    assert rows[4].score_at_target == 0.7   # what it reported stays; it is not ranked (no checkpoint)
    # a search that ended: nobody asks, and every trial that did not complete was stopped by the scheduler
    assert [t.row.outcome for t in gather(grid)][3:6] == ["stopped_before_target", "stopped_at_target",
                                                          "stopped_before_target"]


def test_the_final_budget_reclaims_the_steps_early_stops_saved():
    """Each stopped trial's full length by its own knobs (here rounds are searched) less the steps it trained;
    completed and failed trials saved nothing, nor did a stopped one that reported no steps."""
    space = SearchSpace.from_dict({"name": "r", "method": "svd", "ratios": {"embedding_ratio": {"choices": [0.5]}},
                                   "train": {"rounds": {"choices": [1, 4]}}})
    payload = SimpleNamespace(space=space, train_cfg=TrainConfig(rounds=2, steps_per_round=20, final_steps=10))
    stage = FinalStage(SimpleNamespace(final=FinalBudget(100, reclaim=True)), payload, "cpu")

    def row(status, steps, rounds):
        return TrialRow("t", status, 0.5, 5.0, 1, None, {"rounds": rounds}, steps=steps)

    rows = [row("completed", 90, 4), row("stopped_early", 20, 4), row("stopped_early", 20, 1),
            row("failed", 20, 4), row("stopped_early", None, 4)]
    assert stage.saved_steps(rows) == (4 * 20 + 10 - 20) + (1 * 20 + 10 - 20)
    assert stage.saved_steps([]) == 0
