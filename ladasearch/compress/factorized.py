"""Factorized layers: a weight matrix W (m x n) stored as two factors, W ~= A @ B.T.

A is (m x r) and B is (n x r).  Both are ordinary parameters, so magnitude
pruning (``torch.nn.utils.prune``) can mask them and the masks stay applied
while the factors are trained.
"""

from __future__ import annotations

# One definition of the factorized layers: the self-contained modeling file that every exported HF folder
# carries (it imports only torch and transformers), so a trained student and its exported form are one class.
# ``replace_module`` lives there too: the modeling file swaps layers by name the same way.
from ..deploy.modeling_ladasearch import FactorizedEmbedding, FactorizedLinear, replace_module

__all__ = ["FactorizedEmbedding", "FactorizedLinear", "replace_module"]
