"""ASHA's resource is training steps: the rungs sit at geometric step counts, whatever the rounds of a trial."""

from __future__ import annotations

import pytest

from ladasearch.config import TrainConfig
from ladasearch.errors import LadaError
from ladasearch.search import SearchSpace
from ladasearch.search.driver import make_scheduler
from ladasearch.search.settings import SearchConfig
from ladasearch.search.worker import trained_steps
from ladasearch.summary import ParamRecord, RoundRecord

PARAMS = ParamRecord(10, 10, 10)


def _record(number: int, final: bool = False) -> RoundRecord:
    return RoundRecord(round=number, final=final, score=0.5, metrics={"accuracy": 0.5}, params=PARAMS,
                       achieved_factor=2.0, losses={}, seconds=1.0)


@pytest.mark.parametrize("rounds, per_round, final_steps, reports", [
    (3, 20, 10, [20, 40, 60, 70]),
    (2, 0, 5, [0, 0, 5]),       # one-shot rounds: only the final distillation trains
    (1, 7, 0, [7]),
    (2, 5, 0, [5, 10]),
])
def test_a_trial_reports_the_steps_it_has_trained(rounds, per_round, final_steps, reports):
    """Records numbered as the loop numbers them (``ladabert.compress_model``): the final distillation is round
    rounds + 1; without one the last round is the final record."""
    cfg = TrainConfig(rounds=rounds, steps_per_round=per_round, final_steps=final_steps)
    records = [_record(r, final=not final_steps and r == rounds) for r in range(1, rounds + 1)]
    records += [_record(rounds + 1, final=True)] if final_steps else []
    assert [trained_steps(r, cfg) for r in records] == reports


def _space(train: dict) -> SearchSpace:
    return SearchSpace.from_dict({"name": "s", "method": "hybrid", "ratios": {"embedding_ratio": 0.5},
                                  "train": train})


@pytest.mark.parametrize("train, base, horizon", [
    ({}, TrainConfig(rounds=3, steps_per_round=20, final_steps=10), 70),
    ({"rounds": {"choices": [2, 4]}, "steps_per_round": {"choices": [10, 30]}},
     TrainConfig(rounds=3, steps_per_round=20, final_steps=10), 130),
    ({}, TrainConfig(rounds=2, steps_per_round=0, final_steps=0), 1),
])
def test_the_horizon_is_the_most_steps_a_trial_of_the_space_can_train(train, base, horizon):
    assert _space(train).max_steps(base) == horizon


@pytest.mark.parametrize("grace, factor, milestones", [
    (None, 2.0, [20, 40, 80, 160]),       # default: one round's steps
    (5, 3.0, [5, 15, 45, 135]),
])
def test_asha_rungs_are_geometric_in_steps(grace, factor, milestones):
    cfg = SearchConfig(name="s", target=5.0, grace_period=grace, reduction_factor=factor)
    base = TrainConfig(rounds=8, steps_per_round=20, final_steps=100)   # horizon 260 steps
    scheduler = make_scheduler(cfg, _space({}), base)
    assert scheduler._time_attr == "steps"
    assert scheduler._max_t == 260
    assert sorted(m for m, _ in scheduler._brackets[0]._rungs) == milestones


def test_fifo_has_no_rungs_and_a_bad_grace_period_is_refused():
    assert type(make_scheduler(SearchConfig(name="s", target=5.0, scheduler="fifo"), _space({}),
                               TrainConfig())).__name__ == "FIFOScheduler"
    with pytest.raises(LadaError, match="grace_period must be an integer >= 1 \\(training steps\\)"):
        SearchConfig(name="s", target=5.0, grace_period=0)


@pytest.mark.parametrize("rounds, final_steps, reports", [(2, 1, [2, 4, 5]), (2, 0, [2, 4])])
def test_the_loops_own_records_give_the_steps_trained(tiny_model, tiny_features, ratios_for, rounds, final_steps,
                                                       reports):
    """The step count of each record as ``compress_model`` numbers and marks them (final = round rounds + 1)."""
    from ladasearch.compress import count_parameters
    from ladasearch.data import TASKS
    from ladasearch.train.ladabert import LoopHooks, compress_model

    cfg = TrainConfig(rounds=rounds, steps_per_round=2, final_steps=final_steps, batch_size=8, eval_batch_size=16)
    records = []
    compress_model(tiny_model, *tiny_features, TASKS["sst2"], ratios_for(count_parameters(tiny_model), 5.0), cfg,
                   hooks=LoopHooks(after_eval=records.append))
    assert [trained_steps(r, cfg) for r in records] == reports
