"""Factorized layers: a weight matrix W (m x n) stored as two factors, W ~= A @ B.T.

A is (m x r) and B is (n x r).  Both are ordinary parameters, so magnitude
pruning (``torch.nn.utils.prune``) can mask them and the masks stay applied
while the factors are trained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FactorizedLinear(nn.Module):
    """Drop-in for ``nn.Linear``: y = x @ B @ A.T + bias, with weight = A @ B.T (out x in)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.A = nn.Parameter(torch.empty(out_features, rank))
        self.B = nn.Parameter(torch.empty(in_features, rank))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @property
    def weight(self) -> torch.Tensor:
        return self.A @ self.B.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.B.T), self.A, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


class FactorizedEmbedding(nn.Module):
    """Drop-in for ``nn.Embedding``: row i of the table is A[i] @ B.T, weight = A @ B.T (num x dim)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, rank: int, padding_idx: int | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.rank = num_embeddings, embedding_dim, rank
        self.padding_idx = padding_idx
        self.A = nn.Parameter(torch.empty(num_embeddings, rank))
        self.B = nn.Parameter(torch.empty(embedding_dim, rank))

    @property
    def weight(self) -> torch.Tensor:
        return self.A @ self.B.T

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.linear(F.embedding(input_ids, self.A, self.padding_idx), self.B)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, rank={self.rank}"


def replace_module(model: nn.Module, qualified_name: str, new: nn.Module) -> None:
    """Put ``new`` where ``model.get_submodule(qualified_name)`` is (``setattr`` on its parent)."""
    parent_name, _, child = qualified_name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
