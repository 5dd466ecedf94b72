"""LadaBERT-compressed classifiers for plain transformers: the modeling file copied into every exported folder.

Load an exported folder with::

    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    pipeline("text-classification", model=folder, trust_remote_code=True)

This file imports only torch and transformers (not ladasearch), so the folder works anywhere they are installed.
A weight matrix W (m x n) listed in ``config.factorized`` (``{module name: {"kind": "linear" | "embedding",
"rank": r}}``) is stored as its two factors A (m x r) and B (n x r), W = A @ B.T; pruned entries are stored zeros.
Every other tensor is the architecture's own.  The model type (``ladasearch_bert``) is not one transformers
knows, so loading without ``trust_remote_code=True`` fails instead of building a model with random weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertForSequenceClassification


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


def _factorized_like(old: nn.Module, kind: str, rank: int) -> nn.Module:
    if kind == "embedding":
        return FactorizedEmbedding(old.num_embeddings, old.embedding_dim, rank, old.padding_idx)
    if kind == "linear":
        return FactorizedLinear(old.in_features, old.out_features, rank, bias=old.bias is not None)
    raise ValueError(f"factorized layer kind {kind!r} is not one of linear, embedding")


class FactorizedLayersMixin:
    """Swaps the layers named in ``config.factorized`` for their factorized form (before any weight is loaded)."""

    def _swap_factorized(self) -> None:
        for name, spec in (self.config.factorized or {}).items():
            parent, _, child = name.rpartition(".")
            owner = self.get_submodule(parent) if parent else self
            setattr(owner, child, _factorized_like(getattr(owner, child), spec["kind"], int(spec["rank"])))

    def _init_weights(self, module):
        # only weights missing from the file reach this; the factors get the architecture's scale
        if isinstance(module, (FactorizedLinear, FactorizedEmbedding)):
            std = getattr(self.config, "initializer_range", 0.02)
            for factor in (module.A, module.B):
                if factor.device.type != "meta":
                    nn.init.normal_(factor, std=std)
            if getattr(module, "bias", None) is not None and module.bias.device.type != "meta":
                nn.init.zeros_(module.bias)
            return
        super()._init_weights(module)


class LadaBertConfig(BertConfig):
    model_type = "ladasearch_bert"

    def __init__(self, factorized: dict | None = None, ladasearch: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.factorized = dict(factorized or {})
        self.ladasearch = dict(ladasearch or {})  # provenance: task, ratios, scores (for people, not for loading)


class LadaBertForSequenceClassification(FactorizedLayersMixin, BertForSequenceClassification):
    config_class = LadaBertConfig

    def __init__(self, config: LadaBertConfig):
        super().__init__(config)
        self._swap_factorized()
