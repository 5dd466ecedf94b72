"""Which matrices LadaBERT compresses, and how parameters are counted.

Counting rule (used for every ratio this package reports or targets):
    a model's size is the number of *stored non-zero parameters*: a pruned tensor
    counts the entries its mask keeps, every other tensor counts all its entries
    (a dense tensor stores each value, zero or not).  Buffers (masks, position ids)
    are not parameters.  A tensor shared by several modules counts once.

Groups (the terms of the paper's eq. 7):
    embedding  the input word-embedding matrix (``model.get_input_embeddings()``)
    encoder    the weight matrix of every linear layer inside ``model.base_model``
               (attention Q/K/V/output, feed-forward, pooler)
    dense      everything LadaBERT keeps as it is: the task head, biases,
               LayerNorms, position and segment embeddings
"""

from __future__ import annotations

from torch import nn

from ..nn.layers import FactorizedEmbedding, FactorizedLinear
from ..nn.masks import kept_count
from ..summary import ParamRecord

GROUPS = ("embedding", "encoder", "dense")


# A model's size per group is the record summary.json keeps: one class for both.
ParamCount = ParamRecord


def matrix_names(module: nn.Module) -> tuple[str, ...]:
    """The tensors that hold a compressible module's matrix: ``weight``, or the factors ``A``, ``B``."""
    return ("A", "B") if isinstance(module, (FactorizedLinear, FactorizedEmbedding)) else ("weight",)


def compressible_modules(model: nn.Module) -> dict[str, tuple[str, nn.Module]]:
    """``{qualified name: (group, module)}`` for the word embedding and every linear layer of the encoder."""
    embedding = model.get_input_embeddings()
    base = getattr(model, "base_model", model)
    base_prefix = next((n for n, m in model.named_modules() if m is base), "")
    found: dict[str, tuple[str, nn.Module]] = {}
    for name, module in model.named_modules():
        if module is embedding:
            found[name] = ("embedding", module)
        elif isinstance(module, (nn.Linear, FactorizedLinear)) and (
            base is model or name.startswith(base_prefix + ".")
        ):
            found[name] = ("encoder", module)
    if not any(group == "embedding" for group, _ in found.values()):
        raise ValueError("model has no input embedding module (get_input_embeddings() is not part of the model)")
    return found


def count_parameters(model: nn.Module) -> ParamCount:
    """Stored non-zero parameters per group, by the counting rule in this module's docstring."""
    groups = {id(m): g for g, m in compressible_modules(model).values()}
    counts = dict.fromkeys(GROUPS, 0)
    seen: set[int] = set()
    for module in model.modules():
        for pname, param in module._parameters.items():
            if param is None or id(param) in seen:
                continue
            seen.add(id(param))
            name = pname.removesuffix("_orig")
            in_matrix = id(module) in groups and name in matrix_names(module)
            counts[groups[id(module)] if in_matrix else "dense"] += kept_count(module, name)
    return ParamCount(**counts)
