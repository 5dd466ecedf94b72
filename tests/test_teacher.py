"""The teacher cache: keyed on model + train rows + teacher settings; another dev subset reuses the teacher."""

from __future__ import annotations

import json

import pytest

from ladasearch.jobs import teacher as teacher_mod
from ladasearch.config import DataConfig, TeacherConfig
from ladasearch.jobs.pipeline import prepare, prepare_teacher

CFG = TeacherConfig(steps=2, batch_size=8)


def _teacher(model, glue_dir, cache_dir, **data):
    data_cfg = DataConfig("sst2", str(glue_dir), max_length=32, **{"max_train": 64, "max_dev": 32, **data})
    prepared = prepare(data_cfg, str(model))
    return prepared, prepare_teacher(prepared, data_cfg, str(model), CFG, "cpu", cache_dir, log=lambda s: None)


@pytest.fixture
def first(tiny_cli_model, glue_dir, tmp_path):
    return _teacher(tiny_cli_model, glue_dir, tmp_path)[1]


def _no_fine_tuning(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the teacher was fine-tuned again")
    monkeypatch.setattr(teacher_mod, "fine_tune", refuse)


def test_same_data_loads_the_cached_teacher(first, tiny_cli_model, glue_dir, tmp_path, monkeypatch):
    _no_fine_tuning(monkeypatch)
    again = _teacher(tiny_cli_model, glue_dir, tmp_path)[1]
    assert not first.cached and again.cached
    assert again.path == first.path and again.score == first.score and again.metrics == first.metrics


def test_another_dev_subset_reuses_the_teacher_and_scores_it_on_that_dev(first, tiny_cli_model, glue_dir, tmp_path,
                                                                       monkeypatch):
    _no_fine_tuning(monkeypatch)
    prepared, other = _teacher(tiny_cli_model, glue_dir, tmp_path, max_dev=48)
    assert other.cached and other.path == first.path
    from ladasearch.data import main_score
    from ladasearch.train.evaluate import evaluate

    expected = evaluate(other.model, prepared.dev, prepared.data.task)
    assert other.metrics == pytest.approx(expected) and other.score == main_score(prepared.data.task, expected)
    scores = json.loads((first.path / "teacher.json").read_text())["dev_scores"]
    assert len(scores) == 2 and scores[prepared.data.fingerprint]["score"] == other.score


def test_another_train_subset_fine_tunes_another_teacher(first, tiny_cli_model, glue_dir, tmp_path):
    other = _teacher(tiny_cli_model, glue_dir, tmp_path, max_train=65)[1]
    assert not other.cached and other.path != first.path
    assert sorted(p.name for p in (tmp_path / "teachers").iterdir()) == sorted([first.path.name, other.path.name])


@pytest.mark.parametrize("names, order", [
    ({0: "positive", 1: "negative"}, [1, 0]),     # the task's classes in another order: rows swapped
    ({0: "NEGATIVE", 1: "POSITIVE"}, [0, 1]),     # the same order, another case
    ({0: "LABEL_0", 1: "LABEL_1"}, [0, 1]),       # no names: ids taken as the task's
])
def test_a_given_teachers_head_follows_the_tasks_class_order(names, order):
    import torch

    from conftest import build_tiny
    from ladasearch.data import get_task

    model = build_tiny(0)
    model.config.id2label = names
    inputs = {"input_ids": torch.tensor([[2, 5, 6, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    with torch.no_grad():
        before = model(**inputs).logits
        after = teacher_mod.align_labels(model, get_task("sst2"), "t")(**inputs).logits
    assert torch.allclose(after, before[:, order], atol=1e-6, rtol=0)


def test_a_given_teacher_with_other_classes_is_refused():
    from conftest import build_tiny
    from ladasearch.data import get_task
    from ladasearch.errors import LadaError

    model = build_tiny(0)
    model.config.id2label = {0: "spam", 1: "ham"}
    with pytest.raises(LadaError, match=r"teacher t names its classes \['spam', 'ham'\], the task's are "
                                        r"\['negative', 'positive'\]"):
        teacher_mod.align_labels(model, get_task("sst2"), "t")
