"""Data-aware compression wired through the jobs: the statistics cache, `compress`, search-space keys, the
search's shared statistics, the ratio table, bf16."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner
from conftest import GLUE_DIR

from ladasearch.train import ladabert
from ladasearch.jobs.calibration_cache import CalibrationRequest, cache_folder, cached_statistics
from ladasearch.cli.commands import main
from ladasearch.compress import calibration, count_parameters, make_plan
from ladasearch.compress.calibration import CalibrationStats, collect_statistics, plugin_needs
from ladasearch.config import CompressionConfig, DataConfig, TeacherConfig, TrainConfig
from ladasearch.data import TASKS
from ladasearch.errors import LadaError
from ladasearch.search import SearchConfig, SearchSettings, SearchSpace
from ladasearch.search.calibration import compression_params, search_needs, trial_statistics
from ladasearch.jobs.teacher import Teacher

SST2 = TASKS["sst2"]
GLUE = GLUE_DIR  # conftest: the shared GLUE folder
needs_glue = pytest.mark.skipif(not GLUE.is_dir(), reason="shared GLUE data not found")


@pytest.fixture
def counted(monkeypatch):
    """collect_statistics, counting its calls (the cache and the loop call it through its module)."""
    calls = []
    real = calibration.collect_statistics

    def collect(teacher, train, needs, **kw):
        calls.append(frozenset(needs))
        return real(teacher, train, needs, **kw)

    monkeypatch.setattr(calibration, "collect_statistics", collect)  # the calibration cache's gathering
    monkeypatch.setattr(ladabert, "collect_statistics", collect)     # the loop's own (no cache given)
    return calls


def _prepared(features, fingerprint="rows-a"):
    return SimpleNamespace(train=features, data=SimpleNamespace(train_fingerprint=fingerprint, task=SST2))


def _teacher(model, path: Path) -> Teacher:
    path.mkdir(parents=True, exist_ok=True)
    return Teacher(model, path, {}, 0.5, cached=True)


def _request(needs, batches=2, batch_size=8, max_length=16):
    return CalibrationRequest(frozenset(needs), batches, batch_size, max_length)


def _same(a: CalibrationStats, b: CalibrationStats, needs) -> None:
    assert list(a.layers) == list(b.layers)
    for name, layer in a.layers.items():
        for stat in needs:
            left, right = getattr(layer, stat), getattr(b.layer(name), stat)
            assert (left is None) == (right is None)
            if left is not None:
                assert torch.equal(left, right)


# ---------------------------------------------------------------------------------------- which statistics


@pytest.mark.parametrize("factorizer, score, method, needs", [
    ("svd", "magnitude", "hybrid", set()),
    ("svd", "taylor", "hybrid", set()),
    ("fisher", "taylor", "hybrid", {"row_fisher"}),
    ("activation", "magnitude", "hybrid", {"input_gram", "token_counts"}),
    ("fisher", "wanda", "hybrid", {"row_fisher", "input_gram", "token_counts"}),
    ("fisher", "magnitude", "prune", set()),        # nothing factorized: the factorizer's needs are not gathered
    ("svd", "wanda", "svd", set()),                 # nothing pruned: the score's are not
    ("activation", "wanda", "prune", {"input_gram", "token_counts"}),
])
def test_plugin_needs_follow_what_the_plans_use(tiny_model, ratios_for, factorizer, score, method, needs):
    plans = make_plan(tiny_model, ratios_for(count_parameters(tiny_model), 5.0, method))
    assert plugin_needs((factorizer,), (score,), plans) == needs


def test_plugin_needs_names_an_unknown_plugin():
    with pytest.raises(LadaError, match="unknown factorizer 'nope'; allowed: activation, fisher, svd"):
        plugin_needs(("nope",), ())


# ---------------------------------------------------------------------------------------- the cache


def test_cache_beside_a_cached_teacher_is_reused_also_for_fewer_statistics(tiny_model, tiny_features, tmp_path,
                                                                           counted):
    cache = tmp_path / "cache"
    teacher = _teacher(tiny_model, cache / "teachers" / "t1")
    prepared, lines = _prepared(tiny_features[0]), []
    first = cached_statistics(teacher, prepared, _request({"row_fisher", "input_gram"}), "cpu", cache, lines.append)
    assert counted == [{"row_fisher", "input_gram"}] and "gathered" in lines[-1]
    folder = cache_folder(teacher, "rows-a", _request({"input_gram"}), cache)
    assert folder.parent == teacher.path / "calibration"
    assert (folder / "input_gram+row_fisher" / "statistics.json").is_file()

    again = cached_statistics(teacher, prepared, _request({"input_gram"}), "cpu", cache, lines.append)
    assert len(counted) == 1 and lines[-1].startswith("calibration: input_gram from 2 batches of 8 reused from")
    direct = collect_statistics(tiny_model, tiny_features[0], {"row_fisher", "input_gram"}, batches=2, batch_size=8,
                                task=SST2)
    _same(first, direct, ("row_fisher", "input_gram"))
    _same(again, direct, ("row_fisher", "input_gram"))
    assert again.covers({"input_gram"}) and (again.batches, again.examples) == (2, 16)


@pytest.mark.parametrize("change", [
    {"request": _request({"input_gram"}, batches=3)},
    {"request": _request({"input_gram"}, batch_size=4)},
    {"request": _request({"input_gram"}, max_length=32)},
    {"request": _request({"input_gram", "token_counts"})},   # more than the entry holds
    {"fingerprint": "rows-b"},                               # other train rows
])
def test_another_draw_or_data_is_gathered_anew(tiny_model, tiny_features, tmp_path, counted, change):
    cache = tmp_path / "cache"
    teacher = _teacher(tiny_model, cache / "teachers" / "t1")
    cached_statistics(teacher, _prepared(tiny_features[0]), _request({"input_gram"}), "cpu", cache, lambda s: None)
    cached_statistics(teacher, _prepared(tiny_features[0], change.get("fingerprint", "rows-a")),
                      change.get("request", _request({"input_gram"})), "cpu", cache, lambda s: None)
    assert len(counted) == 2


def test_a_user_teacher_folder_is_never_written_and_its_weights_key_the_cache(make_tiny, tiny_features, tmp_path,
                                                                            counted):
    cache, user = tmp_path / "cache", tmp_path / "my_teacher"
    teacher = _teacher(make_tiny(0), user)
    (user / "config.json").write_text("{}")
    for _ in range(2):
        cached_statistics(teacher, _prepared(tiny_features[0]), _request({"input_sq"}), "cpu", cache, lambda s: None)
    assert len(counted) == 1
    assert [p.name for p in user.iterdir()] == ["config.json"]
    assert cache_folder(teacher, "rows-a", _request({"input_sq"}), cache).parent == cache / "calibration"
    other = _teacher(make_tiny(1), user)  # same folder, other weights: not the same statistics
    cached_statistics(other, _prepared(tiny_features[0]), _request({"input_sq"}), "cpu", cache, lambda s: None)
    assert len(counted) == 2


def test_nothing_needed_gathers_nothing(tiny_model, tiny_features, tmp_path, counted):
    teacher = _teacher(tiny_model, tmp_path / "cache" / "teachers" / "t1")
    assert cached_statistics(teacher, _prepared(tiny_features[0]), _request(()), "cpu", tmp_path / "cache") is None
    assert counted == [] and not (teacher.path / "calibration").exists()


def test_an_unreadable_entry_is_gathered_anew(tiny_model, tiny_features, tmp_path, counted):
    cache, lines = tmp_path / "cache", []
    teacher = _teacher(tiny_model, cache / "teachers" / "t1")
    cached_statistics(teacher, _prepared(tiny_features[0]), _request({"input_sq"}), "cpu", cache, lines.append)
    entry = cache_folder(teacher, "rows-a", _request({"input_sq"}), cache) / "input_sq"
    (entry / "statistics.safetensors").write_bytes(b"broken")
    stats = cached_statistics(teacher, _prepared(tiny_features[0]), _request({"input_sq"}), "cpu", cache,
                              lines.append)
    assert len(counted) == 2 and stats.layer("bert.pooler.dense").input_sq is not None
    assert any("unreadable" in line for line in lines)


# ---------------------------------------------------------------------------------------- `compress`


def _compress_args(glue_dir, model, out, *extra):
    return ["compress", "--task", "sst2", "--data-dir", str(glue_dir), "--model", str(model), "--max-train", "40",
            "--max-dev", "10", "--val-size", "16", "--target", "5x", "--embedding-ratio", "0.19", "--svd-ratio", "0.8",
            "--teacher-steps", "2", "--rounds", "2", "--steps-per-round", "2", "--final-steps", "1",
            "--batch-size", "8", "--calibration-batches", "3", "--out", str(out), *extra]


def test_second_compress_reuses_the_cached_statistics(glue_dir, tiny_cli_model, tmp_path, cache_dir, counted):
    runner, outputs = CliRunner(), []
    for run in range(2):
        out = tmp_path / f"out{run}"
        result = runner.invoke(main, _compress_args(glue_dir, tiny_cli_model, out, "--factorizer", "fisher",
                                                    "--prune-score", "wanda"))
        assert result.exit_code == 0, (result.output, result.exception)
        outputs.append((result.stdout, json.loads((out / "summary.json").read_text())))
    assert counted == [{"row_fisher", "input_gram", "token_counts"}]  # gathered by the first run only
    first, second = outputs
    assert "calibration: input_gram, row_fisher, token_counts from 3 batches of 8 gathered" in first[0]
    assert "reused from" in second[0] and "gathered" not in second[0]
    (teacher,) = (cache_dir / "teachers").iterdir()
    (entry,) = (teacher / "calibration").iterdir()
    assert [p.name for p in entry.iterdir()] == ["input_gram+row_fisher+token_counts"]
    # the cached numbers are the gathered ones: both runs train the same student
    assert (second[1]["factorizer"], second[1]["prune_score"]) == ("fisher", "wanda")
    for a, b in zip(first[1]["history"], second[1]["history"], strict=True):
        assert (a["losses"], a["score"], a["params"]) == (b["losses"], b["score"], b["params"])


def test_bf16_compress_with_fisher_and_taylor_lands_on_the_target(glue_dir, tiny_cli_model, tmp_path, cache_dir,
                                                                  counted):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, _compress_args(glue_dir, tiny_cli_model, out, "--precision", "bf16",
                                                     "--factorizer", "fisher", "--prune-score", "taylor"))
    assert result.exit_code == 0, (result.output, result.exception)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["achieved_factor"] == pytest.approx(5.0, rel=0.01)
    assert (summary["factorizer"], summary["prune_score"]) == ("fisher", "taylor") and counted == [{"row_fisher"}]
    (entry,) = (cache_dir / "teachers").glob("*/calibration/*/row_fisher")
    stats = CalibrationStats.load(entry)
    assert {layer.row_fisher.dtype for layer in stats.layers.values()} == {torch.float32}
    assert all(torch.isfinite(layer.row_fisher).all() for layer in stats.layers.values())


# ---------------------------------------------------------------------------------------- the search space


def _space(compression, method="hybrid"):
    data = {"method": method, "ratios": {"embedding_ratio": {"low": 0.1, "high": 0.5}}}
    return SearchSpace.from_dict({**data, "compression": compression} if compression is not None else data)


def test_default_space_searches_every_factorizer_and_score():
    space = SearchSpace.load("default")
    assert space.compression.factorizer.choices == ("svd", "fisher", "activation")
    assert space.compression.prune_score.choices == ("magnitude", "taylor", "wanda")
    assert SearchSpace.from_dict(space.to_dict()) == space
    assert search_needs(space, CompressionConfig()) == {"row_fisher", "input_gram", "token_counts"}


@pytest.mark.parametrize("compression, message", [
    ({"factorizer": {"choices": ["svd", "nope"]}},
     "compression.factorizer: unknown factorizer 'nope'; allowed: activation, fisher, svd"),
    ({"prune_score": "nope"}, "compression.prune_score: unknown pruning score 'nope'; allowed: magnitude, movement"),
    ({"rank": "svd"}, r"compression: unknown key\(s\) \['rank'\]; allowed: factorizer, prune_score"),
    ({"factorizer": {"low": "a", "high": "b"}}, "compression.factorizer: a registered name or {choices: "),
    ({"factorizer": {"choices": ["svd", "svd"]}}, "name one twice"),
    ({"factorizer": 3}, "compression.factorizer: expected str, got 3"),
    (["svd"], "compression must be a mapping with keys factorizer, prune_score"),
])
def test_bad_compression_section(compression, message):
    with pytest.raises(LadaError, match=message):
        _space(compression)


@pytest.mark.parametrize("compression, method, needs", [
    (None, "hybrid", set()),                                                     # the run's svd + magnitude
    ({"factorizer": "fisher"}, "hybrid", {"row_fisher"}),
    ({"factorizer": {"choices": ["svd", "activation"]}, "prune_score": "taylor"}, "hybrid",
     {"input_gram", "token_counts"}),
    ({"factorizer": "fisher", "prune_score": "wanda"}, "svd", {"row_fisher"}),   # svd prunes nothing
    ({"factorizer": "fisher", "prune_score": "wanda"}, "prune", {"input_gram", "token_counts"}),
])
def test_search_gathers_the_union_of_what_its_choices_need(compression, method, needs):
    space = _space(compression, method)
    assert search_needs(space, CompressionConfig()) == needs
    assert SearchSpace.from_dict(space.to_dict()) == space


def test_sampled_names_are_categoricals_and_make_the_trial_compression():
    import optuna

    space = _space({"factorizer": {"choices": ["svd", "fisher", "activation"]}, "prune_score": "wanda"})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        config = {**space.define_by_run(trial), **trial.params}
        dist = trial.distributions["compression.factorizer"]
        assert isinstance(dist, optuna.distributions.CategoricalDistribution)
        assert "compression.prune_score" not in trial.distributions and config["compression.prune_score"] == "wanda"
        chosen = space.compression.config(CompressionConfig(calibration_batches=5), config)
        assert chosen == CompressionConfig(config["compression.factorizer"], "wanda", 5)
        seen.add(chosen.factorizer)
        study.tell(trial, 0.0)
    assert seen == {"svd", "fisher", "activation"}
    # a key the space leaves out takes the run's own setting
    assert _space(None).compression.config(CompressionConfig("fisher", "taylor"), {}) == \
        CompressionConfig("fisher", "taylor")


def test_fixed_pins_a_choice_and_checks_the_name():
    space = SearchSpace.load("default")
    pinned = space.compression.fixed(factorizer="fisher")
    assert pinned.factorizer.value == "fisher" and pinned.prune_score == space.compression.prune_score
    with pytest.raises(LadaError, match="unknown factorizer 'nope'"):
        space.compression.fixed(factorizer="nope")


@pytest.mark.parametrize("extra, factorizer, prune_score", [
    ((), ("svd", "fisher", "activation"), ("magnitude", "taylor", "wanda")),
    (("--factorizer", "fisher"), "fisher", ("magnitude", "taylor", "wanda")),
    (("--prune-score", "taylor", "--factorizer", "svd"), "svd", "taylor"),
])
def test_run_options_given_pin_the_space(monkeypatch, tmp_path, extra, factorizer, prune_score):
    import ladasearch.cli.commands as cli  # run_search as the command looks it up

    seen = []

    def capture(settings, log):
        seen.append(settings)
        raise LadaError("captured")

    monkeypatch.setattr(cli, "run_search", capture)
    result = CliRunner().invoke(main, ["run", "--task", "sst2", "--target", "5x", "--name", "x",
                                       "--storage", str(tmp_path), *extra])
    assert result.exit_code == 2 and "captured" in result.stderr
    choices = seen[0].space.compression
    for param, expected in ((choices.factorizer, factorizer), (choices.prune_score, prune_score)):
        assert (param.value if param.fixed else param.choices) == expected


# ---------------------------------------------------------------------------------------- trials and reports


def test_a_trial_takes_the_payload_statistics_or_fails(tiny_model, tiny_features, ratios_for):
    plans = make_plan(tiny_model, ratios_for(count_parameters(tiny_model), 5.0))
    shared = collect_statistics(tiny_model, tiny_features[0], {"input_gram", "token_counts"}, batches=1, batch_size=8)
    assert trial_statistics(shared, CompressionConfig("activation", "wanda"), plans) is shared
    assert trial_statistics(None, CompressionConfig("svd", "taylor"), plans) is None
    with pytest.raises(LadaError, match="the trial's fisher \\+ magnitude need the calibration statistics row_fisher; "
                                        "the search gathered: input_gram, token_counts"):
        trial_statistics(shared, CompressionConfig("fisher", "magnitude"), plans)
    with pytest.raises(LadaError, match="the search gathered: none"):
        trial_statistics(None, CompressionConfig("activation", "magnitude"), plans)
    assert compression_params(CompressionConfig("activation", "wanda"), shared) == {
        "factorizer": "activation", "prune_score": "wanda", "structure_score": "taylor", "calibration.source": "payload",
        "calibration.batches": 1, "calibration.examples": 8, "calibration.needs": "input_gram,token_counts"}
    assert compression_params(CompressionConfig(), None)["calibration.source"] == "none"


def test_ratio_table_has_the_factorizer_and_score(tiny_model, tiny_features, ratios_for):
    import ladasearch
    from ladasearch.report.records import LoadedTrial
    from ladasearch.report.table import format_table, ratio_table

    ratios = ratios_for(count_parameters(tiny_model), 5.0)
    result = ladasearch.compress_model(
        tiny_model, *tiny_features, SST2, ratios, TrainConfig(rounds=1, steps_per_round=1, final_steps=0, batch_size=8),
        compression=CompressionConfig("fisher", "taylor", calibration_batches=1))
    summary = result.summary(target=5.0, model="tiny", teacher="t")
    (row,) = ratio_table([LoadedTrial(summary)])
    assert (row["factorizer"], row["prune_score"]) == ("fisher", "taylor")
    header, rule, line = format_table([row], "md").splitlines()
    assert "| Method | Factorizer | Prune score | Target |" in header and "| hybrid | fisher | taylor | 5.00x |" in line
    assert "factorizer,prune_score" in format_table([row], "csv").splitlines()[0]


@needs_glue
def test_search_trials_read_the_statistics_the_driver_gathered_once(tiny_dir, tmp_path, monkeypatch, counted):
    from mlflow.tracking import MlflowClient

    from ladasearch.search import run_search

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = replace(SearchSpace.load("ratios"), method_choices=None, compression=_space(  # hybrid: every plug-in
        {"factorizer": {"choices": ["fisher", "activation"]}, "prune_score": {"choices": ["taylor", "wanda"]}}
    ).compression)
    cfg = SearchConfig(name="s1", target=5.0, num_samples=2, max_concurrent=2, storage=str(tmp_path / "runs"),
                       tracking_uri=uri, scheduler="fifo")
    lines = []
    outcome = run_search(SearchSettings(
        DataConfig("sst2", str(GLUE), max_train=64, max_dev=16, val_size=16), str(tiny_dir), cfg, space,
        TeacherConfig(steps=2), TrainConfig(rounds=2, steps_per_round=2, final_steps=1, batch_size=8),
        compression=CompressionConfig(calibration_batches=2), cache_dir=str(tmp_path / "cache")), log=lines.append)

    assert counted == [{"row_fisher", "input_gram", "token_counts"}]  # once, in the driver, for every choice
    assert any(line.startswith("calibration: input_gram, row_fisher, token_counts from 2 batches of 8 gathered")
               for line in lines)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ladasearch")
    children = client.search_runs([exp.experiment_id], "tags.`ladasearch.role` = 'trial'")
    assert len(children) == 2
    for child in children:
        p = child.data.params
        assert p["calibration.source"] == "payload" and p["calibration.batches"] == "2"
        assert p["calibration.needs"] == "input_gram,row_fisher,token_counts"
        assert p["factorizer"] == p["config.compression.factorizer"] in ("fisher", "activation")
        assert p["prune_score"] == p["config.compression.prune_score"] in ("taylor", "wanda")
    best = outcome.best
    assert best is not None and best.achieved_factor == pytest.approx(5.0, rel=0.01)
    # the summary records the trial's own plug-ins (what the ratio table shows), as sampled
    assert (best.factorizer, best.prune_score) == (best.config["compression.factorizer"],
                                                   best.config["compression.prune_score"])
