"""Plug-in points of compression: how a matrix is factorized and how entries are scored for pruning.

In the style of Optuna's samplers and Torch-Pruning's importance classes, a method is a small
class behind a protocol, registered by name; the rest of the package asks the registry, never
switches on a string.  A method that needs data declares it in ``needs`` (a set of
``calibration.STATISTICS`` names); the LadaBERT loop then gathers those statistics once (from
train batches through the teacher) and hands each layer its own ``LayerStats``.

Adding a method from outside the package::

    class RandomScore(PruningScore):
        name = "random"
        def scores(self, module, names, stats):
            return {n: torch.rand_like(getattr(module, n)) for n in names}

    register_pruning_score(RandomScore)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from ..errors import LadaError

if TYPE_CHECKING:
    from .calibration import LayerStats


class Factorizer:
    """Turns a dense weight W (m x n) into factors A (m x r), B (n x r) with W ~= A @ B.T."""

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()   # calibration statistics this factorizer reads

    def factorize(self, weight: torch.Tensor, rank: int, stats: LayerStats | None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def refactor(self, a: torch.Tensor, b: torch.Tensor, rank: int,
                 stats: LayerStats | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Shrink already factorized A @ B.T to ``rank``, through the factors (no m x n product)."""
        raise NotImplementedError


class PruningScore:
    """Importance of every entry of a module's matrix tensors; the lowest-scored entries are pruned.

    Scores that learn from training (Taylor, movement) accumulate in ``observe`` which the loop
    calls after every backward pass, before the optimizer step; ``reset`` starts a new round.
    """

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()

    def scores(self, module: nn.Module, names: tuple[str, ...],
               stats: LayerStats | None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def observe(self, module_name: str, module: nn.Module, names: tuple[str, ...]) -> None:
        """Called after each backward pass of the round's training steps (default: nothing to learn)."""

    def reset(self) -> None:
        """Forget what ``observe`` accumulated (called after each pruning step)."""

    def carry(self, module_name: str, new: nn.Module) -> None:
        """``module_name`` was just replaced by ``new`` (re-factorized); move what was learned into its basis."""

    def narrow(self, module_name: str, module: nn.Module, rows: torch.Tensor | None,
               cols: torch.Tensor | None) -> None:
        """``module_name`` (the same ``module``) just lost all output rows but ``rows`` / input columns but ``cols``
        (structured removal): cut what was learned alike."""

    @property
    def learns_from_training(self) -> bool:
        return type(self).observe is not PruningScore.observe


FACTORIZERS: dict[str, type[Factorizer]] = {}
PRUNING_SCORES: dict[str, type[PruningScore]] = {}


def _register(table: dict, kind: str, cls: type) -> type:
    if not getattr(cls, "name", ""):
        raise LadaError(f"a {kind} class needs a non-empty `name`, {cls.__name__} has none")
    table[cls.name] = cls
    return cls


def register_factorizer(cls: type[Factorizer]) -> type[Factorizer]:
    return _register(FACTORIZERS, "factorizer", cls)


def register_pruning_score(cls: type[PruningScore]) -> type[PruningScore]:
    return _register(PRUNING_SCORES, "pruning score", cls)


def _lookup(table: dict, kind: str, name: str):
    if name not in table:
        raise LadaError(f"unknown {kind} {name!r}; allowed: {', '.join(sorted(table))}")
    return table[name]()


def get_factorizer(name: str) -> Factorizer:
    return _lookup(FACTORIZERS, "factorizer", name)


def get_pruning_score(name: str) -> PruningScore:
    return _lookup(PRUNING_SCORES, "pruning score", name)
