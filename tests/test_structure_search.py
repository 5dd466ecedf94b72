"""The structure ratio as a searched and command-line dimension: `structured_ratio` in a space (parsed, checked,
round-tripped, solved on eq. 7 with the teacher's widths, warm-started at 1), `compress --structured-ratio`,
`--structure-score`, and the ratio table's `structure` column."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import build_tiny, target_tolerance
from ladasearch.cli.commands import main
from ladasearch.compress import Ratios, budget, count_parameters, make_plan
from ladasearch.compress.structure import Widths
from ladasearch.config import CompressionConfig, TrainConfig
from ladasearch.errors import LadaError
from ladasearch.search import SearchSpace
from ladasearch.search.space import Param
from ladasearch.search.warm_start import PastBest, WarmContext, plan
from ladasearch.search.worker import trial_params


def _space(structured, **ratios):
    return SearchSpace.from_dict({"method": "hybrid", "ratios": {"embedding_ratio": {"low": 0.02, "high": 1.0},
                                                                 "structured_ratio": structured, **ratios}})


@pytest.fixture(scope="module")
def tiny():
    model = build_tiny(0)
    return count_parameters(model), Widths.of(model.config)


# ---- the space ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, values, structured", [
    ({"low": 0.3, "high": 0.9}, [0.3, 0.9], True),
    ({"low": 0.5, "high": 1.0, "log": True}, [0.5, 1.0], True),
    (0.6, [0.6], True),
    (1.0, [1.0], False),
    ({"choices": [0.5, 0.75, 1.0]}, [0.5, 0.75, 1.0], True),
])
def test_structured_ratio_parses_and_round_trips(spec, values, structured):
    space = _space(spec)
    assert space.structured_ratio.values() == values and space.structured is structured
    assert "structured_ratio" in [p.name for p in space.params()]
    assert SearchSpace.from_dict(space.to_dict()) == space
    assert space.to_dict()["ratios"]["structured_ratio"] == (spec if not isinstance(spec, dict) or "choices" in spec
                                                             else {"log": False, **spec})


@pytest.mark.parametrize("spec, message", [
    (0, r"structured_ratio: 0 is outside \(0, 1\] \(the share of heads and FFN neurons kept"),
    (1.5, r"structured_ratio: 1.5 is outside \(0, 1\]"),
    ({"low": 0.0, "high": 0.8}, r"structured_ratio: 0.0 is outside \(0, 1\]"),
    ({"choices": [0.5, 2]}, r"structured_ratio: 2 is outside \(0, 1\]"),
    ("x", "structured_ratio: expected float, got 'x'"),
    ({"low": 0.9, "high": 0.4}, "structured_ratio: low 0.9 is above high 0.4"),
])
def test_bad_structured_ratio(spec, message):
    with pytest.raises(LadaError, match=message):
        _space(spec)


def test_structured_ratio_is_refused_with_the_papers_ratios():
    with pytest.raises(LadaError, match="structured_ratio is not allowed with ratios: paper"):
        replace(SearchSpace.load("paper"), structured_ratio=Param("structured_ratio", value=0.5))
    with pytest.raises(LadaError, match=r"unknown key\(s\) \['structured_ratio'\]"):
        SearchSpace.from_dict({"method": "hybrid", "ratios": "paper", "structured_ratio": 0.5})


@pytest.mark.parametrize("name, bounds", [("default", (0.4, 1.0)), ("structured", (0.3, 0.9)), ("ratios", None),
                                          ("paper", None), ("svd_only", None), ("prune_only", None),
                                          ("no_distill", None)])
def test_shipped_spaces(name, bounds):
    space = SearchSpace.load(name)
    got = None if space.structured_ratio is None else (space.structured_ratio.low, space.structured_ratio.high)
    assert got == bounds
    assert SearchSpace.from_dict(space.to_dict()) == space
    assert ("structured_ratio" in json.dumps(space.to_dict())) is (bounds is not None)


# ---- the budget ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, target", [("structured", 5.0), ("default", 5.0), ("structured", 3.0)])
def test_sampled_structured_points_meet_the_target(tiny, name, target):
    import optuna

    counts, widths = tiny
    space = SearchSpace.load(name).bounded(counts, target)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    met = 0
    for _ in range(30):
        trial = study.ask()
        config = {**space.define_by_run(trial), **trial.params}
        try:
            ratios = space.ratios(config, counts, target, widths)
        except LadaError as exc:  # the removal left the encoder a ratio above 1 at this embedding: rejected
            assert "outside (0, 1]" in str(exc) and "structure ratio" in str(exc)
            continue
        assert ratios.structure == config["structured_ratio"]
        assert budget(counts, ratios, widths) == pytest.approx(counts.total / target, rel=1e-6)
        met += ratios.structure < 1
    assert met >= 10


def test_a_structured_point_needs_the_widths(tiny):
    counts, widths = tiny
    space = SearchSpace.load("structured").bounded(counts, 5.0)
    config = {"embedding_ratio": 0.1, "svd_split": 0.5, "structured_ratio": 0.5}
    with pytest.raises(LadaError, match="structure ratio 0.5 needs the model's widths"):
        space.ratios(config, counts, 5.0)
    ratios = space.ratios(config, counts, 5.0, widths)
    # removal shrinks the encoder, so what is left keeps more of itself than without removal
    assert ratios.encoder > space.ratios({**config, "structured_ratio": 1.0}, counts, 5.0).encoder
    assert budget(counts, ratios, widths) == pytest.approx(counts.total / 5.0, rel=1e-6)


def test_trial_params_name_the_structure_only_when_units_are_removed(tiny):
    counts, widths = tiny
    model = build_tiny(0)
    space = SearchSpace.load("structured")
    config = {"embedding_ratio": 0.1, "svd_split": 0.5}
    for structure, expected in ((0.5, 0.5), (1.0, None)):
        ratios = space.ratios({**config, "structured_ratio": structure}, counts, 5.0, widths)
        params = trial_params(ratios, 5.0, TrainConfig(), make_plan(model, ratios))
        assert params.get("structured_ratio") == expected
        assert ratios.record().to_json().get("structure") == expected


# ---- warm starts ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [({"low": 0.4, "high": 1.0}, 1.0), ({"low": 0.3, "high": 0.9}, 0.9),
                                            ({"choices": [0.5, 0.8]}, 0.8), (0.6, None)])
def test_warm_starts_keep_heads_and_neurons(tiny, spec, expected):
    counts, _ = tiny
    space = _space(spec, svd_split={"low": 0.0, "high": 1.0}).bounded(counts, 5.0)
    points = plan("corners", WarmContext(space, counts, 5.0), 10)
    assert len(points) >= 2
    assert [p.params.get("structured_ratio") for p in points] == [expected] * len(points)
    assert all("structured_ratio" not in p.params for p in plan(
        "corners", WarmContext(SearchSpace.load("ratios").bounded(counts, 5.0), counts, 5.0), 10))


def test_default_space_warm_starts_at_one_and_history_keeps_its_structure(tiny):
    counts, widths = tiny
    space = SearchSpace.load("default").bounded(counts, 5.0)
    corners = plan("corners", WarmContext(space, counts, 5.0), 10)
    assert corners and all(p.params["structured_ratio"] == 1.0 for p in corners)
    past = space.ratios({"embedding_ratio": 0.1, "svd_split": 0.5, "structured_ratio": 0.6}, counts, 5.0, widths)
    (point,) = plan("history", WarmContext(space, counts, 5.0, (PastBest("old", 5.0, past.record()),)), 10)
    assert point.params["structured_ratio"] == 0.6 and point.params["svd_split"] == pytest.approx(0.5)


# ---- the command line -------------------------------------------------------------------------------------

def _compress(glue_dir, model, *extra):
    return ["compress", "--task", "sst2", "--data-dir", str(glue_dir), "--model", str(model), "--max-train", "20",
            "--max-dev", "10", "--target", "5x", *extra]


def _one_error_line(result, *fragments):
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("extra, fragments", [
    (("--structured-ratio", "0"), ("--structured-ratio", "0<x<=1")),
    (("--structured-ratio", "1.5"), ("--structured-ratio", "0<x<=1")),
    (("--structured-ratio", "x"), ("--structured-ratio", "'x' is not a valid float")),
    (("--structure-score", "nope"), ("--structure-score", "unknown unit score 'nope'; allowed: activation, taylor")),
    (("--paper-ratios", "--structured-ratio", "0.5"), ("--paper-ratios", "--structured-ratio 0.5")),
    (("--structured-ratio", "nan", "--svd-ratio", "0.8", "--weight-ratio", "0.5"),
     ("structure ratio must be a retention fraction in (0, 1], got nan",)),
])
def test_bad_structure_options(cache_dir, glue_dir, tiny_cli_model, extra, fragments):
    _one_error_line(CliRunner().invoke(main, _compress(glue_dir, tiny_cli_model, *extra)), *fragments)


def test_run_refuses_an_unknown_structure_score(tmp_path):
    result = CliRunner().invoke(main, ["run", "--task", "sst2", "--target", "5x", "--structure-score", "nope",
                                       "--storage", str(tmp_path)])
    _one_error_line(result, "--structure-score", "unknown unit score 'nope'")


@pytest.mark.parametrize("extra, score", [((), "taylor"), (("--structure-score", "activation"), "activation")])
def test_run_puts_the_structure_score_into_the_compression(monkeypatch, tmp_path, extra, score):
    import ladasearch.cli.commands as cli  # run_search as the command looks it up

    seen = []

    def capture(settings, log):
        seen.append(settings)
        raise LadaError("captured")

    monkeypatch.setattr(cli, "run_search", capture)
    result = CliRunner().invoke(main, ["run", "--task", "sst2", "--target", "5x", "--name", "x", "--space",
                                       "structured", "--storage", str(tmp_path), *extra])
    _one_error_line(result, "captured")
    (settings,) = seen
    assert settings.compression == CompressionConfig(structure_score=score)
    assert settings.space.structured_ratio == SearchSpace.load("structured").structured_ratio


@pytest.mark.parametrize("score", ["taylor", "activation"])
def test_compress_with_a_structured_ratio(cache_dir, glue_dir, tiny_cli_model, tmp_path, score):
    from ladasearch.report.records import LoadedTrial
    from ladasearch.report.table import format_table, ratio_table
    from ladasearch.summary import TrialSummary

    out = tmp_path / "out"
    result = CliRunner().invoke(main, _compress(
        glue_dir, tiny_cli_model, "--svd-ratio", "0.8", "--weight-ratio", "0.5", "--structured-ratio", "0.5",
        "--structure-score", score, "--teacher-steps", "1", "--rounds", "2", "--steps-per-round", "1",
        "--final-steps", "1", "--batch-size", "8", "--out", str(out)))
    assert result.exit_code == 0, (result.output, result.exception)
    assert any(line.startswith("ratios: embedding ") and ", structure 0.5000 (hybrid)" in line
               for line in result.stdout.splitlines())
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed["ratios"]["structure"] == 0.5
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ratios"]["structure"] == 0.5
    assert summary["achieved_factor"] == pytest.approx(5.0, rel=0.01)
    assert summary["student_params"]["total"] < summary["teacher_params"]["total"] / 5 * 1.01

    (row,) = ratio_table([LoadedTrial(TrialSummary.from_json(summary))])
    assert row["structure"] == pytest.approx(2.0)
    header, _, line = format_table([row], "md").splitlines()
    assert "| Encoder | Structure |" in header and "| 2.00x |" in line


def test_table_has_no_structure_column_without_structured_trials(tiny):
    from ladasearch.report.records import LoadedTrial
    from ladasearch.report.table import format_table, ratio_table
    from ladasearch.summary import ParamRecord, RatioRecord, TrialSummary

    counts, _ = tiny

    def summary(structure):
        return TrialSummary(task="sst2", main_metric="accuracy", ratios=RatioRecord("hybrid", 0.2, 0.5, 0.4, structure),
                            achieved_factor=5.0, teacher_params=counts, student_params=ParamRecord(1, 1, 1),
                            matrices=(), score=0.8, metrics={}, history=(), target=5.0)

    plain = ratio_table([LoadedTrial(summary(1.0))])
    assert plain[0]["structure"] is None and "structure" not in format_table(plain, "csv").splitlines()[0]
    mixed = ratio_table([LoadedTrial(summary(1.0)), LoadedTrial(summary(0.25))], best_only=False)
    assert sorted(str(r["structure"]) for r in mixed) == ["4.0", "None"]
    assert "structure" in format_table(mixed, "csv").splitlines()[0]



# ---- a real search of the default space --------------------------------------------------------------------

def test_a_search_of_the_default_space_removes_heads_and_neurons(glue_dir, tiny_dir, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from ladasearch.config import DataConfig, TeacherConfig
    from ladasearch.models import load_classifier
    from ladasearch.search import SearchConfig, SearchSettings, run_search
    from ladasearch.summary import TrialSummary

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = SearchConfig(name="st", target=5.0, num_samples=4, max_concurrent=2, sampler="random", scheduler="fifo",
                       warm_start="corners", storage=str(tmp_path / "runs"), tracking_uri=uri)
    outcome = run_search(SearchSettings(
        DataConfig("sst2", str(glue_dir), max_train=64, max_dev=16, val_size=16), str(tiny_dir), cfg,
        SearchSpace.load("default"), TeacherConfig(steps=2), TrainConfig(rounds=2, steps_per_round=2, final_steps=1,
                                                                         batch_size=8),
        cache_dir=str(tmp_path / "cache")), log=lambda line: None)

    model = load_classifier(str(tiny_dir), 2)
    counts, widths = count_parameters(model), Widths.of(model.config)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ladasearch")
    children = client.search_runs([exp.experiment_id], "tags.`ladasearch.role` = 'trial'")
    assert len(children) == 4
    structured = 0
    for child in children:
        p, outcome_tag = child.data.params, child.data.tags["ladasearch.outcome"]
        sampled = float(p["config.structured_ratio"])
        if outcome_tag == "failed":  # rejected untrained: the removal left the encoder a ratio above 1
            assert sampled < 1 and "structure ratio" in child.data.tags["ladasearch.error"]
            continue
        assert float(p.get("structured_ratio", 1.0)) == sampled
        ratios = Ratios(float(p["embedding_ratio"]), float(p["svd_ratio"]), float(p["weight_ratio"]),
                        method=p["method"], structure=sampled)
        assert budget(counts, ratios, widths) == pytest.approx(counts.total / 5.0, rel=1e-6)
        path = client.download_artifacts(child.info.run_id, "summary.json", str(tmp_path / child.info.run_id))
        summary = TrialSummary.from_json(json.loads(Path(path).read_text()))
        assert summary.ratios.structure == sampled
        assert summary.achieved_factor == pytest.approx(5.0, rel=target_tolerance(p["method"]))
        structured += sampled < 1
    corners = [c for c in children if c.data.params["config.structured_ratio"] == "1.0"]
    assert len(corners) >= 2  # the warm starts: the paper's recipe, no unit removed
    assert structured >= 1, [c.data.params.get("config.structured_ratio") for c in children]
    assert outcome.best is not None and \
        outcome.best.achieved_factor == pytest.approx(5.0, rel=target_tolerance(outcome.best.ratios.method))
