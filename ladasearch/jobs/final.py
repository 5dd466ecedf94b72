"""The final budget: the chosen student distilled further at its target size, the best checkpoint on validation kept.

Read top to bottom:
    student = the chosen trial's model (already at the target size), or the state a killed run left
    one optimizer, warm-up + linear decay over the whole budget (``schedule``)
    score the starting model on validation                                  (step 0: the trial's own model)
    every eval_every steps:
        distil from the teacher (the same losses as the trials)
        score on validation; better than the best so far -> best/             (the result)
        the student, optimizer and curve -> resume/                           (what a resume continues from)
A search hands its best trial's checkpoint here and ships ``best/``; the trial keeps its own checkpoint.
Nothing here sees the dev split.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import torch
from torch import nn

from ..compress import count_parameters
from ..compress.registry import get_pruning_score
from ..config import FinalBudget, TrainConfig
from ..data import TaskSpec, main_score
from ..errors import LadaError
from ..train.evaluate import evaluate
from ..train.features import Features, train_batches
from ..io import write_json_atomic
from ..train.ladabert import LoopHooks, Optimization, TrainingPhase, train_steps
from ..serialize import load_compressed, save_compressed
from ..summary import RoundRecord, TrialSummary

BEST, RESUME, DONE = "best", "resume", "final.json"
TRAINER = "trainer.pt"


@dataclass(frozen=True)
class FinalPoint:
    """One validation score of the final distillation."""

    step: int
    score: float
    loss: float | None        # mean loss of the steps since the previous point (None at step 0)
    seconds: float            # training seconds since the start of the budget

    def to_json(self) -> dict:
        return {"step": self.step, "score": self.score, "loss": self.loss, "seconds": self.seconds}


@dataclass(frozen=True)
class FinalResult:
    folder: Path                      # the best checkpoint (a ladasearch model folder)
    summary: TrialSummary             # the chosen trial's summary, extended by the final distillation
    curve: tuple[FinalPoint, ...]

    @property
    def best(self) -> FinalPoint:
        return best_point(self.curve)


def _save_atomic(work: Path, name: str, write: Callable[[Path], None]) -> None:
    """Write folder ``work/name`` through a staging folder, so a kill never leaves half a checkpoint under it."""
    staging, old = work / f".{name}.new", work / f".{name}.old"
    shutil.rmtree(staging, ignore_errors=True)
    write(staging)
    if (work / name).exists():
        shutil.rmtree(old, ignore_errors=True)
        (work / name).replace(old)
    staging.replace(work / name)
    shutil.rmtree(old, ignore_errors=True)


def best_point(curve: tuple[FinalPoint, ...]) -> FinalPoint:
    """The highest validation score, the earliest step among equals (the checkpoint ``best/`` holds)."""
    return max(curve, key=lambda p: (p.score, -p.step))


def _curve_summary(start: TrialSummary, curve: tuple[FinalPoint, ...], budget: FinalBudget, steps: int, rows: int,
                   record: RoundRecord) -> TrialSummary:
    best = best_point(curve)
    final = {"budget": budget.describe(), "steps": steps, "rows": rows, "best_step": best.step,
             "start_score": curve[0].score, "curve": [p.to_json() for p in curve]}
    return start.with_(score=best.score, metrics=dict(record.metrics), history=start.history + (record,),
                       final=final)


def distill_final(start: Path, summary: TrialSummary, teacher: nn.Module, train: Features, val: Features,
                  task: TaskSpec, cfg: TrainConfig, budget: FinalBudget, work: Path, device="cpu",
                  log: Callable[[str], None] = print, saved_steps: int = 0) -> FinalResult:
    """Distil the model in ``start`` for ``budget`` on ``train``, scoring on ``val``; state lives in ``work``.
    ``saved_steps``: the trial steps the search's scheduler left unspent (``FinalBudget.reclaim``).

    A ``work`` folder a finished run left is read back as is; one a killed run left is continued from its last
    scored step (the student, the optimizer and schedule, the curve, the best checkpoint).
    """
    work = Path(work)
    if (work / DONE).is_file():
        saved = json.loads((work / DONE).read_text())
        return FinalResult(work / BEST, TrialSummary.from_json(saved["summary"], f"{work / DONE}"),
                           tuple(FinalPoint(**p) for p in saved["curve"]))
    work.mkdir(parents=True, exist_ok=True)
    steps = budget.steps(len(train), cfg.batch_size, saved_steps)
    every = budget.eval_interval(steps)
    teacher = teacher.to(device).eval()
    resumed = (work / RESUME / TRAINER).is_file()
    student = load_compressed(work / RESUME if resumed else start, device=device)
    optimization = Optimization.of(student, cfg, steps, budget.learning_rate, budget.warmup)
    if resumed:
        trainer = torch.load(work / RESUME / TRAINER, weights_only=False)
        if trainer["steps"] != steps:
            raise LadaError(f"{work} holds a final distillation of {trainer['steps']} steps, not {steps}; "
                            f"move it away to start over")
        optimization.restore(trainer["optimization"])
        done, curve = trainer["step"], tuple(FinalPoint(**p) for p in trainer["curve"])
        log(f"final distillation: continuing at step {done}/{steps} (best val {max(p.score for p in curve):.4f})")
    else:
        score = main_score(task, evaluate(student, val, task, cfg.eval_batch_size, device))
        done, curve = 0, (FinalPoint(0, score, None, 0.0),)
        _save_atomic(work, BEST, lambda folder: save_compressed(student, folder, summary))
        unit = f" ({budget.describe()})" if budget.unit == "epochs" else ""
        if budget.reclaim:
            unit += f" ({saved_steps} of them the trial steps the scheduler saved)"
        log(f"final distillation: {steps} steps{unit} on {len(train):,} train rows, val {task.main_metric} "
            f"{score:.4f} at the start, scored every {every} steps")
    # the same batch order a run without the kill would have drawn
    batches = islice(train_batches(train, cfg.batch_size, cfg.seed, device), done, None)
    phase = TrainingPhase(student, teacher, cfg, task, LoopHooks(), get_pruning_score("magnitude"))
    best = best_point(curve)
    teacher_params = count_parameters(teacher)
    started = time.perf_counter() - curve[-1].seconds
    while done < steps:
        chunk = min(every, steps - done)
        torch.manual_seed(cfg.seed + done)  # dropout as a run without a kill would draw it: resume is exact
        losses = train_steps(phase, batches, chunk, done, optimization)
        done += chunk
        metrics = evaluate(student, val, task, cfg.eval_batch_size, device)
        point = FinalPoint(done, main_score(task, metrics), losses.get("loss"), time.perf_counter() - started)
        curve += (point,)
        if point.score > best.score:
            best = point
            _save_atomic(work, BEST, lambda folder: save_compressed(student, folder, summary))
        trainer = {"steps": steps, "step": done, "optimization": optimization.state(),
                   "curve": [p.to_json() for p in curve]}
        _save_atomic(work, RESUME, lambda folder: (save_compressed(student, folder, summary),
                                                  torch.save(trainer, folder / TRAINER)))
        rate = done * cfg.batch_size / max(point.seconds, 1e-9)
        log(f"final distillation: step {done}/{steps}, val {task.main_metric} {point.score:.4f} (best {best.score:.4f} "
            f"at step {best.step}), loss {point.loss:.4f}, {rate:.1f} samples/s, "
            f"{(steps - done) * cfg.batch_size / max(rate, 1e-9) / 60:.1f} min left")
    best_model = load_compressed(work / BEST, device=device)
    metrics = evaluate(best_model, val, task, cfg.eval_batch_size, device)
    params = count_parameters(best_model)
    record = RoundRecord(round=(summary.history[-1].round + 1) if summary.history else 1, final=True,
                         score=main_score(task, metrics), metrics=metrics, params=params,
                         achieved_factor=teacher_params.total / params.total,
                         losses={"loss": curve[-1].loss} if curve[-1].loss is not None else {},
                         seconds=curve[-1].seconds, split="val")
    result_summary = _curve_summary(summary, curve, budget, steps, len(train), record)
    _save_atomic(work, BEST, lambda folder: save_compressed(best_model, folder, result_summary))
    write_json_atomic(work / DONE, {"summary": result_summary.to_json(), "curve": [p.to_json() for p in curve]})
    shutil.rmtree(work / RESUME, ignore_errors=True)
    return FinalResult(work / BEST, result_summary, curve)
