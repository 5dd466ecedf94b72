"""Plug-in points of compression: how a matrix is factorized and how entries are scored for pruning.

In the style of Optuna's samplers and Torch-Pruning's importance classes, a method is a small
class behind a protocol, registered by name; the rest of the package asks the registry, never
switches on a string.  A method that needs data declares it in ``needs`` (a set of
``calibration.STATISTICS`` names); the LadaBERT loop then gathers those statistics once (from
train batches through the teacher) and hands each layer its own ``LayerStats``.

Adding a method from outside the package::

    class RandomScore(PruningScore):
        name = "random"
        def __init__(self, seed: int = 0):
            self.generator = torch.Generator().manual_seed(seed)
        def scores(self, module, names, stats):
            return {n: torch.rand(getattr(module, n).shape, generator=self.generator) for n in names}

    register_pruning_score(RandomScore)      # then --prune-score random, or "random:seed=3"

The tables are ``ladasearch.registry.Registry`` objects: a name is taken once, and a spec may carry
constructor arguments.  A plug-in package makes its classes known in every process (the CLI's, each Ray
worker's) through the ``ladasearch.plugins`` entry point group (``registry.load_plugins``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

from ..registry import Registry

if TYPE_CHECKING:
    from .calibration import LayerStats


class Factorizer(ABC):
    """Turns a dense weight W (m x n) into factors A (m x r), B (n x r) with W ~= A @ B.T."""

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()   # calibration statistics this factorizer reads

    @abstractmethod
    def factorize(self, weight: torch.Tensor, rank: int, stats: LayerStats | None) -> tuple[torch.Tensor, torch.Tensor]:
        ...

    @abstractmethod
    def refactor(self, a: torch.Tensor, b: torch.Tensor, rank: int,
                 stats: LayerStats | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Shrink already factorized A @ B.T to ``rank``, through the factors (no m x n product)."""


class PruningScore(ABC):
    """Importance of every entry of a module's matrix tensors; the lowest-scored entries are pruned.

    Scores that learn from training (Taylor, movement) accumulate in ``observe`` which the loop
    calls after every backward pass, before the optimizer step; ``reset`` starts a new round.
    """

    name: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def scores(self, module: nn.Module, names: tuple[str, ...],
               stats: LayerStats | None) -> dict[str, torch.Tensor]:
        ...

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


FACTORIZERS: Registry[Factorizer] = Registry("factorizer", Factorizer)
PRUNING_SCORES: Registry[PruningScore] = Registry("pruning score", PruningScore)
register_factorizer = FACTORIZERS.register
register_pruning_score = PRUNING_SCORES.register


def get_factorizer(spec: str) -> Factorizer:
    """A new factorizer from its spec (``"svd"``, ``"mine:alpha=0.5"``)."""
    return FACTORIZERS.create(spec)


def get_pruning_score(spec: str) -> PruningScore:
    """A new pruning score from its spec (each trial and round gets its own: scores may learn)."""
    return PRUNING_SCORES.create(spec)
