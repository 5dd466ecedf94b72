"""Structured compression (beyond the paper): whole attention heads and feed-forward neurons removed.

``Ratios.structure`` is the share of every layer's heads and FFN neurons kept (1 = off, the paper).  The
narrowed matrices then go through the usual SVD and pruning, so eq. 7 becomes

    P * |theta| = P_embd * |theta_embd| + P_svd * P_weight * |theta_encd'| + |theta_dense'|

where ``theta_encd'`` and ``theta_dense'`` count what the removal leaves, exactly: a removed head takes its
rows of Q, K, V (with their biases) and its columns of the attention output; a removed neuron its row of
the intermediate linear (and bias) and its column of the output linear.  ``Widths.removed`` is that count.

Every round r of R keeps round(units * structure ** (r / R)) units of each layer, the least important
ones (``unit_scores``) leaving first; the hidden size never changes, so the per-layer hidden-state loss is
unchanged and the attention loss compares each kept head with the teacher head it came from.  Which heads
are kept is recorded in ``config.ladasearch_widths`` (see ``modeling_ladasearch``), so a saved or exported
model is rebuilt at its narrow shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import LadaError
from ..nn.layers import FactorizedLinear
from ..nn.masks import unprune
from ..nn.units import WIDTHS_KEY, Layout, encoder_layers, head_size, layout_of, set_head_counts
from ..summary import ParamRecord
from .unit_scores import get_unit_score

if TYPE_CHECKING:
    from .calibration import CalibrationStats
    from .registry import PruningScore


def supported_family(config) -> Layout:
    """The layout of the family of ``config``: a LadaError naming the supported families for any other."""
    try:
        return layout_of(config)
    except ValueError as exc:
        raise LadaError(str(exc)) from None


@dataclass(frozen=True)
class Widths:
    """The unit counts of a BERT-family architecture (from its config)."""

    layers: int
    hidden: int
    heads: int
    head_size: int
    intermediate: int

    @classmethod
    def of(cls, config) -> Widths:
        layout = supported_family(config)
        refusal = layout.structured_refusal(config) if layout.structured_refusal else None
        if refusal:
            raise LadaError(f"structured compression: {refusal}")
        try:
            hidden, heads = int(config.hidden_size), int(config.num_attention_heads)
            return cls(int(config.num_hidden_layers), hidden, heads, head_size(config),
                       int(getattr(config, layout.intermediate_key)))
        except (AttributeError, TypeError) as exc:
            raise LadaError(f"structured compression needs the config's hidden_size, num_attention_heads, "
                            f"{layout.intermediate_key} and num_hidden_layers: {exc}") from None

    def kept(self, structure: float, fraction: float = 1.0) -> tuple[int, int]:
        """(heads, neurons) each layer keeps at ``structure ** fraction`` (at least one of each)."""
        share = structure ** fraction
        return max(1, round(self.heads * share)), max(1, round(self.intermediate * share))

    def removed(self, structure: float) -> ParamRecord:
        """The parameters the removal at ``structure`` takes away, per group of eq. 7 (exact)."""
        heads, neurons = self.kept(structure)
        head_rows, gone = (self.heads - heads) * self.head_size, self.intermediate - neurons
        return ParamRecord(embedding=0, encoder=self.layers * self.hidden * (4 * head_rows + 2 * gone),
                           dense=self.layers * (3 * head_rows + gone))

    def narrowed(self, counts: ParamRecord, structure: float) -> ParamRecord:
        """``counts`` (of the full model) less what the removal at ``structure`` takes away."""
        gone = self.removed(structure)
        return ParamRecord(counts.embedding, counts.encoder - gone.encoder, counts.dense - gone.dense)

    def final_shapes(self, model: nn.Module, structure: float) -> dict[str, tuple[int, int]]:
        """``{qualified linear name: (out, in)}`` of every matrix the removal at ``structure`` narrows."""
        heads, neurons = self.kept(structure)
        sizes = {"heads": heads * self.head_size, "intermediate": neurons}
        return {name: (sizes[unit], self.hidden) if narrow_out else (self.hidden, sizes[unit])
                for _, unit, name, narrow_out in _unit_linears(model)}


def _unit_linears(model: nn.Module):
    """(layer index, unit, qualified linear name, whether the unit is its output rows) of every encoder layer."""
    layers, layout = encoder_layers(model), layout_of(model.config)
    prefix = next(n for n, m in model.named_modules() if m is layers)
    for index in range(len(layers)):
        for unit, (rows, cols) in layout.units.items():
            yield from ((index, unit, f"{prefix}.{index}.{n}", True) for n in rows)
            yield from ((index, unit, f"{prefix}.{index}.{n}", False) for n in cols)


def current_widths(model: nn.Module) -> dict:
    """``config.ladasearch_widths`` of ``model``, or the full widths when nothing was removed yet."""
    found = getattr(model.config, WIDTHS_KEY, None)
    if found:
        return {"heads": [list(h) for h in found["heads"]], "intermediate": list(found["intermediate"])}
    w = Widths.of(model.config)
    return {"heads": [list(range(w.heads)) for _ in range(w.layers)], "intermediate": [w.intermediate] * w.layers}


def kept_heads(model: nn.Module) -> list[torch.Tensor] | None:
    """Per layer, the teacher's indices of the heads the student kept (None when no head was removed)."""
    found = getattr(model.config, WIDTHS_KEY, None)
    if not found:
        return None
    return [torch.tensor(h, dtype=torch.long) for h in found["heads"]]


@torch.no_grad()
def _slice(module: nn.Module, index: torch.Tensor, rows: bool) -> None:
    """Keep only the output rows (``rows``) or input columns ``index`` of a linear, in place (masks folded)."""
    unprune(module)
    if isinstance(module, FactorizedLinear):
        name = "A" if rows else "B"
        setattr(module, name, nn.Parameter(getattr(module, name)[index].clone()))
    elif isinstance(module, nn.Linear):
        module.weight = nn.Parameter((module.weight[index] if rows else module.weight[:, index]).clone())
    else:
        raise LadaError(f"structured removal cannot narrow a {type(module).__name__}")
    if rows:
        if module.bias is not None:
            module.bias = nn.Parameter(module.bias[index].clone())
        module.out_features = len(index)
    else:
        module.in_features = len(index)


def remove_units(model: nn.Module, keep: dict[tuple[int, str], torch.Tensor], *,
                 scorer: PruningScore | None = None, stats: CalibrationStats | None = None) -> CalibrationStats | None:
    """Keep, in each (layer, unit) of ``keep``, the units at those (current) indices; in place.

    ``scorer`` (its learned gradients) and ``stats`` (the calibration statistics) are narrowed alike; the
    statistics are returned narrowed (a new object: the given one may be shared)."""
    widths = current_widths(model)
    size = head_size(model.config)
    for index, unit, qualified, narrow_out in _unit_linears(model):
        if (index, unit) not in keep:
            continue
        units = keep[(index, unit)].sort().values
        entries = (units[:, None] * size + torch.arange(size)).flatten() if unit == "heads" else units
        module = model.get_submodule(qualified)
        _slice(module, entries.to(next(module.parameters()).device), rows=narrow_out)
        rows, cols = (entries, None) if narrow_out else (None, entries)
        if scorer is not None:
            scorer.narrow(qualified, module, rows, cols)
        if stats is not None and qualified in stats.layers:
            stats = stats.narrowed(qualified, rows, cols)
    for (index, unit), units in keep.items():
        units = units.sort().values.tolist()
        if unit == "heads":
            widths["heads"][index] = [widths["heads"][index][u] for u in units]
        else:
            widths["intermediate"][index] = len(units)
    setattr(model.config, WIDTHS_KEY, widths)
    set_head_counts(model, widths)
    return stats


@dataclass(frozen=True)
class StructurePlan:
    """Where the removal goes (``structure``: share of units kept) and how units are ranked."""

    widths: Widths
    structure: float
    score: str = "taylor"

    def targets(self, fraction: float) -> tuple[int, int]:
        return self.widths.kept(self.structure, fraction)

    def step(self, model: nn.Module, fraction: float, batches, task, *, scorer: PruningScore | None = None,
             stats: CalibrationStats | None = None) -> CalibrationStats | None:
        """Remove the least important heads and neurons down to this round's counts; returns ``stats`` narrowed."""

        heads, neurons = self.targets(fraction)
        widths = current_widths(model)
        todo = {(i, "heads"): heads for i, h in enumerate(widths["heads"]) if len(h) > heads}
        todo |= {(i, "intermediate"): neurons for i, n in enumerate(widths["intermediate"]) if n > neurons}
        if not todo:
            return stats
        importance = get_unit_score(self.score).importance(model, batches, task)
        keep = {key: torch.topk(importance[key], count).indices for key, count in todo.items()}
        return remove_units(model, keep, scorer=scorer, stats=stats)
