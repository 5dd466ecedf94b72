"""The typed record of one compression (a `compress` run or a search trial), as saved in ``summary.json``.

Written by the LadaBERT loop and the search worker, read by tracking, export, plots and the
inference reports.  ``from_json`` validates every field (types, ranges, the group of every matrix),
so a hand-edited or truncated ``summary.json`` is one clear LadaError, never a wrong table.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from .errors import LadaError

STATUSES = ("completed", "stopped_early")
MATRIX_GROUPS = ("embedding", "encoder")
AT_TARGET = 0.01   # a round is at the target size once its achieved factor is at most 1% short of the target


def reaches_target(achieved_factor: float, target: float) -> bool:
    """The at-target rule: ``achieved_factor`` at most ``AT_TARGET`` short of ``target`` (beyond it counts too:
    SVD ranks round, and a smaller model has no advantage)."""
    return achieved_factor >= target * (1 - AT_TARGET) - 1e-9


# how a search trial ended: completed its rounds; stopped by the scheduler after it reached the target size (it has
# a score at the target, ranked like a completed trial's); stopped before it (no score at the target); failed
OUTCOMES = ("completed", "stopped_at_target", "stopped_before_target", "failed")


def trial_outcome(status: str, score_at_target: float | None) -> str:
    """The one rule from a trial's status (``completed``, ``stopped_early``, ``failed``) and its score at the target
    (None or NaN: it never reached the target size) to its outcome (``OUTCOMES``)."""
    if status == "stopped_early":
        at_target = score_at_target is not None and math.isfinite(score_at_target)
        return "stopped_at_target" if at_target else "stopped_before_target"
    return status


def own_task(data: dict[str, Any] | None) -> str | None:
    """How a job's task was given, read from its ``data`` record: "files" (``--train-file``), "dataset"
    (``--dataset``), or None for a GLUE task (whose class names come from its TaskSpec, not the record)."""
    data = data or {}
    return "files" if data.get("train_file") else "dataset" if data.get("dataset") else None


def _need(data: Any, key: str, kinds: type | tuple[type, ...], where: str, optional: bool = False):
    if not isinstance(data, dict):
        raise LadaError(f"{where} must be a mapping, got {type(data).__name__}")
    if key not in data or data[key] is None:
        if optional:
            return None
        raise LadaError(f"{where} has no {key!r}")
    value = data[key]
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and bool not in kinds:
        raise LadaError(f"{where}.{key} must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}")
    if not isinstance(value, kinds):
        raise LadaError(f"{where}.{key} must be {' or '.join(k.__name__ for k in kinds)}, got {str(value)[:60]!r}")
    return value


def _numbers(data: Any, where: str) -> dict[str, float]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LadaError(f"{where} must be a mapping of numbers, got {type(data).__name__}")
    out = {}
    for k, v in data.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise LadaError(f"{where}.{k} must be a number, got {str(v)[:60]!r}")
        out[str(k)] = float(v)
    return out


@dataclass(frozen=True)
class RatioRecord:
    """Retention ratios of eq. 7 (see ``compress.budget.Ratios``) and the method that used them."""

    method: str
    embedding: float
    svd: float
    weight: float
    structure: float = 1.0   # share of attention heads and FFN neurons kept (1: none removed, the paper)

    @property
    def encoder(self) -> float:
        return self.svd * self.weight

    def reduction_factors(self) -> dict[str, float]:
        factors = {"embedding": 1 / self.embedding, "svd": 1 / self.svd, "weight": 1 / self.weight,
                   "encoder": 1 / self.encoder}
        return factors | ({"structure": 1 / self.structure} if self.structure < 1 else {})

    @classmethod
    def from_json(cls, data: Any, where: str = "ratios") -> RatioRecord:
        keys = ("embedding", "svd", "weight") + (("structure",) if "structure" in data else ())  # older: none
        values = {k: _need(data, k, float, where) for k in keys}
        for k, v in values.items():
            if math.isnan(v) or not 0.0 < v <= 1.0:
                raise LadaError(f"{where}.{k} must be a retention ratio in (0, 1], got {v!r}")
        return cls(method=_need(data, "method", str, where), **values)

    def to_json(self) -> dict:
        out = {**asdict(self), "encoder": self.encoder}
        if self.structure == 1.0:  # the paper's method: summaries read as before structured removal existed
            del out["structure"]
        return out


@dataclass(frozen=True)
class ParamRecord:
    """Stored non-zero parameters per group of eq. 7."""

    embedding: int
    encoder: int
    dense: int

    @property
    def total(self) -> int:
        return self.embedding + self.encoder + self.dense

    def to_json(self) -> dict:
        return {**asdict(self), "total": self.total}

    @classmethod
    def from_json(cls, data: Any, where: str) -> ParamRecord:
        values = {k: _need(data, k, int, where) for k in ("embedding", "encoder", "dense")}
        if any(v < 0 for v in values.values()) or sum(values.values()) <= 0:
            raise LadaError(f"{where}: parameter counts must be >= 0 with a positive total, got {values}")
        return cls(**values)


@dataclass(frozen=True)
class MatrixRecord:
    """One compressed matrix: its group, dense shape, SVD rank (None: not factorized), kept entries (None: all)."""

    name: str
    group: str
    shape: tuple[int, int]
    rank: int | None = None
    kept: int | None = None

    @classmethod
    def from_json(cls, data: Any, where: str = "matrices") -> MatrixRecord:
        name = _need(data, "name", str, where)
        group = _need(data, "group", str, where)
        if group not in MATRIX_GROUPS:
            raise LadaError(f"{where} {name}: group {group!r} is not one of {', '.join(MATRIX_GROUPS)}")
        shape = _need(data, "shape", list, where)
        if len(shape) != 2 or not all(isinstance(s, int) and s > 0 for s in shape):
            raise LadaError(f"{where} {name}: shape must be two positive integers, got {shape!r}")
        rank = _need(data, "rank", int, where, optional=True)
        kept = _need(data, "kept", int, where, optional=True)
        if rank is not None and not 1 <= rank <= min(shape):
            raise LadaError(f"{where} {name}: rank {rank} is outside [1, {min(shape)}]")
        if kept is not None and kept < 1:
            raise LadaError(f"{where} {name}: kept {kept} must be >= 1")
        return cls(name, group, (shape[0], shape[1]), rank, kept)

    def to_json(self) -> dict:
        return {"name": self.name, "group": self.group, "shape": list(self.shape), "rank": self.rank,
                "kept": self.kept}


@dataclass(frozen=True)
class RoundRecord:
    """What one round (or the final steps) of the LadaBERT loop measured."""

    round: int
    final: bool
    score: float                     # the task's main metric on the split that was scored
    metrics: dict[str, float]        # every metric of the task on that split
    params: ParamRecord
    achieved_factor: float
    losses: dict[str, float]         # mean of each loss term over the round's steps ("loss", "loss_hidden", ...)
    seconds: float
    split: str = "dev"               # which split ``score`` and ``metrics`` come from ("val" or "dev")

    def flat(self) -> dict[str, float]:
        """Numbers for a metric store: names from the task's own metrics and loss terms, never a fixed list."""
        out = {"round": float(self.round), "score": self.score, "achieved_factor": self.achieved_factor,
               "params": float(self.params.total), "params_embedding": float(self.params.embedding),
               "params_encoder": float(self.params.encoder), "seconds": self.seconds, **self.metrics, **self.losses}
        return {k: v for k, v in out.items() if math.isfinite(v)}

    @classmethod
    def from_json(cls, data: Any, where: str = "history") -> RoundRecord:
        return cls(round=_need(data, "round", int, where), final=bool(_need(data, "final", bool, where)),
                   score=_need(data, "score", float, where), metrics=_numbers(data.get("metrics"), f"{where}.metrics"),
                   params=ParamRecord.from_json(data.get("params"), f"{where}.params"),
                   achieved_factor=_need(data, "achieved_factor", float, where),
                   losses=_numbers(data.get("losses"), f"{where}.losses"),
                   seconds=_need(data, "seconds", float, where),
                   split=_need(data, "split", str, where, optional=True) or "dev")

    def to_json(self) -> dict:
        return {"round": self.round, "final": self.final, "score": self.score, "metrics": dict(self.metrics),
                "params": self.params.to_json(), "achieved_factor": self.achieved_factor,
                "losses": dict(self.losses), "seconds": self.seconds, "split": self.split}


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
        matrices = _need(data, "matrices", list, where)
        history = _need(data, "history", list, where)
        return cls(
            task=_need(data, "task", str, where), main_metric=_need(data, "main_metric", str, where),
            ratios=RatioRecord.from_json(data.get("ratios"), f"{where}.ratios"),
            achieved_factor=_need(data, "achieved_factor", float, where),
            teacher_params=ParamRecord.from_json(data.get("teacher_params"), f"{where}.teacher_params"),
            student_params=ParamRecord.from_json(data.get("student_params"), f"{where}.student_params"),
            matrices=tuple(MatrixRecord.from_json(m, f"{where}.matrices") for m in matrices),
            score=_need(data, "score", float, where, optional=True),
            metrics=_numbers(data.get("metrics"), f"{where}.metrics"),
            history=tuple(RoundRecord.from_json(r, f"{where}.history") for r in history),
            status=_need(data, "status", str, where, optional=True) or "completed",
            target=_need(data, "target", float, where, optional=True),
            factorizer=_need(data, "factorizer", str, where, optional=True) or "svd",
            prune_score=_need(data, "prune_score", str, where, optional=True) or "magnitude",
            distill=bool(data.get("distill", True)),
            score_split=_need(data, "score_split", str, where, optional=True) or "dev",
            model=_need(data, "model", str, where, optional=True),
            teacher=_need(data, "teacher", str, where, optional=True),
            teacher_score=_need(data, "teacher_score", float, where, optional=True),
            teacher_metrics=_numbers(data.get("teacher_metrics"), f"{where}.teacher_metrics"),
            data=_need(data, "data", dict, where, optional=True) or {},
            config=_need(data, "config", dict, where, optional=True) or {},
            space=_need(data, "space", str, where, optional=True),
            latency_ms=_need(data, "latency_ms", float, where, optional=True),
            inference=_need(data, "inference", dict, where, optional=True),
            dev_score=_need(data, "dev_score", float, where, optional=True),
            dev_metrics=_numbers(data.get("dev_metrics"), f"{where}.dev_metrics"),
            final=_need(data, "final", dict, where, optional=True))
