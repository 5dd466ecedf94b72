"""The built-in pruning score: magnitude (the paper's), registered as "magnitude"."""

from __future__ import annotations

from .registry import PruningScore, register_pruning_score


@register_pruning_score
class MagnitudeScore(PruningScore):
    """|w|: the entries of largest absolute value survive."""

    name = "magnitude"

    def scores(self, module, names, stats):
        return {n: getattr(module, n).detach().abs() for n in names}
