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
narrow).  Each supported family has its pair of classes here (``LadaRobertaConfig``,
``LadaRobertaForSequenceClassification``, ...): the family's own classes with the factorized layers swapped in.
The model type (``ladasearch_`` + the family's) is not one transformers knows, so loading without
``trust_remote_code=True`` fails instead of building a model with random weights.
"""

from __future__ import annotations

from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    CamembertConfig,
    CamembertForSequenceClassification,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

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


class LadaConfigMixin:
    """The family's config plus what ladasearch records: the factorized layers and the provenance."""

    def __init__(self, factorized: dict | None = None, ladasearch: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.factorized = dict(factorized or {})
        self.ladasearch = dict(ladasearch or {})  # provenance: task, ratios, scores (for people, not for loading)


class LadaModelMixin(FactorizedLayersMixin):
    def __init__(self, config):
        super().__init__(config)
        self._swap_factorized()


class LadaBertConfig(LadaConfigMixin, BertConfig):
    model_type = "ladasearch_bert"


class LadaBertForSequenceClassification(LadaModelMixin, BertForSequenceClassification):
    config_class = LadaBertConfig


class LadaRobertaConfig(LadaConfigMixin, RobertaConfig):
    model_type = "ladasearch_roberta"


class LadaRobertaForSequenceClassification(LadaModelMixin, RobertaForSequenceClassification):
    config_class = LadaRobertaConfig


class LadaXLMRobertaConfig(LadaConfigMixin, XLMRobertaConfig):
    model_type = "ladasearch_xlm-roberta"


class LadaXLMRobertaForSequenceClassification(LadaModelMixin, XLMRobertaForSequenceClassification):
    config_class = LadaXLMRobertaConfig


class LadaCamembertConfig(LadaConfigMixin, CamembertConfig):
    model_type = "ladasearch_camembert"


class LadaCamembertForSequenceClassification(LadaModelMixin, CamembertForSequenceClassification):
    config_class = LadaCamembertConfig


class LadaElectraConfig(LadaConfigMixin, ElectraConfig):
    model_type = "ladasearch_electra"


class LadaElectraForSequenceClassification(LadaModelMixin, ElectraForSequenceClassification):
    config_class = LadaElectraConfig


class LadaDistilBertConfig(LadaConfigMixin, DistilBertConfig):
    model_type = "ladasearch_distilbert"


class LadaDistilBertForSequenceClassification(LadaModelMixin, DistilBertForSequenceClassification):
    config_class = LadaDistilBertConfig


class LadaDebertaV2Config(LadaConfigMixin, DebertaV2Config):
    model_type = "ladasearch_deberta-v2"


class LadaDebertaV2ForSequenceClassification(LadaModelMixin, DebertaV2ForSequenceClassification):
    config_class = LadaDebertaV2Config
