"""A search space whose trials pick the compression method: the pure recipes are points of the space, the split
is sampled only for hybrid, and every point meets the target under its own method's accounting."""

from __future__ import annotations

import optuna
import pytest

from ladasearch.compress import count_parameters, make_plan
from ladasearch.config import CompressionConfig
from ladasearch.errors import LadaError
from ladasearch.search import SearchSpace
from ladasearch.search.calibration import search_needs

CHOICES = {"choices": ["hybrid", "prune", "svd"]}


def _space(method, split=None, **more):
    ratios = {"embedding_ratio": {"low": 0.02, "high": 1.0, "log": True}}
    if split is not None:
        ratios["svd_split"] = split
    return SearchSpace.from_dict({"name": "m", "method": method, "ratios": ratios, **more})


@pytest.fixture(scope="module")
def tiny():
    from conftest import build_tiny

    model = build_tiny(0)
    return model, count_parameters(model)


def test_each_trial_picks_a_method_and_only_hybrid_samples_the_split():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = _space(CHOICES, {"low": 0.0, "high": 1.0})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        assert space.define_by_run(trial) == {}
        params = trial.params
        seen.add(params["method"])
        assert ("svd_split" in params) == (params["method"] == "hybrid")
        study.tell(trial, 0.0)
    assert seen == {"hybrid", "prune", "svd"}


@pytest.mark.parametrize("method, svd, weight", [("prune", 1.0, None), ("svd", None, 1.0), ("hybrid", None, None)])
def test_a_pure_method_point_is_that_recipe_at_the_target(tiny, method, svd, weight):
    model, c = tiny
    space = _space(CHOICES, {"low": 0.0, "high": 1.0}).bounded(c, 4.0)
    embedding = (space.embedding_ratio.low * space.embedding_ratio.high) ** 0.5
    config = {"method": method, "embedding_ratio": embedding, **({"svd_split": 0.4} if method == "hybrid" else {})}
    ratios = space.ratios(config, c, 4.0)
    assert ratios.method == method
    if svd is not None:
        assert ratios.svd == svd
    if weight is not None:
        assert ratios.weight == weight
    if method == "hybrid":  # the sampled split, in log terms
        assert ratios.svd == pytest.approx(ratios.encoder ** 0.4)
    kept = ratios.embedding * c.embedding + ratios.encoder * c.encoder + c.dense
    assert kept == pytest.approx(c.total / 4.0)
    plans = make_plan(model, ratios)   # the plan follows the method: prune factorizes nothing, svd prunes nothing
    if method == "prune":
        assert all(p.rank() is None for p in plans)
    if method == "svd":
        assert all(p.rank() is not None for p in plans)


def test_choices_round_trip_and_name_the_default():
    space = SearchSpace.load("ratios")
    assert space.methods == ("hybrid", "prune", "svd") and space.method == "hybrid"
    assert SearchSpace.from_dict(space.to_dict()) == space
    assert _space({"choices": ["prune", "svd"]}).method == "prune"   # no hybrid: the first choice
    assert _space({"choices": ["svd"]}).method_choices is None        # one choice is a fixed method


@pytest.mark.parametrize("method, split, more, message", [
    ({"choices": ["hybrid", "dense"]}, None, {}, "method 'dense' is not one of hybrid, svd, prune"),
    ({"choices": ["prune", "prune"]}, None, {}, r"method: choices \['prune', 'prune'\] name one twice"),
    ({"choices": []}, None, {}, "method: a method name or {choices: \\[names\\]}"),
    ({"low": 0, "high": 1}, None, {}, "method: a method name or {choices: \\[names\\]}"),
    ({"choices": ["prune", "svd"]}, {"low": 0.0, "high": 1.0}, {}, "fixes svd_split"),
])
def test_bad_method_choices_are_refused(method, split, more, message):
    with pytest.raises(LadaError, match=message):
        _space(method, split, **more)


def test_paper_ratios_take_no_method_choice():
    with pytest.raises(LadaError, match="'paper' is the hybrid method's Table 2"):
        SearchSpace.from_dict({"name": "p", "method": CHOICES, "ratios": "paper"})


@pytest.mark.parametrize("methods, needs", [
    (["prune"], {"input_gram", "token_counts"}),       # wanda's; a space that never factorizes needs no fisher
    (["svd"], {"row_fisher"}),                         # fisher's; a space that never prunes needs no wanda
    (["prune", "svd"], {"input_gram", "token_counts", "row_fisher"}),
])
def test_calibration_covers_every_method_a_trial_may_pick(methods, needs):
    space = _space({"choices": methods} if len(methods) > 1 else methods[0])
    got = search_needs(space, CompressionConfig(factorizer="fisher", prune_score="wanda"))
    assert set(got) == needs
