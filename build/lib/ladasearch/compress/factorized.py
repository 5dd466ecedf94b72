"""Factorized layers: a weight matrix W (m x n) stored as two factors, W ~= A @ B.T.

A is (m x r) and B is (n x r).  Both are ordinary parameters, so magnitude
pruning (``torch.nn.utils.prune``) can mask them and the masks stay applied
while the factors are trained.
"""

from __future__ import annotations

# The layers themselves live in the bottom layer (``ladasearch.nn``), which the exported modeling file is
# assembled from; compress names them here for its own modules.
from ..nn.layers import FactorizedEmbedding, FactorizedLinear, replace_module

__all__ = ["FactorizedEmbedding", "FactorizedLinear", "replace_module"]
