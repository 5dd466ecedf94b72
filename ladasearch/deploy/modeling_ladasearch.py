"""LadaBERT-compressed classifiers for plain transformers: the modeling file copied into every exported folder.

Load an exported folder with::

    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    pipeline("text-classification", model=folder, trust_remote_code=True)

This file imports only torch and transformers (not ladasearch), so the folder works anywhere they are installed.
A weight matrix W (m x n) listed in ``config.factorized`` (``{module name: {"kind": "linear" | "embedding",
"rank": r}}``) is stored as its two factors A (m x r) and B (n x r), W = A @ B.T; pruned entries are stored zeros.
Every other tensor is the architecture's own, at the widths ``config.ladasearch_widths`` gives when whole attention
heads and feed-forward neurons were removed (``{"heads": [[kept head indices] per layer], "intermediate":
[kept neurons per layer]}``; the hidden size is unchanged, so only the matrices around each removed unit
narrow).  The model type (``ladasearch_bert``) is not one transformers
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


def replace_module(model: nn.Module, qualified_name: str, new: nn.Module) -> None:
    """Put ``new`` where ``model.get_submodule(qualified_name)`` is (``setattr`` on its parent)."""
    parent_name, _, child = qualified_name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


WIDTHS_KEY = "ladasearch_widths"
# per encoder layer: the linears whose output rows are a unit's (heads, neurons) and those whose input columns are
UNIT_LINEARS = {"heads": (("attention.self.query", "attention.self.key", "attention.self.value"),
                          ("attention.output.dense",)),
                "intermediate": (("intermediate.dense",), ("output.dense",))}


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layers of a BERT-family model (``base_model.encoder.layer``)."""
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(model).__name__} has no base_model.encoder.layer: structured widths need a "
                         f"BERT-family encoder")
    return layers


def unit_widths(config, widths: dict) -> dict[str, list[int]]:
    """``{"heads": [width of the head projections], "intermediate": [neurons]}`` per layer (in matrix rows)."""
    head_size = config.hidden_size // config.num_attention_heads
    return {"heads": [len(kept) * head_size for kept in widths["heads"]],
            "intermediate": [int(n) for n in widths["intermediate"]]}


def narrow_layers(model: nn.Module, widths: dict | None) -> None:
    """Replace the linears around removed heads and neurons by narrower ones (before any weight is loaded).

    Only shapes change: the new layers are uninitialised until the stored weights fill them.  BERT's
    attention reshapes with -1 heads, so fewer head rows are all it needs.
    """
    if not widths:
        return
    layers = encoder_layers(model)
    for unit, sizes in unit_widths(model.config, widths).items():
        if len(sizes) != len(layers):
            raise ValueError(f"{WIDTHS_KEY}.{unit} has {len(sizes)} entries for {len(layers)} layers")
        rows, cols = UNIT_LINEARS[unit]
        for layer, size in zip(layers, sizes):
            for name, narrow_out in [(n, True) for n in rows] + [(n, False) for n in cols]:
                old = layer.get_submodule(name)
                shape = (size, old.in_features) if narrow_out else (old.out_features, size)
                if (old.out_features, old.in_features) != shape:
                    replace_module(layer, name, nn.Linear(shape[1], shape[0], bias=old.bias is not None,
                                                          device=old.weight.device, dtype=old.weight.dtype))


class FactorizedLayersMixin:
    """Narrows the layers ``config.ladasearch_widths`` names, then swaps the layers named in ``config.factorized``
    for their factorized form (before any weight is loaded)."""

    def _swap_factorized(self) -> None:
        narrow_layers(self, getattr(self.config, WIDTHS_KEY, None))
        for name, spec in (self.config.factorized or {}).items():
            replace_module(self, name, _factorized_like(self.get_submodule(name), spec["kind"], int(spec["rank"])))

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
