"""Factorized layers: a weight matrix W (m x n) stored as two factors, W ~= A @ B.T.

A is (m x r) and B is (n x r).  Both are ordinary parameters, so magnitude
pruning (``torch.nn.utils.prune``) can mask them and the masks stay applied
while the factors are trained.
"""

from __future__ import annotations

from torch import nn

# One definition of the factorized layers: the self-contained modeling file that every exported HF folder
# carries (it imports only torch and transformers), so a trained student and its exported form are one class.
from ..deploy.modeling_ladasearch import FactorizedEmbedding, FactorizedLinear

__all__ = ["FactorizedEmbedding", "FactorizedLinear", "replace_module"]


def replace_module(model: nn.Module, qualified_name: str, new: nn.Module) -> None:
    """Put ``new`` where ``model.get_submodule(qualified_name)`` is (``setattr`` on its parent)."""
    parent_name, _, child = qualified_name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
