"""Factorized layers: a weight matrix W (m x n) stored as two factors A (m x r) and B (n x r), W = A @ B.T.

Both factors are ordinary parameters, so pruning masks (``torch.nn.utils.prune``) stay applied while they train.
This module imports only torch: the modeling file every exported HF folder carries is assembled from it
(``ladasearch.runtime.hf.modeling_source``), so a trained student and its exported form are one class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FactorizedLinear(nn.Module):
    """Drop-in for ``nn.Linear``: y = (x @ B) @ A.T + bias, i.e. weight = A @ B.T (out x in)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        # BERT's initializer scale; from_pretrained replaces these with the stored factors
        self.A = nn.Parameter(torch.randn(out_features, rank) * 0.02)
        self.B = nn.Parameter(torch.randn(in_features, rank) * 0.02)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @property
    def weight(self) -> torch.Tensor:
        return self.A @ self.B.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.B.T), self.A, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


class FactorizedEmbedding(nn.Module):
    """Drop-in for ``nn.Embedding``: row i of the table is A[i] @ B.T."""

    def __init__(self, num_embeddings: int, embedding_dim: int, rank: int, padding_idx: int | None = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.rank = num_embeddings, embedding_dim, rank
        self.padding_idx = padding_idx
        self.A = nn.Parameter(torch.randn(num_embeddings, rank) * 0.02)
        self.B = nn.Parameter(torch.randn(embedding_dim, rank) * 0.02)

    @property
    def weight(self) -> torch.Tensor:
        return self.A @ self.B.T

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.linear(F.embedding(input_ids, self.A, self.padding_idx), self.B)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, rank={self.rank}"


def factorized_like(old: nn.Module, kind: str, rank: int) -> nn.Module:
    if kind == "embedding":
        return FactorizedEmbedding(old.num_embeddings, old.embedding_dim, rank, old.padding_idx)
    if kind == "linear":
        return FactorizedLinear(old.in_features, old.out_features, rank, bias=old.bias is not None)
    raise ValueError(f"factorized layer kind {kind!r} is not one of linear, embedding")


def replace_module(model: nn.Module, qualified_name: str, new: nn.Module) -> None:
    """Put ``new`` where ``model.get_submodule(qualified_name)`` is (``setattr`` on its parent)."""
    parent_name, _, child = qualified_name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
