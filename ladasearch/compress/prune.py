"""Magnitude pruning with ``torch.nn.utils.prune``.

Masks are the library's reparametrisation (``name_orig`` parameter, ``name_mask``
buffer, a forward pre-hook), so they stay applied while the model trains.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune


def is_pruned(module: nn.Module, name: str) -> bool:
    return prune.is_pruned(module) and hasattr(module, f"{name}_mask")


def unprune(module: nn.Module) -> None:
    """Make every mask of ``module`` permanent (pruned entries become stored zeros)."""
    for hook in list(module._forward_pre_hooks.values()):
        if isinstance(hook, prune.BasePruningMethod):
            prune.remove(module, hook._tensor_name)


def keep_largest(module: nn.Module, names: tuple[str, ...], keep: int) -> None:
    """Mask ``module``'s tensors ``names`` jointly so exactly ``keep`` entries (largest |value|) survive.

    Earlier masks are folded in first, so already-pruned entries (now zeros) are pruned again.
    """
    unprune(module)
    total = sum(getattr(module, n).numel() for n in names)
    if not 0 < keep <= total:
        raise ValueError(f"keep must be in [1, {total}], got {keep}")
    prune.global_unstructured(
        [(module, n) for n in names], pruning_method=prune.L1Unstructured, amount=total - keep
    )


def kept_count(module: nn.Module, name: str) -> int:
    """Entries of ``module.name`` a sparse save would store: the mask's ones, or all entries."""
    mask = getattr(module, f"{name}_mask", None)
    return int(mask.sum().item()) if mask is not None else getattr(module, name).numel()


def masks_of(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n[: -len("_mask")]: b for n, b in module.named_buffers(recurse=False) if n.endswith("_mask")}
