"""Per-matrix compression plan and the step that shrinks a model part of the way to it.

Each round r of R compresses every matrix to ``final_ratio ** (r / R)`` of its
original size, so the last round lands exactly on the plan.  Rank and kept-entry
counts are integers; in hybrid mode the rank is rounded up and pruning keeps
exactly ``round(ratio * m * n)`` factor entries, so the achieved size matches the
budget to a handful of parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .accounting import compressible_modules, matrix_names
from .budget import Ratios
from .factorized import FactorizedEmbedding, FactorizedLinear
from .prune import keep_largest, unprune
from .svd import refactor, svd_rank, truncated_factors


@dataclass(frozen=True)
class MatrixPlan:
    name: str                 # qualified module name
    group: str                # 'embedding' or 'encoder'
    shape: tuple[int, int]    # (m, n) of the dense weight
    svd_ratio: float | None   # share kept as SVD factors; None = not factorized
    keep_ratio: float | None  # share of m*n kept as non-zero entries; None = not pruned

    def rank(self, fraction: float = 1.0) -> int | None:
        if self.svd_ratio is None:
            return None
        m, n = self.shape
        return svd_rank(m, n, self.svd_ratio ** fraction, round_up=self.keep_ratio is not None)

    def keep(self, fraction: float = 1.0) -> int | None:
        if self.keep_ratio is None:
            return None
        m, n = self.shape
        return max(1, round(m * n * self.keep_ratio ** fraction))


def make_plan(model: nn.Module, ratios: Ratios) -> list[MatrixPlan]:
    """hybrid: embedding by SVD (pruning only trims the rank rounding), encoder by SVD then pruning.
    svd: SVD alone.  prune: magnitude pruning of the dense matrices alone."""
    plans = []
    for name, (group, module) in compressible_modules(model).items():
        if not isinstance(module, (nn.Linear, nn.Embedding)):
            raise ValueError(f"plan a dense model: {name} is already {type(module).__name__}")
        shape = tuple(module.weight.shape)
        share = ratios.embedding if group == "embedding" else ratios.encoder
        svd_share = ratios.embedding if group == "embedding" else ratios.svd
        if ratios.method == "hybrid":
            plans.append(MatrixPlan(name, group, shape, svd_share, share))
        elif ratios.method == "svd":
            plans.append(MatrixPlan(name, group, shape, share, None))
        else:
            plans.append(MatrixPlan(name, group, shape, None, share))
    return plans


def planned_count(plans: list[MatrixPlan]) -> int:
    """Stored parameters of the planned matrices after the last round."""
    total = 0
    for p in plans:
        keep, rank = p.keep(), p.rank()
        total += keep if keep is not None else rank * sum(p.shape)
    return total


def _effective(module: nn.Module) -> tuple[torch.Tensor, ...]:
    return tuple(getattr(module, n).detach() for n in matrix_names(module))


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


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


@torch.no_grad()
def compress_step(model: nn.Module, plans: list[MatrixPlan], fraction: float) -> None:
    """Shrink every planned matrix of ``model`` (in place) to ``final ratio ** fraction``, 0 < fraction <= 1."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    modules = {name: module for name, (_, module) in compressible_modules(model).items()}
    for plan in plans:
        module = modules[plan.name]
        rank, keep = plan.rank(fraction), plan.keep(fraction)
        if rank is not None:
            factors = _effective(module)
            if len(factors) == 1:
                a, b = truncated_factors(factors[0], rank)
            elif rank < module.rank or keep is None:
                a, b = refactor(*factors, min(rank, module.rank))
            else:
                a, b = factors
            module = _factorized_like(module, a.shape[1], a, b)
            _replace(model, plan.name, module)
        if keep is not None:
            keep_largest(module, matrix_names(module), keep)
        elif rank is None:
            unprune(module)
