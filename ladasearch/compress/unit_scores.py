"""Importance of whole attention heads and feed-forward neurons (what ``structure`` removes first: the lowest).

    taylor      first-order: |sum over an example's tokens (and a head's dimensions) of x * dL/dx| summed over
                examples, x the unit's output entering the next linear (the attention context of a head, the
                activated neuron); the loss change when the unit is masked to zero, to first order (Michel et al.
                2019 for heads, Molchanov et al. 2019 for neurons; CoFi, Xia et al. 2022, prunes by such masks)
    activation  mean |x| over the non-padding tokens times the norm of the unit's columns of the next linear:
                how much the unit writes into the residual stream, no gradient needed

Both read ``batches`` (train batches with labels) through a copy of the model, so neither the student's
gradients nor the pruning score's bookkeeping see these passes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn

from ..errors import LadaError
from ..nn.losses import task_loss
from ..nn.masks import copy_model
from ..nn.units import encoder_layers, head_size, layout_of
from ..registry import Registry



def _reader(model: nn.Module, unit: str) -> str:
    """The linear that reads the output of ``unit`` (its input columns are the unit's), in an encoder layer."""
    return layout_of(model.config).units[unit][1][0]


class UnitScore(ABC):
    """Scores every head and FFN neuron of every encoder layer of a model.

    A subclass says what one encoder layer's unit inputs add to the score (``observe``, called by a forward
    pre-hook on the linear that reads each unit) and, optionally, how the sums become scores (``finish``)."""

    name: ClassVar[str] = ""
    needs_gradient: ClassVar[bool] = False

    def importance(self, model: nn.Module, batches, task) -> dict[tuple[int, str], torch.Tensor]:
        """``{(layer index, "heads" | "intermediate"): one score per current unit}`` (float32, CPU)."""
        probe = copy_model(model).eval()  # no dropout: the scores are of the model as it is
        size = head_size(model.config)
        sums: dict[tuple[int, str], torch.Tensor] = {}
        mask_now: list[torch.Tensor] = []
        handles = []
        for index, layer in enumerate(encoder_layers(probe)):
            for unit in ("heads", "intermediate"):
                module = layer.get_submodule(_reader(model, unit))
                group = size if unit == "heads" else 1
                handles.append(module.register_forward_pre_hook(
                    self._hook((index, unit), module, group, sums, mask_now)))
        try:
            with torch.set_grad_enabled(self.needs_gradient):
                for batch in batches:
                    batch = dict(batch)
                    labels = batch.pop("labels")
                    mask_now[:] = [batch["attention_mask"].float()]
                    logits = probe(**batch).logits
                    if self.needs_gradient:
                        task_loss(logits.float(), labels, task.is_regression).backward()
        finally:
            for handle in handles:
                handle.remove()
        if not sums:
            raise LadaError("structured removal got no calibration batch to score heads and neurons")
        return {key: self.finish(value, probe, key).cpu() for key, value in sums.items()}

    def _hook(self, key, module, group, sums, mask_now):
        def record(mod, inputs):
            x = inputs[0]
            self.observe(key, x, group, sums, mask_now[0])
        return record

    @abstractmethod
    def observe(self, key, x: torch.Tensor, group: int, sums: dict, mask: torch.Tensor) -> None:
        """Add to ``sums[key]`` (``_add``) what the input ``x`` of layer/unit ``key`` says of each unit (``group``
        columns per unit; ``mask`` the batch's attention mask)."""

    def finish(self, value: torch.Tensor, model: nn.Module, key: tuple[int, str]) -> torch.Tensor:
        return value


def _add(sums: dict, key, value: torch.Tensor) -> None:
    value = value.detach().float()
    sums[key] = value if key not in sums else sums[key] + value


class TaylorUnitScore(UnitScore):
    name, needs_gradient = "taylor", True

    def observe(self, key, x, group, sums, mask):
        if not x.requires_grad:
            return
        value = x.detach()

        def on_grad(grad: torch.Tensor) -> None:
            per_example = (value * grad).float().sum(1)                       # (batch, units * group)
            per_unit = per_example.view(per_example.shape[0], -1, group).sum(-1)
            _add(sums, key, per_unit.abs().sum(0))
        x.register_hook(on_grad)


class ActivationUnitScore(UnitScore):
    name = "activation"

    def observe(self, key, x, group, sums, mask):
        magnitude = (x.detach().float().abs() * mask[..., None]).sum((0, 1))    # (units * group)
        _add(sums, key, magnitude.view(-1, group).sum(-1) / mask.sum().clamp(min=1) / group)

    def finish(self, value, model, key):
        index, unit = key
        reader = encoder_layers(model)[index].get_submodule(_reader(model, unit))
        columns = reader.weight.detach().float().norm(dim=0)                   # one norm per input column
        group = columns.numel() // value.numel()
        return value * columns.view(-1, group).norm(dim=-1)


UNIT_SCORES: Registry[UnitScore] = Registry("unit score", UnitScore)
UNIT_SCORES.register(TaylorUnitScore)
UNIT_SCORES.register(ActivationUnitScore)
register_unit_score = UNIT_SCORES.register


def get_unit_score(spec: str) -> UnitScore:
    """A new unit score from its spec (``"taylor"``, ``"mine:power=2"``)."""
    return UNIT_SCORES.create(spec)
