"""The typed record of one compression (a `compress` run or a search trial), as saved in ``summary.json``.

Written by the LadaBERT loop and the search worker, read by tracking, export, plots and the
inference reports.  ``from_json`` validates every field (types, ranges, the group of every matrix),
so a hand-edited or truncated ``summary.json`` is one clear LadaError, never a wrong table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..errors import LadaError
from .records import MatrixRecord, ParamRecord, RatioRecord, RoundRecord, need, numbers_of

STATUSES = ("completed", "stopped_early")
AT_TARGET = 0.01   # a round is at the target size once its achieved factor is at most 1% short of the target


def reaches_target(achieved_factor: float, target: float) -> bool:
    """The at-target rule: ``achieved_factor`` at most ``AT_TARGET`` short of ``target`` (beyond it counts too:
    SVD ranks round, and a smaller model has no advantage)."""
    return achieved_factor >= target * (1 - AT_TARGET) - 1e-9


# how a search trial ended: completed its rounds; stopped by the scheduler after it reached the target size (it has
# a score at the target, ranked like a completed trial's); stopped before it (no score at the target); failed;
# interrupted (still running when the search was stopped by Ctrl-C or SIGTERM: a resume runs it again)
OUTCOMES = ("completed", "stopped_at_target", "stopped_before_target", "failed", "interrupted")


def trial_outcome(status: str, score_at_target: float | None) -> str:
    """The one rule from a trial's status (``completed``, ``stopped_early``, ``failed``, ``interrupted``) and its
    score at the target (None or NaN: it never reached the target size) to its outcome (``OUTCOMES``)."""
    if status == "stopped_early":
        at_target = score_at_target is not None and math.isfinite(score_at_target)
        return "stopped_at_target" if at_target else "stopped_before_target"
    return status


def own_task(data: dict[str, Any] | None) -> str | None:
    """How a job's task was given, read from its ``data`` record: "files" (``--train-file``), "dataset"
    (``--dataset``), or None for a GLUE task (whose class names come from its TaskSpec, not the record)."""
    data = data or {}
    return "files" if data.get("train_file") else "dataset" if data.get("dataset") else None


@dataclass(frozen=True)
class TrialSummary:
    """One compression's record.  ``status`` 'stopped_early' = a search trial stopped before its target size."""

    task: str
    main_metric: str
    ratios: RatioRecord
    achieved_factor: float
    teacher_params: ParamRecord
    student_params: ParamRecord
    matrices: tuple[MatrixRecord, ...]
    score: float | None                      # main metric of the last round (on ``score_split``, "val" in a job)
    metrics: dict[str, float]
    history: tuple[RoundRecord, ...]
    status: str = "completed"
    target: float | None = None
    factorizer: str = "svd"
    prune_score: str = "magnitude"
    distill: bool = True
    score_split: str = "dev"
    model: str | None = None
    teacher: str | None = None
    teacher_score: float | None = None
    teacher_metrics: dict[str, float] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)      # data source: files, subset sizes, split, seed
    config: dict[str, Any] = field(default_factory=dict)    # the sampled search config (search trials)
    space: str | None = None
    latency_ms: float | None = None
    inference: dict[str, Any] | None = None                 # written by `ladasearch measure`
    dev_score: float | None = None                          # the final student on dev: only for the chosen model
    dev_metrics: dict[str, float] = field(default_factory=dict)
    final: dict[str, Any] | None = None     # the final budget's record (``ladasearch.final``): steps, rows, curve

    def __post_init__(self):
        if self.status not in STATUSES:
            raise LadaError(f"summary status {self.status!r} is not one of {', '.join(STATUSES)}")
        if not (isinstance(self.achieved_factor, float) and math.isfinite(self.achieved_factor)
                and self.achieved_factor > 0):
            raise LadaError(f"summary achieved_factor must be a positive number, got {self.achieved_factor!r}")
        if self.target is not None and not self.target > 1:
            raise LadaError(f"summary target must be above 1, got {self.target!r}")

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def outcome(self) -> str:
        return trial_outcome(self.status, self.score_at_target)

    @property
    def score_at_target(self) -> float | None:
        """The score of the last round at the target size: its factor at most 1% short of the target (None: it
        never got there).  Beyond the target counts too: SVD ranks round, and a smaller model has no advantage.

        The only score a search ranks: a trial stopped at an intermediate size scores higher for being larger.
        """
        if self.target is None:
            return None
        at = [r for r in self.history if reaches_target(r.achieved_factor, self.target)]
        if at:
            return at[-1].score
        # a record without rounds (written by hand or by an older version): its final size decides
        return (self.score if not self.history and self.completed and reaches_target(self.achieved_factor, self.target)
                else None)

    @property
    def ranks(self) -> dict[str, int]:
        return {m.name: m.rank for m in self.matrices if m.rank is not None}

    def with_(self, **changes) -> TrialSummary:
        return replace(self, **changes)

    def to_json(self) -> dict:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (RatioRecord, ParamRecord)):
                value = value.to_json()
            elif f.name in ("matrices", "history"):
                value = [v.to_json() for v in value]
            out[f.name] = value
        out["reduction_factors"] = self.ratios.reduction_factors()
        out["score_at_target"] = self.score_at_target
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "summary") -> TrialSummary:
        if not isinstance(data, dict):
            raise LadaError(f"{where} must be a JSON object, got {type(data).__name__}")
        matrices = need(data, "matrices", list, where)
        history = need(data, "history", list, where)
        return cls(
            task=need(data, "task", str, where), main_metric=need(data, "main_metric", str, where),
            ratios=RatioRecord.from_json(data.get("ratios"), f"{where}.ratios"),
            achieved_factor=need(data, "achieved_factor", float, where),
            teacher_params=ParamRecord.from_json(data.get("teacher_params"), f"{where}.teacher_params"),
            student_params=ParamRecord.from_json(data.get("student_params"), f"{where}.student_params"),
            matrices=tuple(MatrixRecord.from_json(m, f"{where}.matrices") for m in matrices),
            score=need(data, "score", float, where, optional=True),
            metrics=numbers_of(data.get("metrics"), f"{where}.metrics"),
            history=tuple(RoundRecord.from_json(r, f"{where}.history") for r in history),
            status=need(data, "status", str, where, optional=True) or "completed",
            target=need(data, "target", float, where, optional=True),
            factorizer=need(data, "factorizer", str, where, optional=True) or "svd",
            prune_score=need(data, "prune_score", str, where, optional=True) or "magnitude",
            distill=bool(data.get("distill", True)),
            score_split=need(data, "score_split", str, where, optional=True) or "dev",
            model=need(data, "model", str, where, optional=True),
            teacher=need(data, "teacher", str, where, optional=True),
            teacher_score=need(data, "teacher_score", float, where, optional=True),
            teacher_metrics=numbers_of(data.get("teacher_metrics"), f"{where}.teacher_metrics"),
            data=need(data, "data", dict, where, optional=True) or {},
            config=need(data, "config", dict, where, optional=True) or {},
            space=need(data, "space", str, where, optional=True),
            latency_ms=need(data, "latency_ms", float, where, optional=True),
            inference=need(data, "inference", dict, where, optional=True),
            dev_score=need(data, "dev_score", float, where, optional=True),
            dev_metrics=numbers_of(data.get("dev_metrics"), f"{where}.dev_metrics"),
            final=need(data, "final", dict, where, optional=True))
