"""The teacher's outputs shared by a search's trials: read back instead of recomputed, never across a change of
teacher, data or length, bounded on disk, and the same training with or without the cache."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import build_tiny
from ladasearch.compress import count_parameters
from ladasearch.config import TrainConfig
from ladasearch.data import TASKS
from ladasearch.runtime.inputs import random_inputs
from ladasearch.train.ladabert import compress_model
from ladasearch.train.teacher_outputs import TeacherCache

FAST = dict(rounds=2, steps_per_round=2, final_steps=2, batch_size=8, eval_batch_size=8)


class Counted:
    """Counts the forward passes of a model (not of the copies made of it: a student is one)."""

    def __init__(self, model):
        self.calls = 0
        model.register_forward_pre_hook(lambda m, _: setattr(self, "calls", self.calls + (m is model)))


def _outputs_equal(a, b) -> bool:
    return torch.equal(a.logits, b.logits) and all(torch.equal(x, y) for x, y in zip(a.hidden_states, b.hidden_states)) \
        and all(torch.equal(x, y) for x, y in zip(a.attentions, b.attentions))


def test_a_batch_seen_before_is_read_back_without_the_teacher(tmp_path):
    teacher = build_tiny(0)
    counted = Counted(teacher)
    batch = random_inputs(teacher, 4, 16, seed=1, padded=True)
    first = TeacherCache(tmp_path).bind(teacher)(batch)
    assert counted.calls == 1 and first.logits.dtype == torch.float16 and len(first.attentions) == 2
    again = TeacherCache(tmp_path).bind(teacher)  # another trial: a fresh binding of the same teacher
    second = again(batch)
    assert counted.calls == 1 and (again.hits, again.misses) == (1, 0) and _outputs_equal(first, second)
    with torch.no_grad():
        live = teacher(**batch, output_hidden_states=True, output_attentions=True)
    assert torch.allclose(second.logits.float(), live.logits, atol=1e-2)   # float16 of the same numbers


@pytest.mark.parametrize("change", ["teacher", "rows", "length", "precision"])
def test_another_teacher_data_or_length_is_never_read_back(change, tmp_path):
    teacher = build_tiny(0)
    batch = random_inputs(teacher, 4, 16, seed=1, padded=True)
    TeacherCache(tmp_path).bind(teacher)(batch)
    precision = "fp32"
    if change == "teacher":
        teacher = copy.deepcopy(teacher)
        with torch.no_grad():
            teacher.classifier.weight[0, 0] += 1e-3
    elif change == "rows":
        batch = random_inputs(teacher, 4, 16, seed=2, padded=True)
    elif change == "length":
        batch = random_inputs(teacher, 4, 17, seed=1, padded=True)
    else:
        precision = "bf16"
    counted = Counted(teacher)
    bound = TeacherCache(tmp_path).bind(teacher, precision)
    bound(batch)
    assert counted.calls == 1 and (bound.hits, bound.misses) == (0, 1)


def test_the_cache_stops_storing_at_its_size_and_survives_a_torn_entry(tmp_path):
    teacher = build_tiny(0)
    batch = random_inputs(teacher, 4, 16, seed=1, padded=True)
    full = TeacherCache(tmp_path / "none", max_bytes=0).bind(teacher)
    full(batch)
    full(batch)
    assert (full.hits, full.misses) == (0, 2) and not list((tmp_path / "none").rglob("*.pt"))
    bound = TeacherCache(tmp_path / "c").bind(teacher)
    reference = bound(batch)
    (entry,) = list((tmp_path / "c").rglob("*.pt"))
    entry.write_bytes(entry.read_bytes()[:100])   # a kill mid-write would leave only a .tmp; a torn file all the same
    again = TeacherCache(tmp_path / "c").bind(teacher)
    assert _outputs_equal(again(batch), reference) and (again.hits, again.misses) == (0, 1)


def test_a_run_that_reads_the_cache_trains_as_the_run_that_wrote_it(tiny_features, ratios_for, tmp_path):
    train, dev = tiny_features
    teacher = build_tiny(0)
    ratios = ratios_for(count_parameters(teacher), 5.0, "hybrid")
    counted = Counted(teacher)
    cache = TeacherCache(tmp_path / "cache")
    runs = []
    for _ in range(2):
        before = counted.calls
        result = compress_model(teacher, train, dev, TASKS["sst2"], ratios, TrainConfig(**FAST), teacher_cache=cache)
        runs.append((result, counted.calls - before))
    (first, first_calls), (second, second_calls) = runs
    steps = FAST["rounds"] * FAST["steps_per_round"] + FAST["final_steps"]
    assert first_calls == steps and second_calls == 0   # magnitude + SVD read no statistics: training only
    assert [r.score for r in first.history] == [r.score for r in second.history]
    assert all(torch.equal(a, b) for a, b in zip(first.student.state_dict().values(),
                                                 second.student.state_dict().values()))
