"""A plug-in package as a user ships one: a factorizer that takes a constructor argument and a unit score that
takes one, made known to ladasearch by the ``ladasearch.plugins`` entry point (``tests/test_plugin_entry_points.py``
lays the package out as pip installs it, with that entry point).

Each call appends ``pid kind args`` to the file ``$LADASEARCH_TOY_LOG``, so a test can see which processes used it.
"""

from __future__ import annotations

import os

import torch

from ladasearch.compress.registry import Factorizer, register_factorizer
from ladasearch.compress.unit_scores import UnitScore, _add, register_unit_score


def _log(kind: str, args: str) -> None:
    path = os.environ.get("LADASEARCH_TOY_LOG")
    if path:
        with open(path, "a") as out:
            out.write(f"{os.getpid()} {kind} {args}\n")


@register_factorizer
class SeededBasis(Factorizer):
    """Projection on a seeded random orthonormal basis Q (n x r) of the input space: B = Q, A = W @ Q."""

    name = "toy-basis"

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)

    def _basis(self, n: int, rank: int) -> torch.Tensor:
        return torch.linalg.qr(torch.randn(n, rank, generator=self.generator))[0]

    def factorize(self, weight, rank, stats):
        _log("factorize", f"seed={self.seed}")
        q = self._basis(weight.shape[1], rank)
        return weight.float() @ q, q

    def refactor(self, a, b, rank, stats):
        _log("refactor", f"seed={self.seed}")
        q = self._basis(b.shape[0], rank)
        return a @ (b.T @ q), q


@register_unit_score
class PowerUnitScore(UnitScore):
    """Mean |input|^power of each head / neuron (power 1 is the activation score without the column norms)."""

    name = "toy-units"

    def __init__(self, power: float = 1.0):
        self.power = power

    def observe(self, key, x, group, sums, mask):
        _log("units", f"power={self.power}")
        value = (x.detach().float().abs().pow(self.power) * mask[..., None]).sum((0, 1))
        _add(sums, key, value.view(-1, group).sum(-1) / mask.sum().clamp(min=1))
