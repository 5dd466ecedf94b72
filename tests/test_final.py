"""The final budget: warm-up + decay schedule, distillation of a saved student with the best checkpoint on
validation kept, exact resume after a kill, and a finished run read back as is."""

from __future__ import annotations

import pytest
import torch

import ladasearch.jobs.final as final_mod
from ladasearch.compress import count_parameters
from ladasearch.config import FinalBudget, TrainConfig
from ladasearch.data import TASKS
from ladasearch.errors import LadaError
from ladasearch.jobs.final import DONE, RESUME, distill_final
from ladasearch.train.ladabert import compress_model
from ladasearch.train.schedule import warmup_decay_factor
from ladasearch.serialize import load_compressed, save_compressed

SST2 = TASKS["sst2"]
FAST = dict(rounds=1, steps_per_round=2, final_steps=0, batch_size=8, eval_batch_size=8)


@pytest.mark.parametrize("steps, warmup, expected", [
    (10, 0.2, [0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]),
    (4, 0.0, [1.0, 1.0, 2 / 3, 1 / 3]),  # the teacher's rule: the first step ends the ramp
    (1, 0.1, [1.0]),
])
def test_warmup_then_linear_decay(steps, warmup, expected):
    assert [warmup_decay_factor(s, steps, warmup) for s in range(steps)] == pytest.approx(expected)


@pytest.mark.parametrize("text, amount, unit", [("1000", 1000, "steps"), ("200steps", 200, "steps"),
                                                 ("2epochs", 2.0, "epochs"), ("0.5 epoch", 0.5, "epochs"),
                                                 ("0", 0, "steps")])
def test_final_budget_parses(text, amount, unit):
    budget = FinalBudget.parse(text)
    assert (budget.amount, budget.unit, budget.enabled) == (amount, unit, amount > 0)


@pytest.mark.parametrize("text", ["ten", "-5", "1.5steps", "3 hours", "nan"])
def test_final_budget_refuses(text):
    with pytest.raises(LadaError, match="final budget"):
        FinalBudget.parse(text)


@pytest.mark.parametrize("budget, rows, batch, steps, needed", [
    (FinalBudget(100), 10_000, 32, 100, 3200), (FinalBudget(100, max_rows=500), 500, 32, 100, 500),
    (FinalBudget(2, "epochs"), 100, 32, 6, None), (FinalBudget(0.5, "epochs", max_rows=64), 64, 8, 4, 64)])
def test_final_budget_steps_and_rows(budget, rows, batch, steps, needed):
    assert budget.steps(rows, batch) == steps
    assert budget.rows_needed(batch) == needed


@pytest.mark.parametrize("budget, saved, steps, needed", [
    (FinalBudget(100, reclaim=True), 40, 140, 140 * 32), (FinalBudget(100), 40, 100, 100 * 32),
    (FinalBudget(100, max_rows=500, reclaim=True), 40, 140, 500), (FinalBudget(2, "epochs", reclaim=True), 7, 6 + 7, None),
    (FinalBudget(100, reclaim=True), 0, 100, 3200)])
def test_a_reclaiming_budget_adds_the_saved_trial_steps(budget, saved, steps, needed):
    assert budget.steps(100, 32, saved) == steps   # 100 rows, batch 32: an epoch is 3 steps
    assert budget.rows_needed(32, saved) == needed
    assert budget.describe().endswith("+ the trial steps saved") == budget.reclaim


def test_reclaim_must_be_a_bool():
    with pytest.raises(LadaError, match="final.reclaim must be true or false, got 'yes'"):
        FinalBudget(10, reclaim="yes")


@pytest.fixture
def saved_student(tmp_path, tiny_model, tiny_features, ratios_for):
    """(folder, summary, teacher) of a tiny student at 5x, trained 2 steps."""
    train, val = tiny_features
    ratios = ratios_for(count_parameters(tiny_model), 5.0, "hybrid")
    result = compress_model(tiny_model, train, val, SST2, ratios, TrainConfig(**FAST), eval_split="val")
    summary = result.summary(target=5.0)
    folder = save_compressed(result.student, tmp_path / "trial", summary)
    return folder, summary, tiny_model


def _final(saved, features, work, budget=FinalBudget(12, eval_every=4)):
    folder, summary, teacher = saved
    train, val = features
    return distill_final(folder, summary, teacher, train, val, SST2, TrainConfig(**FAST), budget, work,
                         log=lambda line: None)


def test_final_keeps_the_best_checkpoint_on_val(saved_student, tiny_features, tmp_path):
    result = _final(saved_student, tiny_features, tmp_path / "work")
    assert [p.step for p in result.curve] == [0, 4, 8, 12]
    best = max(result.curve, key=lambda p: (p.score, -p.step))
    assert result.summary.score == best.score == result.summary.score_at_target
    assert result.summary.final["best_step"] == best.step and result.summary.final["steps"] == 12
    assert result.summary.final["start_score"] == result.curve[0].score
    # the shipped folder is that checkpoint, at the trial's size (the masks stayed applied)
    model = load_compressed(result.folder)
    assert count_parameters(model).total == saved_student[1].student_params.total
    assert result.summary.history[-1].final and result.summary.history[-1].score == best.score
    assert not (tmp_path / "work" / RESUME).exists() and (tmp_path / "work" / DONE).is_file()
    # the trial's own checkpoint is untouched
    assert load_compressed(saved_student[0]) is not None


def test_resume_after_a_kill_is_exact(saved_student, tiny_features, tmp_path, monkeypatch):
    whole = _final(saved_student, tiny_features, tmp_path / "whole")
    real, calls = final_mod.evaluate, {"n": 0}

    def dies_on_the_third_score(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # step 0, step 4, then killed while scoring step 8
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(final_mod, "evaluate", dies_on_the_third_score)
    with pytest.raises(KeyboardInterrupt):
        _final(saved_student, tiny_features, tmp_path / "killed")
    assert (tmp_path / "killed" / RESUME / "trainer.pt").is_file()
    monkeypatch.setattr(final_mod, "evaluate", real)
    lines = []
    folder, summary, teacher = saved_student
    resumed = distill_final(folder, summary, teacher, *tiny_features, SST2, TrainConfig(**FAST),
                            FinalBudget(12, eval_every=4), tmp_path / "killed", log=lines.append)
    assert lines[0].startswith("final distillation: continuing at step 4/12")
    assert [(p.step, p.score) for p in resumed.curve] == [(p.step, p.score) for p in whole.curve]
    assert [p.loss for p in resumed.curve] == pytest.approx([p.loss for p in whole.curve])
    a, b = load_compressed(resumed.folder).state_dict(), load_compressed(whole.folder).state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_a_finished_run_is_read_back(saved_student, tiny_features, tmp_path, monkeypatch):
    first = _final(saved_student, tiny_features, tmp_path / "work")
    monkeypatch.setattr(final_mod, "train_steps", lambda *a, **k: pytest.fail("trained again"))
    again = _final(saved_student, tiny_features, tmp_path / "work")
    assert again.summary == first.summary and again.curve == first.curve


def test_a_resume_with_another_budget_is_refused(saved_student, tiny_features, tmp_path, monkeypatch):
    real, calls = final_mod.evaluate, {"n": 0}

    def dies(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(final_mod, "evaluate", dies)
    with pytest.raises(KeyboardInterrupt):
        _final(saved_student, tiny_features, tmp_path / "work")
    monkeypatch.setattr(final_mod, "evaluate", real)
    with pytest.raises(LadaError, match="not 20"):
        _final(saved_student, tiny_features, tmp_path / "work", FinalBudget(20, eval_every=4))
