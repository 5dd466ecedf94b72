"""The compression plug-ins a search space chooses between: its ``compression`` section.

    compression:
      factorizer: {choices: [svd, fisher, activation]}   # registered names (``compress.registry``)
      prune_score: magnitude                              # or one fixed name
      structure_score: {choices: [taylor, activation]}    # unit scores (``compress.unit_scores``)

A name may carry a plug-in's arguments (``"mine:alpha=0.5"``, see ``ladasearch.registry``).

Each key is a fixed name or a list of choices, sampled by Optuna as a categorical named
``compression.<key>``.  A key the space leaves out takes the run's own setting (``--factorizer``,
``--prune-score``, ``--structure-score``); ``fixed`` pins a key (what an explicit command-line option does to the space).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..compress.registry import get_factorizer, get_pruning_score
from ..compress.unit_scores import get_unit_score
from ..config import CompressionConfig
from ..errors import LadaError
from ..registry import canonical
from .space_param import Param, parse_names

# the registry lookup of each key
KEYS = {"factorizer": get_factorizer, "prune_score": get_pruning_score, "structure_score": get_unit_score}


def _registered(key: str):
    """The check of a ``key`` name: its registry's lookup, its error prefixed with the space's key."""
    def check(value: str) -> None:
        try:
            KEYS[key](value)
        except LadaError as exc:
            raise LadaError(f"compression.{key}: {exc}") from None
    return check


def _spelled(spec: Any) -> Any:
    """A key's value with every plug-in spec in its one spelling (a ``{name: ..., arg: ...}`` mapping included)."""
    def one(value: Any) -> Any:
        return canonical(value) if isinstance(value, (str, dict)) and (not isinstance(value, dict) or "name" in value) \
            else value
    if isinstance(spec, dict) and set(spec) == {"choices"} and isinstance(spec["choices"], list):
        return {"choices": [one(v) for v in spec["choices"]]}
    return one(spec)


@dataclass(frozen=True)
class CompressionChoices:
    """The space's factorizer, pruning score and unit score: fixed, choices, or None (the run's setting)."""

    factorizer: Param | None = None
    prune_score: Param | None = None
    structure_score: Param | None = None

    @classmethod
    def parse(cls, data: Any) -> CompressionChoices:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise LadaError(f"compression must be a mapping with keys {', '.join(KEYS)}, got {data!r:.60}")
        unknown = sorted(set(data) - set(KEYS))
        if unknown:
            raise LadaError(f"compression: unknown key(s) {unknown}; allowed: {', '.join(KEYS)}")
        return cls(**{key: parse_names(f"compression.{key}", _spelled(spec), _registered(key), "a registered name")
                      for key, spec in data.items()})

    def _by_key(self) -> dict[str, Param | None]:
        return {key: getattr(self, key) for key in KEYS}

    def params(self) -> list[Param]:
        return [p for p in self._by_key().values() if p is not None]

    def to_dict(self) -> dict[str, Any]:
        return {key: p.value if p.fixed else {"choices": list(p.choices)}
                for key, p in self._by_key().items() if p is not None}

    def fixed(self, **names: str) -> CompressionChoices:
        """These choices with the given keys pinned to one name each (``factorizer="fisher"``)."""
        unknown = sorted(set(names) - set(KEYS))
        if unknown:
            raise LadaError(f"compression: unknown key(s) {unknown}; allowed: {', '.join(KEYS)}")
        for key, name in names.items():
            KEYS[key](name)
        return replace(self, **{key: Param(f"compression.{key}", value=canonical(name)) for key, name in names.items()})

    def candidates(self, base: CompressionConfig) -> dict[str, tuple[str, ...]]:
        """Every name each key can take in a trial (the space's, else ``base``'s)."""
        return {key: tuple(p.values()) if p is not None else (getattr(base, key),)
                for key, p in self._by_key().items()}

    def config(self, base: CompressionConfig, config: dict) -> CompressionConfig:
        """The compression of a trial: ``base`` with the names its sampled ``config`` holds."""
        chosen = {key: config[p.name] for key, p in self._by_key().items() if p is not None and p.name in config}
        return replace(base, **chosen)
