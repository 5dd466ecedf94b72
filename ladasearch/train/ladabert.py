"""The LadaBERT loop: rounds of compress-a-step then distill, then final distillation.

Read top to bottom:
    student = copy of the teacher
    statistics = train batches through the teacher     (only when the factorizer or pruning score needs them)
    for round r = 1..R:
        remove the least important heads and FFN neurons   (only when ratios.structure < 1)
        shrink every matrix to final_ratio ** (r / R)  (factorize, then prune)          -> hooks.after_compress
        train the student for steps_per_round steps    (distillation, or gold labels)   -> hooks.after_step
        evaluate on the eval split, count parameters   (a RoundRecord)                  -> hooks.after_eval
    train final_steps more steps at the final size, evaluate once more
The last round lands exactly on the target, so the model trained in the final steps
has the target size.  Hooks observe the loop (benchmarks, progress lines, a search's reports)
without changing it.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..compress import MatrixPlan, ParamCount, Ratios, compress_step, compressible_modules, count_parameters, make_plan
from ..compress.accounting import matrix_names
from ..compress.calibration import collect_statistics, plugin_needs
from ..compress.registry import PruningScore, get_factorizer, get_pruning_score
from ..compress.structure import StructurePlan, Widths, kept_heads
from ..config import CompressionConfig, TrainConfig
from ..data import TaskSpec, main_score
from .distill import TERMS, distill_losses
from ..errors import LadaError
from .evaluate import evaluate
from .features import Features, train_batches
from ..nn.losses import task_loss
from ..precision import autocast
from .schedule import warmup_decay
from ..summary import MatrixRecord, RoundRecord, TrialSummary
from .teacher_outputs import CachedTeacher, TeacherCache

if TYPE_CHECKING:
    from ..compress.calibration import CalibrationStats


class TrialFailed(RuntimeError):
    """Training diverged (NaN/inf loss); the trial is recorded as failed."""


@dataclass(frozen=True)
class LoopHooks:
    """Optional observers of ``compress_model``.  They see the live student: read it, never change it."""

    before_compress: Callable[[int, nn.Module], None] | None = None   # (round, student) before its compression
    after_compress: Callable[[int, nn.Module], None] | None = None    # (round, student) after it
    after_step: Callable[[int, dict[str, float]], None] | None = None  # (step of the run, loss terms) per step
    after_eval: Callable[[RoundRecord], None] | None = None           # each round's (and the final) record


@dataclass(frozen=True)
class CompressionResult:
    student: nn.Module
    ratios: Ratios
    plans: tuple[MatrixPlan, ...]
    teacher_params: ParamCount
    student_params: ParamCount
    metrics: dict[str, float]           # metrics of the final student on the eval split (history[-1].split)
    score: float                        # the task's main metric
    history: tuple[RoundRecord, ...]    # one per round (+ one for the final steps)
    task: TaskSpec
    compression: CompressionConfig
    distill: bool
    teacher_reads: tuple[int, int] | None = None   # (read back, computed) teacher outputs, with a teacher cache

    @property
    def achieved_factor(self) -> float:
        return self.teacher_params.total / self.student_params.total

    def summary(self, **context) -> TrialSummary:
        """The typed record of this compression; ``context`` fills the fields the loop cannot know
        (target, model, teacher, data, a search's config ...)."""
        return TrialSummary(
            task=self.task.name, main_metric=self.task.main_metric,
            ratios=self.ratios.record(), achieved_factor=self.achieved_factor,
            teacher_params=self.teacher_params, student_params=self.student_params,
            matrices=tuple(MatrixRecord(p.name, p.group, p.shape, p.rank(), p.keep()) for p in self.plans),
            score=self.score, metrics=dict(self.metrics), history=self.history,
            factorizer=self.compression.factorizer, prune_score=self.compression.prune_score,
            distill=self.distill, **{"score_split": self.history[-1].split, **context})


@dataclass(frozen=True)
class TrainingPhase:
    """What every training step of the loop needs besides the batch."""

    student: nn.Module
    teacher: nn.Module
    cfg: TrainConfig
    task: TaskSpec
    hooks: LoopHooks
    scorer: PruningScore
    teacher_outputs: CachedTeacher | None = None   # the teacher's outputs read back when a search cached them


@dataclass(frozen=True)
class Optimization:
    """The optimizer of one training phase and its warm-up + decay schedule over the phase's ``steps``.

    A phase trained in several calls of ``train_steps`` (the final budget, scored between them) passes the same
    one each time, so its schedule runs once over the whole phase.
    """

    names: tuple[str, ...]        # the trained parameters, in the optimizer's order (its state is saved by name)
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler

    @classmethod
    def of(cls, student: nn.Module, cfg: TrainConfig, steps: int, learning_rate: float | None = None,
           warmup: float | None = None) -> Optimization:
        trained = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW([p for _, p in trained], lr=learning_rate or cfg.learning_rate,
                                      weight_decay=cfg.weight_decay)
        return cls(tuple(n for n, _ in trained), optimizer,
                   warmup_decay(optimizer, steps, cfg.warmup if warmup is None else warmup))

    def state(self) -> dict:
        """Optimizer and schedule state keyed by parameter name (a reloaded model may order them otherwise)."""
        saved = self.optimizer.state_dict()
        return {"state": {self.names[i]: v for i, v in saved["state"].items()},
                "groups": [{k: v for k, v in g.items() if k != "params"} for g in saved["param_groups"]],
                "schedule": self.schedule.state_dict()}

    def restore(self, state: dict) -> None:
        index = {name: i for i, name in enumerate(self.names)}
        missing = sorted(set(state["state"]) - set(index))
        if missing:
            raise LadaError(f"saved optimizer state names parameters the model does not have: {missing[:3]}")
        groups = [{**g, "params": list(range(len(self.names)))} for g in state["groups"]]
        self.optimizer.load_state_dict({"state": {index[n]: v for n, v in state["state"].items()},
                                        "param_groups": groups})
        self.schedule.load_state_dict(state["schedule"])


def train_steps(phase: TrainingPhase, batches, steps: int, first_step: int,
                optimization: Optimization | None = None) -> dict[str, float]:
    """``steps`` optimizer steps on the student; returns the mean of each loss term.  Without ``optimization``
    the steps are a phase of their own (a fresh optimizer, warm-up and decay over these ``steps``)."""
    student, teacher, cfg, task = phase.student, phase.teacher, phase.cfg, phase.task
    optimization = optimization or Optimization.of(student, cfg, steps)
    optimizer, schedule = optimization.optimizer, optimization.schedule
    observed = [(name, m, matrix_names(m)) for name, (_, m) in compressible_modules(student).items()] \
        if phase.scorer.learns_from_training else []
    heads = kept_heads(student)  # the teacher head of every student head, once heads were removed
    sums: dict[str, float] = {}
    student.train()
    for step in range(steps):
        batch = next(batches)
        labels = batch.pop("labels")
        if cfg.distill:
            with autocast(cfg.precision, labels.device):
                if phase.teacher_outputs is not None:
                    t_out = phase.teacher_outputs(batch)
                else:
                    with torch.no_grad():
                        t_out = teacher(**batch, output_hidden_states=True, output_attentions=True)
                s_out = student(**batch, output_hidden_states=True, output_attentions=True)
            terms = distill_losses(s_out, t_out, batch["attention_mask"], cfg.temperature, task.is_regression,
                                   teacher_heads=heads)
            loss = sum(getattr(cfg.loss_weights, name) * terms[name] for name in TERMS)
        else:
            with autocast(cfg.precision, labels.device):
                logits = student(**batch).logits
            terms = {"task": task_loss(logits.float(), labels, task.is_regression)}
            loss = terms["task"]
        if not math.isfinite(loss.item()):
            raise TrialFailed(f"loss became {loss.item()} at step {step + 1}")
        loss.backward()
        for name, module, names in observed:  # gradients as the loss made them, before clipping
            phase.scorer.observe(name, module, names)
        torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        values = {f"loss_{k}" if k != "loss" else k: v.item() for k, v in {"loss": loss, **terms}.items()}
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + value
        if phase.hooks.after_step is not None:
            phase.hooks.after_step(first_step + step + 1, values)
    student.eval()
    return {k: v / max(steps, 1) for k, v in sums.items()}


def _statistics(teacher: nn.Module, train: Features, task: TaskSpec, plans: list[MatrixPlan], cfg: TrainConfig,
                compression: CompressionConfig, device) -> CalibrationStats | None:
    """The calibration statistics the plug-ins in use need (None when they need none)."""

    needs = plugin_needs((compression.factorizer,), (compression.prune_score,), plans)
    if not needs:
        return None

    return collect_statistics(teacher, train, needs, batches=compression.calibration_batches,
                              batch_size=cfg.batch_size, device=device, task=task)


def compress_model(teacher: nn.Module, train: Features, dev: Features, task: TaskSpec, ratios: Ratios,
                   cfg: TrainConfig = TrainConfig(), device: torch.device | str = "cpu", *,
                   compression: CompressionConfig = CompressionConfig(), hooks: LoopHooks | None = None,
                   stats: CalibrationStats | None = None, eval_split: str = "dev",
                   teacher_cache: TeacherCache | None = None) -> CompressionResult:
    """Compress ``teacher`` (left untouched) to ``ratios`` by LadaBERT's iterative rounds.

    Every round is scored on ``dev``, the features given as the eval split; ``eval_split`` names it in the
    records ("val" when the caller holds the dev split back for the chosen model).

    ``stats``: calibration statistics gathered beforehand (shared by several runs); without them the
    loop gathers what the factorizer and pruning score need from ``train``.

    ``teacher_cache``: where the teacher's outputs on the training batches are kept for later runs on the same
    rows (``teacher_outputs``); None computes them every step.
    """
    hooks = hooks or LoopHooks()
    torch.manual_seed(cfg.seed)
    teacher = teacher.to(device).eval()
    teacher_params = count_parameters(teacher)
    student = copy.deepcopy(teacher)
    plans = make_plan(student, ratios)
    if stats is None:
        stats = _statistics(teacher, train, task, plans, cfg, compression, device)
    factorizer = get_factorizer(compression.factorizer)
    structure = StructurePlan(Widths.of(student.config), ratios.structure, compression.structure_score) \
        if ratios.structure < 1 else None
    # the unit scores read batches of their own, so the training batches are those of the same run without it
    unit_batches = train_batches(train, cfg.batch_size, cfg.seed + 1, device) if structure is not None else None
    outputs = teacher_cache.bind(teacher, cfg.precision) if teacher_cache is not None and cfg.distill else None
    phase = TrainingPhase(student, teacher, cfg, task, hooks, get_pruning_score(compression.prune_score), outputs)
    batches = train_batches(train, cfg.batch_size, cfg.seed, device)
    history: list[RoundRecord] = []

    def finish_round(number: int, started: float, losses: dict[str, float], final: bool) -> RoundRecord:
        metrics = evaluate(student, dev, task, cfg.eval_batch_size, device)
        params = count_parameters(student)
        record = RoundRecord(round=number, final=final, score=main_score(task, metrics), metrics=metrics,
                             params=params, achieved_factor=teacher_params.total / params.total,
                             losses=losses, seconds=time.perf_counter() - started, split=eval_split)
        history.append(record)
        if hooks.after_eval is not None:
            hooks.after_eval(record)
        return record

    for number in range(1, cfg.rounds + 1):
        started = time.perf_counter()
        if hooks.before_compress is not None:
            hooks.before_compress(number, student)
        if structure is not None:
            stats = structure.step(student, number / cfg.rounds, islice(unit_batches, compression.structure_batches),
                                   task, scorer=phase.scorer, stats=stats)
        compress_step(student, plans, number / cfg.rounds, factorizer=factorizer, scorer=phase.scorer, stats=stats)
        phase.scorer.reset()
        if hooks.after_compress is not None:
            hooks.after_compress(number, student)
        losses = train_steps(phase, batches, cfg.steps_per_round, (number - 1) * cfg.steps_per_round)
        record = finish_round(number, started, losses, final=cfg.final_steps == 0 and number == cfg.rounds)

    if cfg.final_steps:
        started = time.perf_counter()
        losses = train_steps(phase, batches, cfg.final_steps, cfg.rounds * cfg.steps_per_round)
        record = finish_round(cfg.rounds + 1, started, losses, final=True)

    return CompressionResult(student, ratios, tuple(plans), teacher_params, count_parameters(student),
                             record.metrics, record.score, tuple(history), task, compression, cfg.distill,
                             (outputs.hits, outputs.misses) if outputs is not None else None)
