"""The search-vs-fixed figure: the chosen students' dev scores per arm, and the best validation score after k
trials of TPE (warm-started) and random search."""

from __future__ import annotations

import statistics
from pathlib import Path

import _common as C

SEARCHED = ("tpe", "random")


def plot_search_vs_fixed(payload: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = payload["runs"]
    targets = sorted({r["target"] for r in runs})
    arms = [a for a in ("tpe", "random", "prune", "svd", "paper") if any(r["arm"] == a for r in runs)]
    fig, axes = plt.subplots(1, 1 + len(targets), figsize=(5 + 4.5 * len(targets), 4.4))
    colors = dict(zip(arms, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    width = 0.8 / len(arms)
    bars = axes[0]
    for i, arm in enumerate(arms):
        for j, target in enumerate(targets):
            devs = [100 * r["chosen"]["dev"] for r in runs if r["arm"] == arm and r["target"] == target and r["chosen"]]
            if not devs:
                continue
            x = j + i * width
            sd = statistics.stdev(devs) if len(devs) > 1 else 0.0
            bars.bar(x, statistics.mean(devs), width * 0.9, yerr=sd, capsize=3, color=colors[arm],
                     label=arm if j == 0 else None)
            bars.scatter([x] * len(devs), devs, color="black", s=8, zorder=3)
    bars.set_xticks([j + 0.4 - width / 2 for j in range(len(targets))], [f"{t:g}x" for t in targets])
    bars.axhline(100 * payload["teacher_dev_score"], color="black", linestyle="--", linewidth=0.8, label="teacher")
    low = min([100 * r["chosen"]["dev"] for r in runs if r["chosen"]] or [50.0])
    bars.set_ylim(max(0.0, low - 8), None)
    bars.set_ylabel("dev % of the chosen student (mean +- std, seeds as dots)")
    bars.set_title("chosen on validation, scored on dev")
    bars.legend(fontsize=7)
    for ax, target in zip(axes[1:], targets):
        for arm in SEARCHED:
            curves = [r["best_so_far_val"] for r in runs if r["arm"] == arm and r["target"] == target]
            for curve in curves:
                ax.plot(range(1, len(curve) + 1), [None if v is None else 100 * v for v in curve],
                        color=colors.get(arm, "grey"), alpha=0.3, linewidth=0.8)
            if curves:
                mean = [statistics.mean(vals) for vals in zip(*curves) if None not in vals]
                ax.plot(range(1 + len(curves[0]) - len(mean), len(curves[0]) + 1), [100 * v for v in mean],
                        color=colors.get(arm, "grey"), linewidth=2, marker="o", markersize=3,
                        label=f"{arm} (mean of {len(curves)} seeds)")
        ax.set_xlabel("trials")
        ax.set_ylabel("best validation % so far")
        ax.set_title(f"{target:g}x: TPE with warm starts vs random")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{payload['task']}: search vs fixed recipes ({payload['trials']} trials per search)")
    return C.save_png(fig, path)
