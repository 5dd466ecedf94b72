"""LadaBERT-compressed classifiers for plain transformers: the modeling file of every exported folder.

Load an exported folder with::

    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    pipeline("text-classification", model=folder, trust_remote_code=True)

This file imports only torch and transformers, so the folder works anywhere they are installed.
A weight matrix W (m x n) listed in ``config.factorized`` (``{module name: {"kind": "linear" | "embedding",
"rank": r}}``) is stored as its two factors A (m x r) and B (n x r), W = A @ B.T.  A pruned matrix listed in
``config.ladasearch_packed`` is stored as its non-zero entries and a bitmask (``NAME_packed_values``,
``NAME_packed_bits``) and unpacked after loading.
Every other tensor is the architecture's own, at the widths ``config.ladasearch_widths`` gives when whole attention
heads and feed-forward neurons were removed (``{"heads": [[kept head indices] per layer], "intermediate":
[kept neurons per layer]}``; the hidden size is unchanged, so only the matrices around each removed unit
narrow).  Each supported family (a layout in the units code above) has its pair of classes here
(``LadaRobertaConfig``, ``LadaRobertaForSequenceClassification``, ...): the family's own classes with the
factorized layers swapped in, made by ``lada_classes``.
The model type (``ladasearch_`` + the family's) is not one transformers knows, so loading without
``trust_remote_code=True`` fails instead of building a model with random weights.
"""

from __future__ import annotations

import transformers
from torch import nn
from transformers import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

from ..nn.layers import FactorizedEmbedding, FactorizedLinear, factorized_like, replace_module
from ..nn.packed import PACKED_KEY, hold_packed, holds_packed, unpack_model
from ..nn.units import LADASEARCH_PREFIX, LAYOUTS, WIDTHS_KEY, narrow_layers


class LadaModelMixin:
    """The family's classifier with, before any weight is loaded, the layers ``config.ladasearch_widths`` names
    narrowed and the layers ``config.factorized`` names swapped for their factorized form."""

    def __init__(self, config):
        super().__init__(config)
        narrow_layers(self, getattr(self.config, WIDTHS_KEY, None))
        for name, spec in (self.config.factorized or {}).items():
            replace_module(self, name, factorized_like(self.get_submodule(name), spec["kind"], int(spec["rank"])))
        hold_packed(self, getattr(self.config, PACKED_KEY, None))

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, loading info) on request
        unpack_model(model, getattr(model.config, PACKED_KEY, None))
        # what the model holds now is dense: saving it again writes plain tensors
        setattr(model.config, PACKED_KEY, {})
        return loaded

    def _init_weights(self, module):
        if holds_packed(module):
            return  # its packed buffers come from the file
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

    def __init__(self, factorized: dict | None = None, ladasearch: dict | None = None,
                 ladasearch_packed: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.factorized = dict(factorized or {})
        setattr(self, PACKED_KEY, dict(ladasearch_packed or {}))  # the tensors the file stores packed
        self.ladasearch = dict(ladasearch or {})  # provenance: task, ratios, scores (for people, not for loading)


def lada_classes(model_type: str) -> tuple[type, type]:
    """(config class, classifier class) of ``model_type``'s family with the factorized layers swapped in: the
    family's own classes (``BertConfig``, ``BertForSequenceClassification``) under the names ``LadaBertConfig``,
    ``LadaBertForSequenceClassification`` and the model type ``ladasearch_bert``."""
    config_base = CONFIG_MAPPING[model_type]
    model_base = getattr(transformers, MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES[model_type])
    config = type(f"Lada{config_base.__name__}", (LadaConfigMixin, config_base),
                  {"model_type": LADASEARCH_PREFIX + model_type, "__module__": __name__})
    model = type(f"Lada{model_base.__name__}", (LadaModelMixin, model_base),
                 {"config_class": config, "__module__": __name__})
    return config, model


# one pair per family with a layout (``nn.units.LAYOUTS``), at module level where ``auto_map`` names them
EXPORTED: dict[str, tuple[type, type]] = {model_type: lada_classes(model_type) for model_type in LAYOUTS}
globals().update({cls.__name__: cls for pair in EXPORTED.values() for cls in pair})
