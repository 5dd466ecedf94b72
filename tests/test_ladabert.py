"""compress_model: iterative rounds, history, hooks, teacher untouched, failure on NaN, no-distill ablation."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from ladasearch.compress import PruningScore, compressible_modules, count_parameters, register_pruning_score
from ladasearch.config import CompressionConfig, TrainConfig
from ladasearch.data import TASKS
from ladasearch.errors import LadaError
from ladasearch.train.ladabert import CompressionResult, LoopHooks, TrialFailed, compress_model
from ladasearch.summary import RatioRecord, TrialSummary

SST2 = TASKS["sst2"]
FAST = dict(rounds=2, steps_per_round=2, final_steps=2, batch_size=8, eval_batch_size=8)
DISTILL_KEYS = {"loss_embedding", "loss_attention", "loss_hidden", "loss_logits"}


def _run(model, features, ratios, **cfg):
    train, dev = features
    return compress_model(model, train, dev, SST2, ratios, TrainConfig(**{**FAST, **cfg}))


@pytest.fixture
def ratios5(tiny_model, ratios_for):
    return ratios_for(count_parameters(tiny_model), 5.0, "hybrid")


def test_history_has_a_row_per_round_plus_final(tiny_model, tiny_features, ratios5):
    result = _run(tiny_model, tiny_features, ratios5, rounds=3)
    assert isinstance(result, CompressionResult)
    assert [row.round for row in result.history] == [1, 2, 3, 4]
    assert [row.final for row in result.history] == [False, False, False, True]
    for row in result.history:
        assert set(row.metrics) == {"accuracy"} and set(row.losses) == {"loss"} | DISTILL_KEYS
        assert row.seconds >= 0 and math.isfinite(row.losses["loss"])
        assert row.params.total == row.params.embedding + row.params.encoder + result.student_params.dense
        assert row.params.dense == result.student_params.dense
        assert 0.0 <= row.score <= 1.0 and row.score == row.metrics["accuracy"]
    assert result.score == result.history[-1].score
    assert result.metrics == {"accuracy": result.history[-1].metrics["accuracy"]}


def test_rounds_shrink_then_final_steps_keep_size(tiny_model, tiny_features, ratios5):
    teacher_total = count_parameters(tiny_model).total
    result = _run(tiny_model, tiny_features, ratios5, rounds=3)
    params = [row.params.total for row in result.history]
    assert teacher_total > params[0] > params[1] > params[2]
    assert params[2] == params[3]  # masks stayed applied through the final training
    assert params[3] == result.student_params.total == count_parameters(result.student).total
    assert result.achieved_factor == pytest.approx(5.0, rel=0.01)
    assert result.history[-1].achieved_factor == result.achieved_factor
    assert result.teacher_params.total == teacher_total


def test_no_final_steps_history_has_a_row_per_round(tiny_model, tiny_features, ratios5):
    result = _run(tiny_model, tiny_features, ratios5, final_steps=0)
    assert [row.round for row in result.history] == [1, 2]
    assert result.history[-1].final is True
    assert result.score == result.history[-1].score
    assert result.achieved_factor == pytest.approx(5.0, rel=0.01)


def test_no_final_steps_only_last_round_is_final(tiny_model, tiny_features, ratios5):
    result = _run(tiny_model, tiny_features, ratios5, final_steps=0)
    assert [row.final for row in result.history] == [False, True]


def test_hooks_see_every_compression_step_and_record(tiny_model, tiny_features, ratios5):
    events = []
    hooks = LoopHooks(
        before_compress=lambda r, student: events.append(("before", r, count_parameters(student).total)),
        after_compress=lambda r, student: events.append(("compress", r, count_parameters(student).total)),
        after_step=lambda step, losses: events.append(("step", step, losses["loss"])),
        after_eval=lambda record: events.append(("eval", record.round, record)))
    train, dev = tiny_features
    result = compress_model(tiny_model, train, dev, SST2, ratios5, TrainConfig(**FAST), hooks=hooks)
    assert [e[:2] for e in events] == [("before", 1), ("compress", 1), ("step", 1), ("step", 2), ("eval", 1),
                                       ("before", 2), ("compress", 2), ("step", 3), ("step", 4), ("eval", 2),
                                       ("step", 5), ("step", 6), ("eval", 3)]
    assert tuple(e[2] for e in events if e[0] == "eval") == result.history
    sizes = [e[2] for e in events if e[0] == "compress"]
    assert sizes == [r.params.total for r in result.history[:2]]  # the size each round was compressed to
    assert events[0][2] == result.teacher_params.total  # nothing compressed before the first step
    steps = [e[2] for e in events if e[0] == "step"]
    assert sum(steps[:2]) / 2 == pytest.approx(result.history[0].losses["loss"])


def test_teacher_left_unchanged(tiny_model, tiny_features, ratios5):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    modules = {n: type(m) for n, m in tiny_model.named_modules()}
    result = _run(tiny_model, tiny_features, ratios5)
    after = tiny_model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    assert {n: type(m) for n, m in tiny_model.named_modules()} == modules
    assert result.student is not tiny_model
    assert count_parameters(tiny_model).total == result.teacher_params.total


def test_student_trains(tiny_model, tiny_features, ratios5):
    result = _run(tiny_model, tiny_features, ratios5, rounds=1, steps_per_round=0, final_steps=6)
    untrained = _run(tiny_model, tiny_features, ratios5, rounds=1, steps_per_round=0, final_steps=0)
    ids = tiny_features[1].input_ids[:4]
    mask = tiny_features[1].attention_mask[:4]
    with torch.no_grad():
        assert not torch.equal(result.student(input_ids=ids, attention_mask=mask).logits,
                               untrained.student(input_ids=ids, attention_mask=mask).logits)
    assert result.student_params == untrained.student_params


def test_same_seed_same_result(tiny_model, tiny_features, ratios5):
    first = _run(tiny_model, tiny_features, ratios5)
    second = _run(tiny_model, tiny_features, ratios5)
    assert [r.losses["loss"] for r in first.history] == [r.losses["loss"] for r in second.history]


@pytest.mark.parametrize("method, rel", [("prune", 0.01), ("svd", 0.03)])
def test_other_methods(tiny_model, tiny_features, ratios_for, method, rel):
    ratios = ratios_for(count_parameters(tiny_model), 5.0, method)
    result = _run(tiny_model, tiny_features, ratios)
    assert result.achieved_factor == pytest.approx(5.0, rel=rel)
    assert result.ratios.method == method


def test_no_distill_trains_on_labels(tiny_model, tiny_features, ratios5):
    result = _run(tiny_model, tiny_features, ratios5, distill=False)
    for row in result.history:
        assert set(row.losses) == {"loss", "loss_task"}
        assert row.losses["loss"] == row.losses["loss_task"] > 0


def test_distill_loss_is_weighted_sum_of_terms(tiny_model, tiny_features, ratios5):
    from ladasearch.config import LossWeights

    weights = LossWeights(embedding=0.0, attention=2.0, hidden=0.5, logits=1.0)
    result = _run(tiny_model, tiny_features, ratios5, loss_weights=weights)
    for row in result.history:
        expected = 2.0 * row.losses["loss_attention"] + 0.5 * row.losses["loss_hidden"] + row.losses["loss_logits"]
        assert row.losses["loss"] == pytest.approx(expected, rel=1e-5)


def test_regression_task(make_tiny, ratios_for):
    from conftest import random_features

    model = make_tiny(0, num_labels=1)
    train = random_features(16, seed=1, regression=True)
    dev = random_features(8, seed=2, regression=True)
    ratios = ratios_for(count_parameters(model), 5.0)
    result = compress_model(model, train, dev, TASKS["stsb"], ratios, TrainConfig(**FAST))
    assert set(result.metrics) == {"pearson", "spearman"}
    assert result.score == result.metrics["pearson"]
    assert all(math.isfinite(row.losses["loss_logits"]) for row in result.history)


@pytest.mark.parametrize("distill", [True, False])
def test_model_producing_nan_fails_the_trial(tiny_model, tiny_features, ratios5, distill):
    with torch.no_grad():
        tiny_model.classifier.bias.fill_(float("nan"))
    with pytest.raises(TrialFailed, match="loss became nan at step 1"):
        _run(tiny_model, tiny_features, ratios5, distill=distill)


def test_exploding_learning_rate_fails_the_trial(tiny_model, tiny_features, ratios5):
    with pytest.raises(TrialFailed, match="loss became"):
        _run(tiny_model, tiny_features, ratios5, learning_rate=1e30, steps_per_round=5)


@pytest.mark.parametrize("lr", [math.nan, 0.0, -1e-4])
def test_nan_learning_rate_rejected_before_training(lr):
    # assumed behaviour: a NaN learning rate never reaches the trial, TrainConfig refuses it
    with pytest.raises(LadaError, match="train.learning_rate must be > 0"):
        TrainConfig(learning_rate=lr)


def test_summary_holds_ratios_and_history(tiny_model, tiny_features, ratios5):
    result = _run(tiny_model, tiny_features, ratios5)
    summary = result.summary(target=5.0, model="tiny")
    assert isinstance(summary, TrialSummary)
    assert summary.ratios == RatioRecord("hybrid", ratios5.embedding, ratios5.svd, ratios5.weight)
    assert summary.to_json()["ratios"] == {"method": "hybrid", "embedding": ratios5.embedding, "svd": ratios5.svd,
                                           "weight": ratios5.weight, "encoder": ratios5.encoder}
    assert summary.achieved_factor == result.achieved_factor
    assert summary.student_params.total == result.student_params.total
    assert summary.history == result.history
    assert summary.ranks["bert.encoder.layer.0.attention.self.query"] == 16  # 64*64*0.5/128
    assert len(summary.ranks) == 14
    assert (summary.task, summary.main_metric, summary.target, summary.model) == ("sst2", "accuracy", 5.0, "tiny")
    assert (summary.factorizer, summary.prune_score, summary.distill) == ("svd", "magnitude", True)
    groups = {m.name: m.group for m in summary.matrices}
    assert groups["bert.embeddings.word_embeddings"] == "embedding"
    assert sum(g == "encoder" for g in groups.values()) == 13
    assert sum(m.kept for m in summary.matrices) + result.student_params.dense == result.student_params.total
    assert TrialSummary.from_json(summary.to_json()) == summary


@pytest.mark.parametrize("distill", [True, False])
def test_bf16_autocast_trains_with_fp32_weights(tiny_model, tiny_features, ratios5, distill):
    fp32 = _run(copy.deepcopy(tiny_model), tiny_features, ratios5, distill=distill)
    bf16 = _run(tiny_model, tiny_features, ratios5, distill=distill, precision="bf16")
    assert {p.dtype for p in bf16.student.parameters()} == {torch.float32}
    first, first_bf16 = fp32.history[0].losses["loss"], bf16.history[0].losses["loss"]
    assert math.isfinite(first_bf16) and first_bf16 != first  # the forward passes really ran in bf16
    assert first_bf16 == pytest.approx(first, rel=0.05)
    assert bf16.student_params.total == fp32.student_params.total


@pytest.mark.parametrize("value", ["fp16", "", None])
def test_unknown_precision(value):
    with pytest.raises(LadaError, match="train.precision must be one of fp32, bf16"):
        TrainConfig(precision=value)


# --------------------------------------------------------------------------- plug-in doors of the loop


class _LearningScore(PruningScore):
    """Magnitude scores that record what the loop tells a learning score."""

    name = "test-learning"
    needs = frozenset({"row_fisher"})
    log: list = []

    def scores(self, module, names, stats):
        self.log.append(("scores", stats))
        return {n: getattr(module, n).detach().abs() for n in names}

    def observe(self, module_name, module, names):
        grads = [getattr(module, f"{n}_orig", getattr(module, n)).grad for n in names]
        self.log.append(("observe", module_name, names, all(g is not None for g in grads)))

    def reset(self):
        self.log.append(("reset",))


register_pruning_score(_LearningScore)


class _Stats:
    def __init__(self):
        self.asked = []

    def layer(self, name):
        self.asked.append(name)
        return f"stats of {name}"


@pytest.fixture
def learning_log():
    _LearningScore.log = []
    return _LearningScore.log


def test_learning_score_observes_every_module_after_each_backward(tiny_model, tiny_features, ratios5, learning_log):
    stats = _Stats()
    train, dev = tiny_features
    compress_model(tiny_model, train, dev, SST2, ratios5, TrainConfig(**FAST),
                   compression=CompressionConfig(prune_score="test-learning"), stats=stats)
    kinds = [e[0] for e in learning_log]
    per_step = 14  # one observe per compressible module
    assert kinds == (["scores"] * 14 + ["reset"] + ["observe"] * per_step * 2) * 2 + ["observe"] * per_step * 2
    observed = [e for e in learning_log if e[0] == "observe"]
    assert all(e[3] for e in observed)  # gradients were there: after backward, before zero_grad
    assert {e[1] for e in observed} == set(compressible_modules(tiny_model))
    assert {e[2] for e in observed if e[1].endswith("query")} == {("A", "B")}
    # every matrix got its own layer's statistics, in both rounds
    assert stats.asked == [n for n in compressible_modules(tiny_model)] * 2
    assert {e[1] for e in learning_log if e[0] == "scores"} == {f"stats of {n}" for n in stats.asked}


def test_loop_gathers_the_statistics_the_plugins_need(tiny_model, tiny_features, ratios_for, learning_log,
                                                      monkeypatch):
    from ladasearch.train import ladabert

    calls = []

    def collect(teacher, train, needs, **kw):
        calls.append((needs, kw))
        return _Stats()

    monkeypatch.setattr(ladabert, "collect_statistics", collect)  # where the loop looks it up
    train, dev = tiny_features
    cfg = TrainConfig(**FAST)
    compression = CompressionConfig(prune_score="test-learning", calibration_batches=3)
    compress_model(tiny_model, train, dev, SST2, ratios5_of(tiny_model, ratios_for, "svd"), cfg,
                   compression=compression)
    assert calls == []  # SVD alone never scores entries: nothing gathered
    compress_model(tiny_model, train, dev, SST2, ratios5_of(tiny_model, ratios_for, "prune"), cfg,
                   compression=compression)
    assert calls == [(frozenset({"row_fisher"}), {"batches": 3, "batch_size": 8, "device": "cpu", "task": SST2})]


def ratios5_of(model, ratios_for, method):
    return ratios_for(count_parameters(model), 5.0, method)
