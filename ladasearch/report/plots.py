"""Plots of a search (matplotlib, Agg backend, PNG).  Each takes trials (``LoadedTrial``) and an output path
and returns the path.

    pareto_plot       score at the target size (val for a search) vs achieved compression factor, the Pareto
                      front of target-size trials highlighted; trials stopped before their target grey
    learning_curves   score per round (from ``history``) of the best k trials that reached their target,
                      legends naming their ratios; the trials stopped before it grey
    ratio_split       the embedding / matrix-factorization / weight-pruning reduction factors of the best
                      trial per target, as grouped bars
The y axes say which split the scores come from (``TrialSummary.score_split``: val or dev).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..errors import LadaError  # noqa: E402
from .pareto import pareto_front  # noqa: E402
from .records import LoadedTrial  # noqa: E402
from .table import ratio_table  # noqa: E402


def _scored(trials: list[LoadedTrial]) -> list[LoadedTrial]:
    scored = [t for t in trials if t.summary.score is not None]
    if not scored:
        raise LadaError("no trial with a score to plot")
    return scored


def _at_target(trials: list[LoadedTrial]) -> tuple[list[LoadedTrial], list[LoadedTrial]]:
    """(trials with a score at their target size, the others: stopped before it, drawn grey)."""
    reached = [t for t in trials if t.summary.score_at_target is not None]
    return reached, [t for t in trials if t.summary.score_at_target is None]


def _label(trial: LoadedTrial) -> str:
    target = trial.summary.target
    parts = [p for p in (trial.label, trial.summary.task, f"{target:g}x" if target else None) if p]
    return " / ".join(parts) or "trials"


def _ratios(trial: LoadedTrial) -> str:
    r = trial.summary.ratios
    name = trial.source.run_name if trial.source is not None and trial.source.run_name else None
    return f"{r.method} emb {r.embedding:.3f}, svd {r.svd:.3f}, w {r.weight:.3f}" + (f" ({name})" if name else "")


def _axis(trials: list[LoadedTrial]) -> str:
    """'val accuracy', 'dev accuracy' (or 'score' across metrics/splits): what the y axis shows."""
    kinds = {(t.summary.score_split, t.summary.main_metric) for t in trials}
    return " ".join(next(iter(kinds))) if len(kinds) == 1 else "score (val or dev, see the summaries)"


def _finish(fig, ax, path: str | Path, *, xlabel: str | None, ylabel: str, title: str, legend_size: int = 8,
            grid_axis: str = "both") -> Path:
    """Label, grid and legend the axes, write the PNG (parents created) and close the figure."""
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis=grid_axis, alpha=0.3)
    ax.legend(fontsize=legend_size, loc="best")
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (parents created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def pareto_plot(trials: list[LoadedTrial], path: str | Path, title: str | None = None) -> Path:
    """Score at the target size vs achieved compression factor; the Pareto front (of target-size trials only)
    ringed and joined by a step line; trials stopped before their target grey, at their last score."""
    trials = _scored(trials)
    reached, stopped = _at_target(trials)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if stopped:
        ax.scatter([t.summary.achieved_factor for t in stopped], [t.summary.score for t in stopped], s=22,
                   color="lightgray", label=f"stopped before the target size ({len(stopped)})")
    groups: dict[str, list[LoadedTrial]] = {}
    for t in reached:
        groups.setdefault(_label(t), []).append(t)
    for label, group in groups.items():
        ax.scatter([t.summary.achieved_factor for t in group], [t.summary.score_at_target for t in group], s=28,
                   alpha=0.75, label=label)
    points = [(t.summary.achieved_factor, t.summary.score_at_target) for t in reached]
    front = pareto_front(points) if points else []
    xs, ys = [points[i][0] for i in front], [points[i][1] for i in front]
    if front:
        ax.step(xs, ys, where="post", color="black", linewidth=1, alpha=0.6)
        ax.scatter(xs, ys, s=110, facecolors="none", edgecolors="red", linewidths=1.5, label="Pareto front")
    teachers = {(t.summary.task, t.summary.teacher_score) for t in trials if t.summary.teacher_score is not None}
    for task, score in sorted(teachers, key=str):
        ax.axhline(score, linestyle="--", color="gray", linewidth=1)
        ax.annotate(f"teacher dev{f' ({task})' if task and len(teachers) > 1 else ''} {score:.3f}",
                    (ax.get_xlim()[0], score), textcoords="offset points", xytext=(4, 3), fontsize=8, color="gray")
    return _finish(fig, ax, path, xlabel="achieved compression factor (teacher params / student params)",
                   ylabel=_axis(trials), title=title or f"{len(reached)} trials at their target size, "
                                                        f"{len(front)} on the Pareto front")


def learning_curves(trials: list[LoadedTrial], path: str | Path, k: int = 5, title: str | None = None) -> Path:
    """Score per round of the best ``k`` trials that reached their target size (ranked by the score there; the
    last point is the final distillation, if any), named by their ratios; trials stopped before it in grey."""
    with_history = [t for t in trials if t.summary.history and t.summary.score is not None]
    if not with_history:
        raise LadaError("no trial with a per-round history to plot")
    reached, stopped = _at_target(with_history)
    best = sorted(reached, key=lambda t: t.summary.score_at_target, reverse=True)[:k]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, t in enumerate(stopped):
        rows = sorted(t.summary.history, key=lambda r: r.round)
        ax.plot([r.round for r in rows], [r.score for r in rows], color="lightgray", linewidth=1, marker=".",
                label=f"stopped before the target size ({len(stopped)})" if i == 0 else None)
    for rank, t in enumerate(best, 1):
        rows = sorted(t.summary.history, key=lambda r: r.round)
        line, = ax.plot([r.round for r in rows], [r.score for r in rows], marker="o",
                        label=f"#{rank} {t.summary.score_at_target:.3f}: {_ratios(t)}")
        finals = [(r.round, r.score) for r in rows if r.final]
        if finals:
            ax.scatter(*zip(*finals), marker="*", s=120, color=line.get_color(), zorder=3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    groups = sorted({_label(t) for t in best})
    return _finish(fig, ax, path, xlabel="round (starred: after the final distillation steps)",
                   ylabel=_axis(with_history), legend_size=7,
                   title=title or f"best {len(best)} trial(s) at the target size" +
                   (f" ({', '.join(groups)})" if groups and groups != ["trials"] else ""))


def ratio_split(trials: list[LoadedTrial], path: str | Path, title: str | None = None) -> Path:
    """Grouped bars: embedding, matrix-factorization and weight-pruning reduction factors of the best trial
    of each target (and source), with the achieved overall factor written above each group."""
    rows = ratio_table(trials)
    if not rows:
        raise LadaError("no scored trial to plot")
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
    return _finish(fig, ax, path, xlabel=None, ylabel="reduction factor (1 / retention ratio)",
                   title=title or "ratio split of the best trial per target", grid_axis="y")


SEARCH_PLOTS = ("score_vs_compression.png", "learning_curves.png", "ratio_split.png")


def search_plots(trials: list[LoadedTrial], folder: str | Path, top_k: int = 5,
                 skipped=lambda name, why: None) -> list[Path]:
    """The plots of a search, as the search logs them and ``report`` writes them: the same files from the same
    trials (every trial, stopped ones grey; the split of those that reached their target).  A plot that has
    nothing to draw is skipped and ``skipped(name, reason)`` told."""
    completed = [t for t in trials if t.complete]
    made = []
    for name, draw in zip(SEARCH_PLOTS, (lambda path: pareto_plot(trials, path),
                                         lambda path: learning_curves(trials, path, top_k),
                                         lambda path: ratio_split(completed, path))):
        try:
            made.append(draw(Path(folder) / name))
        except LadaError as exc:  # e.g. no completed trial to split
            skipped(name, str(exc))
    return made


def final_curve(curve, shipped, trial, path: str | Path) -> Path:
    """The final budget's validation curve (``ladasearch.final.FinalPoint`` s), the checkpoint kept ringed; the
    dev scores of the trial's own model and of the one shipped, and the teacher's, as reference lines."""
    if not curve:
        raise LadaError("no final distillation to plot")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    metric = shipped.main_metric
    ax.plot([p.step for p in curve], [p.score for p in curve], marker="o", ms=3, label=f"val {metric}")
    best = max(curve, key=lambda p: (p.score, -p.step))
    ax.scatter([best.step], [best.score], s=90, facecolors="none", edgecolors="black", label="checkpoint kept")
    for value, style, label in ((shipped.teacher_score, ":", "teacher dev"), (trial.dev_score, "--", "trial dev"),
                                (shipped.dev_score, "-", "shipped dev")):
        if value is not None:
            ax.axhline(value, ls=style, lw=1, color="gray" if label == "teacher dev" else None, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _finish(fig, ax, path, xlabel="final distillation step", ylabel=metric,
                   title=f"final budget of the chosen {shipped.target or shipped.achieved_factor:g}x student "
                         f"({shipped.task})")
