"""LadaBERT-compressed classifiers for plain transformers: the modeling file of every exported folder.

Load an exported folder with::

    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    pipeline("text-classification", model=folder, trust_remote_code=True)

This file imports only torch and transformers, so the folder works anywhere they are installed.
A weight matrix W (m x n) listed in ``config.factorized`` (``{module name: {"kind": "linear" | "embedding",
"rank": r}}``) is stored as its two factors A (m x r) and B (n x r), W = A @ B.T; pruned entries are stored zeros.
Every other tensor is the architecture's own, at the widths ``config.ladasearch_widths`` gives when whole attention
heads and feed-forward neurons were removed (``{"heads": [[kept head indices] per layer], "intermediate":
[kept neurons per layer]}``; the hidden size is unchanged, so only the matrices around each removed unit
narrow).  The model type (``ladasearch_bert``) is not one transformers
knows, so loading without ``trust_remote_code=True`` fails instead of building a model with random weights.
"""

from __future__ import annotations

from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from ..nn.layers import FactorizedEmbedding, FactorizedLinear, factorized_like, replace_module
from ..nn.units import WIDTHS_KEY, narrow_layers


class FactorizedLayersMixin:
    """Narrows the layers ``config.ladasearch_widths`` names, then swaps the layers named in ``config.factorized``
    for their factorized form (before any weight is loaded)."""

    def _swap_factorized(self) -> None:
        narrow_layers(self, getattr(self.config, WIDTHS_KEY, None))
        for name, spec in (self.config.factorized or {}).items():
            replace_module(self, name, factorized_like(self.get_submodule(name), spec["kind"], int(spec["rank"])))

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
