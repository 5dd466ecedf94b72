"""One parameter of a search space: a fixed value, a numeric range (optionally log-scaled) or a list of choices."""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

from ..errors import LadaError


@dataclass(frozen=True)
class Param:
    """A fixed value, a numeric range (optionally log-scaled) or a list of choices."""

    name: str
    value: Any = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None

    @classmethod
    def parse(cls, name: str, spec: Any, kind: type = float) -> Param:
        if isinstance(spec, dict):
            unknown = set(spec) - {"low", "high", "log", "choices"}
            if unknown:
                raise LadaError(f"{name}: unknown key(s) {sorted(unknown)}; allowed: low, high, log, choices")
            if "choices" in spec:
                if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
                    raise LadaError(f"{name}: 'choices' must be a non-empty list and stand alone")
                return cls(name, choices=tuple(_typed(name, v, kind) for v in spec["choices"]))
            if "low" not in spec or "high" not in spec:
                raise LadaError(f"{name}: a range needs both 'low' and 'high', got {sorted(spec)}")
            low, high = _typed(name, spec["low"], kind), _typed(name, spec["high"], kind)
            if low > high:
                raise LadaError(f"{name}: low {low} is above high {high}")
            log = spec.get("log", False)
            if not isinstance(log, bool):
                raise LadaError(f"{name}: 'log' must be true or false, got {log!r}")
            if log and low <= 0:
                raise LadaError(f"{name}: a log range needs low > 0, got {low}")
            return cls(name, low=low, high=high, log=log)
        return cls(name, value=_typed(name, spec, kind))

    @property
    def fixed(self) -> bool:
        return self.value is not None

    def values(self) -> list:
        """Every value this parameter can take that is worth checking: the value, the bounds or the choices."""
        return [self.value] if self.fixed else list(self.choices) if self.choices else [self.low, self.high]

    def suggest(self, trial) -> Any:
        if self.fixed:
            return self.value
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if isinstance(self.low, int) and isinstance(self.high, int):
            return trial.suggest_int(self.name, self.low, self.high, log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


def _typed(name: str, value: Any, kind: type):
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if kind is bool and isinstance(value, bool):
        return value
    if kind is str and isinstance(value, str):
        return value
    raise LadaError(f"{name}: expected {kind.__name__}, got {value!r}")


def parse_names(name: str, spec: Any, check: Callable[[str], None], noun: str) -> Param:
    """One name or ``{choices: [names]}`` of the plug-ins a space picks from (methods, factorizers, scores):
    ``check`` raises a LadaError for a name it does not know; a name may be given once only."""
    if isinstance(spec, dict) and (set(spec) != {"choices"} or not isinstance(spec["choices"], list)
                                   or not spec["choices"]):
        raise LadaError(f"{name}: {noun} or {{choices: [names]}}, got {spec!r:.60}")
    param = Param.parse(name, spec, str)
    for value in param.values():
        check(value)
    if param.choices is not None and len(set(param.choices)) != len(param.choices):
        raise LadaError(f"{name}: choices {list(param.choices)} name one twice")
    return param
