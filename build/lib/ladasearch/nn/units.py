"""Structured units of a BERT-family encoder layer: attention heads and feed-forward neurons.

``config.ladasearch_widths`` records which heads and how many neurons each layer keeps (``{"heads": [[kept head
indices] per layer], "intermediate": [kept neurons per layer]}``); the hidden size is unchanged, so only the
matrices around each removed unit narrow.  Imports only torch; part of the exported modeling file.
"""

from __future__ import annotations

from torch import nn

from .layers import replace_module

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
