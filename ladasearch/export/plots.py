"""Plots of a search (matplotlib, Agg backend, PNG).  Each takes trial summaries and an output path and
returns the path.

    pareto_plot       dev score vs achieved compression factor of every trial, the Pareto front highlighted
    learning_curves   dev score per round (from ``history``) of the best k trials
    ratio_split       the embedding / matrix-factorization / weight-pruning reduction factors of the best
                      trial per target, as grouped bars
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..errors import LadaError  # noqa: E402
from .table import best_per_group, ratio_table  # noqa: E402


def _usable(summaries: list[dict]) -> list[dict]:
    usable = [s for s in summaries if s.get("score") is not None and s.get("achieved_factor") is not None]
    if not usable:
        raise LadaError("no trial with a score and an achieved factor to plot")
    return usable


def _label(summary: dict) -> str:
    source = (summary.get("source") or {}).get("label")
    target = summary.get("target")
    parts = [p for p in (source, summary.get("task"), f"{target:g}x" if target else None) if p]
    return " / ".join(parts) or "trials"


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats in both coordinates (both maximised), by x ascending."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 >= x and y2 >= y) and (x2 > x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def pareto_plot(summaries: list[dict], path: str | Path, title: str | None = None) -> Path:
    """Dev score vs achieved compression factor; Pareto-optimal trials ringed and joined by a step line."""
    trials = _usable(summaries)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups: dict[str, list[dict]] = {}
    for s in trials:
        groups.setdefault(_label(s), []).append(s)
    for label, group in groups.items():
        ax.scatter([s["achieved_factor"] for s in group], [s["score"] for s in group], s=28, alpha=0.75,
                   label=label)
    points = [(float(s["achieved_factor"]), float(s["score"])) for s in trials]
    front = pareto_front(points)
    xs, ys = [points[i][0] for i in front], [points[i][1] for i in front]
    ax.step(xs, ys, where="post", color="black", linewidth=1, alpha=0.6)
    ax.scatter(xs, ys, s=110, facecolors="none", edgecolors="red", linewidths=1.5, label="Pareto front")
    teachers = {(s.get("task"), s.get("teacher_score")) for s in trials if s.get("teacher_score") is not None}
    for task, score in sorted(teachers, key=str):
        ax.axhline(score, linestyle="--", color="gray", linewidth=1)
        ax.annotate(f"teacher{f' ({task})' if task and len(teachers) > 1 else ''} {score:.3f}",
                    (ax.get_xlim()[0], score), textcoords="offset points", xytext=(4, 3), fontsize=8, color="gray")
    metric = next((s.get("main_metric") for s in trials if s.get("main_metric")), "score")
    ax.set_xlabel("achieved compression factor (teacher params / student params)")
    ax.set_ylabel(f"dev {metric}")
    ax.set_title(title or f"{len(trials)} trials, {len(front)} on the Pareto front")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def learning_curves(summaries: list[dict], path: str | Path, k: int = 5, title: str | None = None) -> Path:
    """Dev score per round of the best ``k`` trials (the last point is the final distillation, if any)."""
    trials = [s for s in summaries if s.get("history") and s.get("score") is not None]
    if not trials:
        raise LadaError("no trial with a per-round history to plot")
    best = sorted(trials, key=lambda s: s["score"], reverse=True)[:k]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for rank, s in enumerate(best, 1):
        rows = sorted(s["history"], key=lambda r: r.get("round", 0))
        rounds = [r.get("round", i + 1) for i, r in enumerate(rows)]
        scores = [r.get("score") for r in rows]
        ratios = s.get("ratios") or {}
        desc = (f"emb {ratios['embedding']:.2f}, svd {ratios['svd']:.2f}, w {ratios['weight']:.2f}"
                if all(ratios.get(k2) is not None for k2 in ("embedding", "svd", "weight")) else "")
        line, = ax.plot(rounds, scores, marker="o", label=f"#{rank} {s['score']:.3f} {_label(s)} {desc}".strip())
        finals = [(x, y) for x, y, r in zip(rounds, scores, rows) if r.get("final")]
        if finals:
            ax.scatter(*zip(*finals), marker="*", s=120, color=line.get_color(), zorder=3)
    metric = next((s.get("main_metric") for s in best if s.get("main_metric")), "score")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round (starred: after the final distillation steps)")
    ax.set_ylabel(f"dev {metric}")
    ax.set_title(title or f"learning curves of the best {len(best)} trial(s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def ratio_split(summaries: list[dict], path: str | Path, title: str | None = None) -> Path:
    """Grouped bars: embedding, matrix-factorization and weight-pruning reduction factors of the best trial
    of each target (and source), with the achieved overall factor written above each group."""
    rows = ratio_table(best_per_group([s for s in summaries if s.get("ratios")]))
    if not rows:
        raise LadaError("no trial with ratios to plot")
    parts = (("embedding", "embedding"), ("svd", "matrix factorization"), ("weight", "weight pruning"))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows) + 2), 4.5))
    width = 0.8 / len(parts)
    for i, (key, name) in enumerate(parts):
        xs = [j + (i - 1) * width for j in range(len(rows))]
        values = [r[key] or 1.0 for r in rows]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7, padding=1)
    labels = []
    for r in rows:
        target = f"{r['target']:g}x" if r["target"] else "?"
        labels.append("\n".join(p for p in (f"target {target}", f"achieved {r['achieved']:.2f}x",
                                            r["source"] or "", r["task"] or "") if p))
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("reduction factor (1 / retention ratio)")
    ax.set_title(title or "ratio split of the best trial per target")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
