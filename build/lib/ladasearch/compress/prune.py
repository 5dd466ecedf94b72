"""Pruning by score with ``torch.nn.utils.prune`` masks.

Masks are the library's reparametrisation (``name_orig`` parameter, ``name_mask``
buffer, a forward pre-hook), so they stay applied while the model trains and a
pruned model saves as before, whichever score chose the entries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.utils import prune

from ..errors import LadaError
from ..nn.masks import unprune

if TYPE_CHECKING:
    from .calibration import LayerStats
    from .registry import PruningScore


def top_mask(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Boolean mask of exactly ``keep`` entries of the 1-D ``scores``: the highest, ties broken by position."""
    if keep == scores.numel():
        return torch.ones_like(scores, dtype=torch.bool)
    threshold = torch.kthvalue(scores, scores.numel() - keep + 1).values  # the keep-th largest
    mask = scores > threshold
    ties = torch.nonzero(scores == threshold).flatten()
    mask[ties[: keep - int(mask.sum())]] = True
    return mask


def prune_by_score(module: nn.Module, names: tuple[str, ...], keep: int, scorer: PruningScore,
                   stats: LayerStats | None = None) -> None:
    """Mask ``module``'s tensors ``names`` jointly so exactly ``keep`` entries (highest ``scorer`` scores) survive.

    Earlier masks are folded in first, so the scorer sees already-pruned entries as zeros.
    """
    unprune(module)
    total = sum(getattr(module, n).numel() for n in names)
    if not 0 < keep <= total:
        raise ValueError(f"keep must be in [1, {total}], got {keep}")
    scores = scorer.scores(module, names, stats)
    for n in names:
        got = getattr(scores.get(n), "shape", None)
        if got != getattr(module, n).shape:
            raise LadaError(f"pruning score {scorer.name!r} gave shape {got} for {n}, "
                            f"expected {tuple(getattr(module, n).shape)}")
    flat = torch.cat([scores[n].detach().float().flatten() for n in names])
    if not torch.isfinite(flat).all():
        raise LadaError(f"pruning score {scorer.name!r} gave non-finite scores for {', '.join(names)}")
    mask = top_mask(flat, keep)
    start = 0
    for n in names:
        tensor = getattr(module, n)
        part = mask[start:start + tensor.numel()].view_as(tensor)
        start += tensor.numel()
        prune.custom_from_mask(module, n, part.to(device=tensor.device, dtype=tensor.dtype))
