"""The Pareto front of a multi-objective search as a PNG: score against each other objective, one panel each.

The front is computed over all objectives together (by the caller), so with three objectives a trial can
be on the front and still look dominated in one panel: it wins on the objective the panel does not show.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..errors import LadaError  # noqa: E402
from .plots import save_figure  # noqa: E402


@dataclass(frozen=True)
class FrontPoint:
    """One trial at the target size: its score, its value on every axis (display units), on the front or not."""

    label: str
    score: float
    values: tuple[float, ...]
    on_front: bool


def front_plot(points: list[FrontPoint], axes: tuple[str, ...], path: str | Path, *, score_label: str,
               title: str) -> Path:
    """Score (y) against each of ``axes`` (x); front members ringed, labelled and joined in score order."""
    if not points:
        raise LadaError("no trial at the target size with every objective measured")
    if any(len(p.values) != len(axes) for p in points):
        raise LadaError(f"every point needs {len(axes)} values (one per axis)")
    fig, panels = plt.subplots(1, len(axes), figsize=(5.5 * len(axes), 4.5), squeeze=False)
    front = sorted((p for p in points if p.on_front), key=lambda p: p.score)
    for i, (ax, label) in enumerate(zip(panels[0], axes)):
        ax.scatter([p.values[i] for p in points], [p.score for p in points], s=28, alpha=0.6, color="tab:blue",
                   label="trials at the target size")
        ax.plot([p.values[i] for p in front], [p.score for p in front], color="black", linewidth=0.8, alpha=0.4)
        ax.scatter([p.values[i] for p in front], [p.score for p in front], s=110, facecolors="none",
                   edgecolors="red", linewidths=1.5, label="Pareto front (all objectives)")
        for p in front:
            ax.annotate(p.label, (p.values[i], p.score), textcoords="offset points", xytext=(5, 4), fontsize=7)
        ax.set_xlabel(label)
        ax.set_ylabel(score_label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(title)
    return save_figure(fig, path)
