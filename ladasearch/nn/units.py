"""Structured units of an encoder layer (attention heads and feed-forward neurons), per model family.

``config.ladasearch_widths`` records which heads and how many neurons each layer keeps (``{"heads": [[kept head
indices] per layer], "intermediate": [kept neurons per layer]}``); the hidden size is unchanged, so only the
matrices around each removed unit narrow.  A family's ``Layout`` says where its layers and unit matrices are;
adding a family is one ``Layout`` and one ``LAYOUTS`` line.  Imports only torch; part of the exported modeling
file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from torch import nn

from .layers import replace_module

WIDTHS_KEY = "ladasearch_widths"


@dataclass(frozen=True)
class Layout:
    """Where one encoder family keeps its units.  Per unit (heads, intermediate): the linears, relative to an
    encoder layer, whose output rows are the unit's, and those whose input columns are (the first of which
    reads the unit's output)."""

    layers: str                                          # the layers' ModuleList, from ``base_model``
    heads: tuple[tuple[str, ...], tuple[str, ...]]
    intermediate: tuple[tuple[str, ...], tuple[str, ...]]
    intermediate_key: str = "intermediate_size"          # the config key of the FFN width
    # the attribute of a layer that its attention reshapes with (None: it reshapes with -1 heads, so fewer
    # head rows are all it needs)
    head_count: str | None = None
    # why a config of the family cannot have units removed (None: it can)
    structured_refusal: Callable[[object], str | None] | None = None
    # position ids start after the padding index (RoBERTa), so the longest input is that much shorter
    positions_after_padding: bool = False

    @property
    def units(self) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        return {"heads": self.heads, "intermediate": self.intermediate}


def _deberta_refusal(config) -> str | None:
    # separate position projections (share_att_key false) would narrow with the heads but are not counted by
    # the budget; DeBERTa-v3 shares them (share_att_key true)
    if getattr(config, "relative_attention", False) and not getattr(config, "share_att_key", False) \
            and getattr(config, "pos_att_type", None):
        return "DeBERTa with separate position projections (share_att_key false) cannot lose heads yet"
    return None


BERT = Layout("encoder.layer",
              heads=(("attention.self.query", "attention.self.key", "attention.self.value"),
                     ("attention.output.dense",)),
              intermediate=(("intermediate.dense",), ("output.dense",)))
ROBERTA = replace(BERT, positions_after_padding=True)
DISTILBERT = Layout("transformer.layer",
                    heads=(("attention.q_lin", "attention.k_lin", "attention.v_lin"), ("attention.out_lin",)),
                    intermediate=(("ffn.lin1",), ("ffn.lin2",)), intermediate_key="hidden_dim")
DEBERTA_V2 = Layout("encoder.layer",
                    heads=(("attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj"),
                           ("attention.output.dense",)),
                    intermediate=(("intermediate.dense",), ("output.dense",)),
                    head_count="attention.self.num_attention_heads", structured_refusal=_deberta_refusal)

# config.model_type -> layout (an exported model's type is "ladasearch_" + its family's); "deberta-v2" is also
# DeBERTa-v3's type
LAYOUTS: dict[str, Layout] = {"bert": BERT, "roberta": ROBERTA, "xlm-roberta": ROBERTA, "camembert": ROBERTA,
                              "electra": BERT, "distilbert": DISTILBERT, "deberta-v2": DEBERTA_V2}
# families the tool refuses, and why
UNSUPPORTED: dict[str, str] = {
    "albert": "ALBERT shares one set of layer weights across its depth, so no layer can be shrunk on its own",
    "modernbert": "ModernBERT fuses query, key and value into one matrix and alternates local and global "
                  "attention; its layout has no adapter yet",
}
LADASEARCH_PREFIX = "ladasearch_"


def family_name(config) -> str:
    return str(getattr(config, "model_type", "")).removeprefix(LADASEARCH_PREFIX)


def layout_of(config) -> Layout:
    """The layout of the family of ``config``; ValueError naming the supported families otherwise."""
    name = family_name(config)
    if name in LAYOUTS:
        return LAYOUTS[name]
    why = UNSUPPORTED.get(name, "no layout is registered for it")
    raise ValueError(f"model type {name!r} is not supported: {why}; supported: {', '.join(sorted(LAYOUTS))}")


def max_positions(config) -> int | None:
    """The longest input ``config``'s position embeddings take (None when it has none)."""
    limit = getattr(config, "max_position_embeddings", None)
    name = family_name(config)
    if limit is not None and name in LAYOUTS and LAYOUTS[name].positions_after_padding:
        limit -= int(getattr(config, "pad_token_id", 0) or 0) + 1
    return limit


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layers of ``model`` (where its family's layout says)."""
    base = getattr(model, "base_model", model)
    layers = base.get_submodule(layout_of(model.config).layers)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(model).__name__}.base_model.{layout_of(model.config).layers} is not a list of "
                         f"layers")
    return layers


def head_size(config) -> int:
    return int(getattr(config, "attention_head_size", None) or config.hidden_size // config.num_attention_heads)


def unit_widths(config, widths: dict) -> dict[str, list[int]]:
    """``{"heads": [width of the head projections], "intermediate": [neurons]}`` per layer (in matrix rows)."""
    size = head_size(config)
    return {"heads": [len(kept) * size for kept in widths["heads"]],
            "intermediate": [int(n) for n in widths["intermediate"]]}


def set_head_counts(model: nn.Module, widths: dict) -> None:
    """Tell each layer's attention how many heads it has, where its family reshapes with that count."""
    attribute = layout_of(model.config).head_count
    if attribute is None:
        return
    owner_name, _, name = attribute.rpartition(".")
    for layer, kept in zip(encoder_layers(model), widths["heads"]):
        owner = layer.get_submodule(owner_name)
        setattr(owner, name, len(kept))
        if hasattr(owner, "all_head_size"):
            owner.all_head_size = len(kept) * head_size(model.config)


def narrow_layers(model: nn.Module, widths: dict | None) -> None:
    """Replace the linears around removed heads and neurons by narrower ones (before any weight is loaded).

    Only shapes change: the new layers are uninitialised until the stored weights fill them."""
    if not widths:
        return
    layout, layers = layout_of(model.config), encoder_layers(model)
    for unit, sizes in unit_widths(model.config, widths).items():
        if len(sizes) != len(layers):
            raise ValueError(f"{WIDTHS_KEY}.{unit} has {len(sizes)} entries for {len(layers)} layers")
        for layer, size in zip(layers, sizes):
            rows, cols = layout.units[unit]
            for name, narrow_out in [(n, True) for n in rows] + [(n, False) for n in cols]:
                old = layer.get_submodule(name)
                shape = (size, old.in_features) if narrow_out else (old.out_features, size)
                if (old.out_features, old.in_features) != shape:
                    replace_module(layer, name, nn.Linear(shape[1], shape[0], bias=old.bias is not None,
                                                          device=old.weight.device, dtype=old.weight.dtype))
    set_head_counts(model, widths)
