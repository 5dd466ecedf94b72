"""The component records of a ``TrialSummary`` (compression ratios, parameter counts, one matrix, one round) and
the checks ``from_json`` applies to every field of ``summary.json``."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import LadaError

MATRIX_GROUPS = ("embedding", "encoder")


def need(data: Any, key: str, kinds: type | tuple[type, ...], where: str, optional: bool = False):
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


def numbers_of(data: Any, where: str) -> dict[str, float]:
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
        values = {k: need(data, k, float, where) for k in keys}
        for k, v in values.items():
            if math.isnan(v) or not 0.0 < v <= 1.0:
                raise LadaError(f"{where}.{k} must be a retention ratio in (0, 1], got {v!r}")
        return cls(method=need(data, "method", str, where), **values)

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
        values = {k: need(data, k, int, where) for k in ("embedding", "encoder", "dense")}
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
        name = need(data, "name", str, where)
        group = need(data, "group", str, where)
        if group not in MATRIX_GROUPS:
            raise LadaError(f"{where} {name}: group {group!r} is not one of {', '.join(MATRIX_GROUPS)}")
        shape = need(data, "shape", list, where)
        if len(shape) != 2 or not all(isinstance(s, int) and s > 0 for s in shape):
            raise LadaError(f"{where} {name}: shape must be two positive integers, got {shape!r}")
        rank = need(data, "rank", int, where, optional=True)
        kept = need(data, "kept", int, where, optional=True)
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
        return cls(round=need(data, "round", int, where), final=bool(need(data, "final", bool, where)),
                   score=need(data, "score", float, where), metrics=numbers_of(data.get("metrics"), f"{where}.metrics"),
                   params=ParamRecord.from_json(data.get("params"), f"{where}.params"),
                   achieved_factor=need(data, "achieved_factor", float, where),
                   losses=numbers_of(data.get("losses"), f"{where}.losses"),
                   seconds=need(data, "seconds", float, where),
                   split=need(data, "split", str, where, optional=True) or "dev")

    def to_json(self) -> dict:
        return {"round": self.round, "final": self.final, "score": self.score, "metrics": dict(self.metrics),
                "params": self.params.to_json(), "achieved_factor": self.achieved_factor,
                "losses": dict(self.losses), "seconds": self.seconds, "split": self.split}
