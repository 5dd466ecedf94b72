"""Pruning masks as ``torch.nn.utils.prune`` keeps them (``name_orig`` parameter, ``name_mask`` buffer, a forward
pre-hook): reading, folding and copying a model that carries them.  Choosing which entries to mask is compress's
(``compress.prune``)."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import prune


def masks_of(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n[: -len("_mask")]: b for n, b in module.named_buffers(recurse=False) if n.endswith("_mask")}


def unprune(module: nn.Module) -> None:
    """Make every mask of ``module`` permanent (pruned entries become stored zeros)."""
    for hook in list(module._forward_pre_hooks.values()):
        if isinstance(hook, prune.BasePruningMethod):
            prune.remove(module, hook._tensor_name)


def fold_masks(model: nn.Module) -> nn.Module:
    """Make every pruning mask of ``model`` permanent, in place (pruned entries become stored zeros)."""
    for module in model.modules():
        if masks_of(module):
            unprune(module)
    return model


def kept_count(module: nn.Module, name: str) -> int:
    """Entries of ``module.name`` a sparse save would store: the mask's ones, or all entries."""
    mask = getattr(module, f"{name}_mask", None)
    return int(mask.sum().item()) if mask is not None else getattr(module, name).numel()


def copy_model(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that also works on a model with pruning masks applied.

    The pruned tensor (``A = A_orig * A_mask``) is a plain attribute recomputed by the pre-hook before
    every forward; after a forward with autograd on it is a non-leaf tensor, which deepcopy refuses.
    It is replaced by its detached value first (the next forward recomputes it anyway).
    """
    for module in model.modules():
        for name in masks_of(module):
            value = module.__dict__.get(name)
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                module.__dict__[name] = value.detach()
    return copy.deepcopy(model)
