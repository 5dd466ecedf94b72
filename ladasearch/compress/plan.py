"""Per-matrix compression plan and the step that shrinks a model part of the way to it.

Each round r of R compresses every matrix to ``final_ratio ** (r / R)`` of its
original size, so the last round lands exactly on the plan.  Rank and kept-entry
counts are integers; in hybrid mode the rank is rounded up and pruning keeps
exactly ``round(ratio * m * n)`` factor entries, so the achieved size matches the
budget to a handful of parameters.  How a matrix is factorized and which entries
survive pruning are the plug-ins of ``registry`` (plain SVD and magnitude by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import LadaError
from ..nn.layers import FactorizedEmbedding, FactorizedLinear, replace_module
from ..nn.masks import unprune
from .accounting import compressible_modules, matrix_names
from .budget import Ratios
from .factorizers import SvdFactorizer
from .methods import get_method
from .prune import prune_by_score
from .registry import Factorizer, PruningScore
from .scores import MagnitudeScore
from .structure import Widths, supported_family

if TYPE_CHECKING:
    from .calibration import CalibrationStats


def svd_rank(m: int, n: int, svd_ratio: float, round_up: bool = True) -> int:
    """Rank r that keeps ``svd_ratio`` of an m x n matrix as factors: r*(m+n) ~= m*n*svd_ratio.

    The paper's rule r = m*n*P_svd/(m+n).  Rounded up when pruning follows (it then removes
    the rounding excess exactly), to the nearest integer otherwise.  At least 1, at most min(m, n).
    """
    if not 0.0 < svd_ratio <= 1.0:
        raise ValueError(f"svd_ratio must be in (0, 1], got {svd_ratio}")
    exact = m * n * svd_ratio / (m + n)
    rank = math.ceil(exact - 1e-9) if round_up else round(exact)
    return max(1, min(min(m, n), rank))


@dataclass(frozen=True)
class MatrixPlan:
    name: str                 # qualified module name
    group: str                # 'embedding' or 'encoder'
    shape: tuple[int, int]    # (m, n) of the dense weight at the end (narrower when structure removes units)
    svd_ratio: float | None   # share kept as SVD factors; None = not factorized
    keep_ratio: float | None  # share of m*n kept as non-zero entries; None = not pruned

    def rank(self, fraction: float = 1.0, shape: tuple[int, int] | None = None) -> int | None:
        """The rank at ``fraction`` of the way, for the matrix at ``shape`` (default: its final shape)."""
        if self.svd_ratio is None:
            return None
        m, n = shape or self.shape
        return svd_rank(m, n, self.svd_ratio ** fraction, round_up=self.keep_ratio is not None)

    def keep(self, fraction: float = 1.0, shape: tuple[int, int] | None = None) -> int | None:
        if self.keep_ratio is None:
            return None
        m, n = shape or self.shape
        return max(1, round(m * n * self.keep_ratio ** fraction))


def make_plan(model: nn.Module, ratios: Ratios) -> list[MatrixPlan]:
    """One plan per compressible matrix; the method (``ratios.method``) says what each matrix keeps, and
    ``ratios.structure`` how narrow the matrices around heads and FFN neurons end."""
    method = get_method(ratios.method)
    supported_family(model.config)
    narrowed = {}
    if ratios.structure < 1.0:
        narrowed = Widths.of(model.config).final_shapes(model, ratios.structure)
    plans = []
    for name, (group, module) in compressible_modules(model).items():
        if not isinstance(module, (nn.Linear, nn.Embedding)):
            raise ValueError(f"plan a dense model: {name} is already {type(module).__name__}")
        shape = narrowed.get(name, tuple(module.weight.shape))
        plans.append(MatrixPlan(name, group, shape, *method.matrix_shares(group, ratios)))
    return plans


def matrix_shape(module: nn.Module) -> tuple[int, int]:
    """(m, n) of the dense matrix a compressible module holds now, factorized or not."""
    if isinstance(module, (FactorizedLinear, FactorizedEmbedding)):
        return module.A.shape[0], module.B.shape[0]
    return tuple(module.weight.shape)


def planned_count(plans: list[MatrixPlan]) -> int:
    """Stored parameters of the planned matrices after the last round."""
    total = 0
    for p in plans:
        keep, rank = p.keep(), p.rank()
        total += keep if keep is not None else rank * sum(p.shape)
    return total


def _factorized_like(old: nn.Module, rank: int, a: torch.Tensor, b: torch.Tensor) -> nn.Module:
    if isinstance(old, (nn.Embedding, FactorizedEmbedding)):
        new = FactorizedEmbedding(a.shape[0], b.shape[0], rank, old.padding_idx)
    else:
        new = FactorizedLinear(b.shape[0], a.shape[0], rank, bias=old.bias is not None)
        if old.bias is not None:
            new.bias.data.copy_(old.bias.detach())
    new.A.data.copy_(a)
    new.B.data.copy_(b)
    like = next(old.parameters())
    return new.to(device=like.device, dtype=like.dtype)


def _checked(factorizer: Factorizer, plan: MatrixPlan, shape: tuple[int, int], rank: int,
             factors: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = factors
    (m, n), got = shape, (tuple(a.shape), tuple(b.shape))
    if got != ((m, rank), (n, rank)):
        raise LadaError(f"factorizer {factorizer.name!r} gave factors of shapes {got[0]} and {got[1]} for "
                        f"{plan.name}; expected ({m}, {rank}) and ({n}, {rank})")
    return a, b


@torch.no_grad()
def compress_step(model: nn.Module, plans: list[MatrixPlan], fraction: float, *,
                  factorizer: Factorizer | None = None, scorer: PruningScore | None = None,
                  stats: CalibrationStats | None = None) -> None:
    """Shrink every planned matrix of ``model`` (in place) to ``final ratio ** fraction``, 0 < fraction <= 1.

    ``factorizer`` and ``scorer`` default to plain SVD and magnitude; ``stats`` hands each of them the
    calibration statistics of the layer it works on (``stats.layer(name)``, None when there are none).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    factorizer = factorizer or SvdFactorizer()
    scorer = scorer or MagnitudeScore()
    modules = {name: module for name, (_, module) in compressible_modules(model).items()}
    for plan in plans:
        module = modules[plan.name]
        layer_stats = stats.layer(plan.name) if stats is not None else None
        shape = matrix_shape(module)  # the plan's final shape once structured removal is done
        rank, keep = plan.rank(fraction, shape), plan.keep(fraction, shape)
        unprune(module)  # masks folded in: every tensor below is the effective (pruned = zero) one
        if rank is not None:
            factors = tuple(getattr(module, n).detach() for n in matrix_names(module))
            if len(factors) == 1:
                a, b = _checked(factorizer, plan, shape, rank, factorizer.factorize(factors[0], rank, layer_stats))
            elif rank < module.rank or keep is None:
                rank = min(rank, module.rank)
                a, b = _checked(factorizer, plan, shape, rank, factorizer.refactor(*factors, rank, layer_stats))
            else:
                a, b = factors
            module = _factorized_like(module, a.shape[1], a, b)
            replace_module(model, plan.name, module)
            scorer.carry(plan.name, module)
        if keep is not None:
            prune_by_score(module, matrix_names(module), keep, scorer, layer_stats)
