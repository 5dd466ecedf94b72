"""One LadaBERT compression: rounds of compress-a-step then distill, then final distillation.

Read top to bottom:
    student = copy of the teacher
    for round r = 1..R:
        shrink every matrix to final_ratio ** (r / R)     (SVD, then magnitude pruning)
        train the student for steps_per_round steps       (distillation, or gold labels)
        evaluate on dev, count parameters, hand the round's metrics to the callback
    train final_steps more steps at the final size, evaluate once more
The last round lands exactly on the target, so the model trained in the final steps
has the target size.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .compress import MatrixPlan, ParamCount, Ratios, compress_step, count_parameters, make_plan
from .config import TrainConfig
from .data import TaskSpec, main_score
from .distill import TERMS, distill_losses, task_loss
from .evaluate import evaluate
from .features import Features, train_batches
from .precision import autocast


class TrialFailed(RuntimeError):
    """Training diverged (NaN/inf loss); the trial is recorded as failed."""


@dataclass
class CompressionResult:
    student: nn.Module
    ratios: Ratios
    plans: list[MatrixPlan]
    teacher_params: ParamCount
    student_params: ParamCount
    metrics: dict[str, float]   # dev metrics of the final student
    score: float                # the task's main metric
    history: list[dict]         # one row per round (+ one for the final steps)

    @property
    def achieved_factor(self) -> float:
        return self.teacher_params.total / self.student_params.total

    def summary(self) -> dict:
        ranks = {p.name: p.rank() for p in self.plans if p.rank() is not None}
        return {
            "ratios": {"method": self.ratios.method, "embedding": self.ratios.embedding, "svd": self.ratios.svd,
                       "weight": self.ratios.weight, "encoder": self.ratios.encoder},
            "reduction_factors": self.ratios.reduction_factors(),
            "achieved_factor": self.achieved_factor,
            "teacher_params": self.teacher_params.as_dict(),
            "student_params": self.student_params.as_dict(),
            "ranks": ranks,
            "score": self.score,
            "metrics": self.metrics,
            "history": self.history,
        }


def _train(student: nn.Module, teacher: nn.Module, batches, steps: int, cfg: TrainConfig,
           task: TaskSpec) -> dict[str, float]:
    """``steps`` optimizer steps on the student; returns the mean of each loss term."""
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad],
                                  lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.1, total_iters=max(steps, 1))
    sums: dict[str, float] = {}
    student.train()
    for step in range(steps):
        batch = next(batches)
        labels = batch.pop("labels")
        if cfg.distill:
            with autocast(cfg.precision, labels.device):
                with torch.no_grad():
                    t_out = teacher(**batch, output_hidden_states=True, output_attentions=True)
                s_out = student(**batch, output_hidden_states=True, output_attentions=True)
            terms = distill_losses(s_out, t_out, batch["attention_mask"], cfg.temperature, task.is_regression)
            loss = sum(getattr(cfg.loss_weights, name) * terms[name] for name in TERMS)
        else:
            with autocast(cfg.precision, labels.device):
                logits = student(**batch).logits
            terms = {"task": task_loss(logits.float(), labels, task.is_regression)}
            loss = terms["task"]
        if not math.isfinite(loss.item()):
            raise TrialFailed(f"loss became {loss.item()} at step {step + 1}")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        for name, value in {"loss": loss, **terms}.items():
            sums[name] = sums.get(name, 0.0) + value.item()
    student.eval()
    return {f"loss_{k}" if k != "loss" else k: v / max(steps, 1) for k, v in sums.items()}


def compress_model(teacher: nn.Module, train: Features, dev: Features, task: TaskSpec, ratios: Ratios,
                   cfg: TrainConfig = TrainConfig(), device: torch.device | str = "cpu",
                   callback: Callable[[dict], None] | None = None) -> CompressionResult:
    """Compress ``teacher`` (left untouched) to ``ratios`` by LadaBERT's iterative rounds."""
    torch.manual_seed(cfg.seed)
    teacher = teacher.to(device).eval()
    teacher_params = count_parameters(teacher)
    student = copy.deepcopy(teacher)
    plans = make_plan(student, ratios)
    batches = train_batches(train, cfg.batch_size, cfg.seed, device)
    history: list[dict] = []

    def finish_round(number: int, started: float, losses: dict[str, float], final: bool):
        metrics = evaluate(student, dev, task, cfg.eval_batch_size, device)
        params = count_parameters(student)
        row = {"round": number, "final": final, "score": main_score(task, metrics), **metrics,
               "params": params.total, "params_embedding": params.embedding, "params_encoder": params.encoder,
               "achieved_factor": teacher_params.total / params.total, **losses,
               "seconds": time.perf_counter() - started}
        history.append(row)
        if callback is not None:
            callback(row)
        return row, metrics

    for number in range(1, cfg.rounds + 1):
        started = time.perf_counter()
        compress_step(student, plans, number / cfg.rounds)
        losses = _train(student, teacher, batches, cfg.steps_per_round, cfg, task)
        row, metrics = finish_round(number, started, losses, final=cfg.final_steps == 0 and number == cfg.rounds)

    if cfg.final_steps:
        started = time.perf_counter()
        losses = _train(student, teacher, batches, cfg.final_steps, cfg, task)
        row, metrics = finish_round(cfg.rounds + 1, started, losses, final=True)

    return CompressionResult(student, ratios, plans, teacher_params, count_parameters(student), metrics,
                             row["score"], history)
