"""Optuna samplers by name: the registry that ``--sampler`` picks from.

Adding one is one entry: a factory ``(seed, startup trials) -> optuna sampler`` and whether it can
search several objectives (score and latency) at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import LadaError


@dataclass(frozen=True)
class SamplerKind:
    build: Callable[[int, int], object]   # (seed, random start-up trials) -> optuna.samplers.BaseSampler
    multi_objective: bool


def _tpe(seed: int, startup: int):
    import optuna

    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=startup)


def _random(seed: int, startup: int):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _cmaes(seed: int, startup: int):
    import optuna

    return optuna.samplers.CmaEsSampler(seed=seed)


def _qmc(seed: int, startup: int):
    import optuna

    return optuna.samplers.QMCSampler(seed=seed)


def _nsga2(seed: int, startup: int):
    import optuna

    # a generation of Optuna's default 50 would be a random search at these budgets
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, startup))


def _gp(seed: int, startup: int):
    import optuna

    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)


SAMPLERS: dict[str, SamplerKind] = {
    "tpe": SamplerKind(_tpe, multi_objective=True),
    "random": SamplerKind(_random, multi_objective=True),
    "cmaes": SamplerKind(_cmaes, multi_objective=False),
    "qmc": SamplerKind(_qmc, multi_objective=True),
    "nsga2": SamplerKind(_nsga2, multi_objective=True),
    "gp": SamplerKind(_gp, multi_objective=False),
}


def sampler_kind(name: str, multi: bool = False) -> SamplerKind:
    """The registered sampler ``name``; LadaError when unknown, or single-objective while ``multi``."""
    if name not in SAMPLERS:
        raise LadaError(f"unknown sampler {name!r}; allowed: {', '.join(SAMPLERS)}")
    kind = SAMPLERS[name]
    if multi and not kind.multi_objective:
        allowed = ", ".join(n for n, k in SAMPLERS.items() if k.multi_objective)
        raise LadaError(f"sampler {name!r} is single-objective; use {allowed} with latency")
    return kind


def startup_trials(num_samples: int) -> int:
    """Random trials before a model-based sampler takes over, scaled to the budget: a third of the trials,
    at least 2 and at most Optuna's default of 10 (with Optuna's 10 a 16-trial search was random search)."""
    return min(10, max(2, num_samples // 3))


def search_seed(seed: int, task: str, target: float) -> int:
    """The sampler's seed: ``--seed`` mixed with the task and the target by a stable hash (not Python's ``hash``,
    which changes per process), so searches at different targets explore different points."""
    text = f"ladasearch-sampler|{seed}|{task}|{float(target)!r}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def make_sampler(name: str, seed: int, multi: bool, num_samples: int, startup: int | None = None):
    """The Optuna sampler ``name`` for a search of ``num_samples`` trials."""
    return sampler_kind(name, multi).build(seed, startup or startup_trials(num_samples))
