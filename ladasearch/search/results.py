"""What a finished (or interrupted) search leaves: one row per trial, the best trial, the Pareto front, plots.

Read from Ray Tune's ResultGrid.  Trials are ranked by ``score_at_target`` alone (the validation score of a
round at the target size): a trial stopped before the target has none and is never best.  The chosen
trial(s) are then scored once on dev (``dev_eval``); the best model, its summary (val and dev scores),
``trials.json`` and the plots go to the MLflow parent run, whose ``ladasearch.best.*`` tags record the
best ratios for later searches' warm starts.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import LadaError
from ..report.front_plot import FrontPoint, front_plot
from ..report.pareto import pareto_front
from ..report.plots import final_curve, search_plots
from ..report.records import LoadedTrial
from ..summary import OUTCOMES, TrialSummary, reaches_target, trial_outcome
from ..tracking import CHOSEN, OUTCOME, BestTags, Tracker
from .dev_eval import DevSet
from .objectives import get_objective
from .settings import SearchConfig
from .warm_start import svd_split_of
from .worker import reported_summary

if TYPE_CHECKING:
    from .final_stage import FinalStage

STATUSES = ("completed", "stopped_early", "failed", "interrupted")


@dataclass(frozen=True)
class TrialRow:
    """One trial of a search as the outcome and ``trials.json`` list it."""

    trial_id: str
    status: str                   # ``STATUSES``
    score: float | None           # validation score of the last round it reported
    achieved_factor: float | None
    round: int | None
    latency_ms: float | None
    config: dict[str, Any]
    score_at_target: float | None = None   # validation score at the target size: what trials are ranked by
    dev_score: float | None = None         # only for the chosen trial(s)
    size_bytes: float | None = None        # bytes of the deployed weights (the size objective; completed trials)
    steps: int | None = None               # training steps of the last result it reported

    @property
    def outcome(self) -> str:
        """How the trial ended (``summary.OUTCOMES``): ASHA may stop a trial after it reached the target size, and
        then it has a score at the target like a completed one."""
        return trial_outcome(self.status, self.score_at_target)

    def value_of(self, objective: str) -> float | None:
        """The trial's value of an objective (``objectives.OBJECTIVES``); the score is the one at the target size."""
        return {"score": self.score_at_target, "latency_ms": self.latency_ms, "size_bytes": self.size_bytes}[objective]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "outcome": self.outcome}   # the derived outcome, written for readers of the file


@dataclass(frozen=True)
class GatheredTrial:
    row: TrialRow
    summary: TrialSummary | None  # the last one it reported (None: it reported nothing)
    checkpoint: Path | None       # the final model's folder (completed trials)


@dataclass(frozen=True)
class SearchOutcome:
    name: str
    parent_run_id: str
    trials: tuple[TrialRow, ...]
    best: TrialSummary | None     # the best completed trial's summary (with its dev score)
    best_model: Path | None       # its checkpoint folder (a ladasearch model folder)
    pareto: tuple[TrialRow, ...]  # non-dominated completed trials (at the target size) when latency is an objective
    interrupted: bool = False     # stopped (Ctrl-C / SIGINT) before every trial ended; resume to go on

    def count(self, status: str) -> int:
        if status not in STATUSES:
            raise LadaError(f"trial status {status!r} is not one of {', '.join(STATUSES)}")
        return sum(t.status == status for t in self.trials)


def _finite(value) -> float | None:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def gather(grid, ended: Callable[[str], bool] | None = None) -> list[GatheredTrial]:
    """Every trial of a Tune ResultGrid with its last summary and, when it completed, its checkpoint.

    ``ended`` (given for a search that was stopped): whether the trial of that id ended, as its recorded outcome
    says.  One that neither completed nor failed and did not end was cut off by the stop: interrupted.  Tune
    itself tells them apart from a trial its scheduler stopped by nothing that survives a resume (both are
    TERMINATED; the ``done`` mark of a last result is not in the saved state).
    """
    trials = []
    for result in grid:
        metrics = result.metrics or {}
        summary = reported_summary(metrics)
        trial_id = metrics.get("trial_id") or (result.path and Path(result.path).name)
        status = "failed" if result.error else summary.status if summary is not None else "stopped_early"
        if status == "stopped_early" and ended is not None and not ended(trial_id):
            status = "interrupted"
        latency = metrics.get("latency_ms")
        row = TrialRow(trial_id=trial_id,
                       status=status, score=metrics.get("score"), achieved_factor=metrics.get("achieved_factor"),
                       round=metrics.get("round"),
                       latency_ms=latency if isinstance(latency, (int, float)) and math.isfinite(latency) else None,
                       config=dict(result.config or {}),
                       score_at_target=summary.score_at_target if summary is not None else None,
                       size_bytes=_finite(metrics.get("size_bytes")),
                       steps=int(metrics["steps"]) if isinstance(metrics.get("steps"), (int, float)) else None)
        checkpoint = Path(result.checkpoint.path) if status == "completed" and result.checkpoint else None
        trials.append(GatheredTrial(row, summary, checkpoint))
    return trials


def best_trial(trials: list[GatheredTrial]) -> GatheredTrial | None:
    """The completed trial with a model and the highest validation score at the target size (never dev)."""
    done = [t for t in trials if t.checkpoint is not None and t.summary is not None
            and t.row.score_at_target is not None]
    return max(done, key=lambda t: t.row.score_at_target, default=None)


def at_target(rows: list[TrialRow], objectives: tuple[str, ...], target: float | None) -> list[TrialRow]:
    """Completed trials whose final size is at most 1% short of ``target`` (``TrialSummary.score_at_target``'s rule)
    and that have every objective measured."""
    return [r for r in rows if r.status == "completed" and all(r.value_of(n) is not None for n in objectives)
            and (target is None or (r.achieved_factor is not None and reaches_target(r.achieved_factor, target)))]


def pareto(rows: list[TrialRow], objectives: tuple[str, ...] = ("score", "latency_ms"),
           target: float | None = None) -> tuple[TrialRow, ...]:
    """Target-size trials no other beats on every objective (val score at the target size, latency, size ...),
    ordered by the first objective after the score (fastest or smallest first)."""

    rows = at_target(rows, objectives, target)
    others = objectives[1:]
    points = [tuple(r.value_of(n) for n in others) + (r.score_at_target,) for r in rows]
    front = pareto_front(points, maximize=tuple(get_objective(n).direction == "max" for n in others) + (True,))
    return tuple(rows[i] for i in front)


def log_front_plot(cfg: SearchConfig, rows: list[TrialRow], front_ids: set[str], tracker: Tracker, parent_id: str,
                   log: Callable[[str], None]) -> None:
    """Val score against each other objective of the target-size trials, the front ringed -> plots/pareto_front.png."""

    others = [get_objective(n) for n in cfg.objectives[1:]]
    points = [FrontPoint(r.trial_id, r.score_at_target, tuple(r.value_of(o.name) / o.scale for o in others),
                         r.trial_id in front_ids) for r in at_target(rows, cfg.objectives, cfg.target)]
    with tempfile.TemporaryDirectory() as folder:
        try:
            path = front_plot(points, tuple(o.axis(cfg.runtime) for o in others), Path(folder) / "pareto_front.png",
                              score_label="val score at the target size",
                              title=f"{cfg.name}: {len(front_ids)} of {len(points)} trials at {cfg.target:g}x "
                                    f"on the Pareto front ({', '.join(cfg.objectives)})")
        except LadaError as exc:
            log(f"plot pareto_front.png skipped: {exc}")
            return
        tracker.log_artifact(parent_id, path, "plots")


def log_plots(summaries: list[TrialSummary], tracker: Tracker, parent_id: str, log: Callable[[str], None]) -> None:
    """Score vs compression with the Pareto front, learning curves, ratio split -> parent run's plots/."""

    if not summaries:
        return
    with tempfile.TemporaryDirectory() as folder:
        made = search_plots([LoadedTrial(s) for s in summaries], folder,
                            skipped=lambda name, why: log(f"plot {name} skipped: {why}"))
        for path in made:
            tracker.log_artifact(parent_id, path, "plots")


def _score_chosen(chosen: dict[str, tuple[GatheredTrial, str]], dev: DevSet | None, tracker: Tracker,
                  parent_id: str) -> dict[str, TrialSummary]:
    """Dev scores of the chosen trials ({trial id: (trial, why chosen)}), also logged to their MLflow runs."""
    scored = {}
    for trial_id, (trial, why) in chosen.items():
        summary = dev.score(trial.checkpoint, trial.summary) if dev is not None else trial.summary
        scored[trial_id] = summary
        run_id = tracker.find_trial_run(parent_id, trial_id)
        if run_id is not None:
            if summary.dev_score is not None:
                tracker.log_metrics(run_id, {"dev_score": summary.dev_score}, step=summary.history[-1].round)
            tracker.log_summary(run_id, summary)
            tracker.set_tags(run_id, {CHOSEN: why})
    return scored


def _first_known(*values: float | None) -> float:
    return next((v for v in values if v is not None), math.nan)


def _log_best(tracker: Tracker, parent_id: str, row: TrialRow, summary: TrialSummary) -> None:
    """The best trial on the parent run: scores as metrics, ratios as tags (what later warm starts read).  The
    scores are those of the model shipped: after the final budget when there was one."""
    r, nan = summary.ratios, math.nan
    tracker.log_metrics(parent_id, {"val_score": summary.score_at_target,
                                    "best_achieved_factor": row.achieved_factor,
                                    "dev_score": summary.dev_score if summary.dev_score is not None else nan,
                                    "best_latency_ms": _first_known(row.latency_ms, summary.latency_ms)})
    tracker.mark_best(parent_id, BestTags(row.trial_id, r.method, r.embedding, r.svd, r.weight, r.structure,
                                          svd_split_of(r), summary.score_at_target, summary.dev_score))


def _final_model(final: FinalStage, best: GatheredTrial, trial: TrialSummary, rows: list[TrialRow], dev: DevSet | None,
                 tracker: Tracker, parent_id: str, log: Callable[[str], None]) -> tuple[Path, TrialSummary]:
    """The best trial distilled to the final budget, scored once on dev; its curve and plot on the parent run."""
    result = final(best.checkpoint, best.summary, rows)
    summary = dev.score(result.folder, result.summary) if dev is not None else result.summary
    for point in result.curve:
        tracker.log_metrics(parent_id, {"final_val_score": point.score}, step=point.step)
    best_point = result.best
    tracker.log_metrics(parent_id, {"final_steps": float(result.curve[-1].step), "final_best_step": best_point.step,
                                    "final_start_val_score": result.curve[0].score,
                                    "trial_dev_score": trial.dev_score if trial.dev_score is not None else math.nan})
    with tempfile.TemporaryDirectory() as folder:
        try:
            plot = final_curve(result.curve, summary, trial, Path(folder) / "final_curve.png")
            tracker.log_artifact(parent_id, plot, "plots")
        except LadaError as exc:
            log(f"plot final_curve.png skipped: {exc}")
    before = f", dev {trial.dev_score:.4f}" if trial.dev_score is not None else ""
    after = f", dev {summary.dev_score:.4f}" if summary.dev_score is not None else ""
    log(f"final distillation done: val {result.curve[0].score:.4f}{before} (trial {best.row.trial_id}) -> val "
        f"{best_point.score:.4f}{after} after {best_point.step} of {result.curve[-1].step} steps")
    return result.folder, summary


def finish(cfg: SearchConfig, grid, tracker: Tracker, parent_id: str, tokenizer,
           log: Callable[[str], None], dev: DevSet | None = None, final: FinalStage | None = None) -> SearchOutcome:
    """Best trial (on val) -> final budget (``final``, once every trial ended) -> dev score -> parent run (metrics,
    tags, summary, model, plots); the table of trials."""
    # Ray Tune ends fit() quietly on Ctrl-C (state saved); every trial has ended only when the search is complete
    interrupted = grid.num_terminated + grid.num_errors < cfg.num_samples
    trials = gather(grid, (lambda trial_id: tracker.trial_outcome(parent_id, trial_id) not in (None, "interrupted"))
                    if interrupted else None)
    rows = [t.row for t in trials]
    completed = sum(r.status == "completed" for r in rows)
    log_plots([t.summary for t in trials if t.summary is not None and t.row.status != "failed"], tracker, parent_id,
              log)
    best = best_trial(trials)
    front_ids = {r.trial_id for r in pareto(rows, cfg.objectives, cfg.target)} if cfg.multi_objective else set()
    chosen = {t.row.trial_id: (t, "best" if t is best else "pareto") for t in trials
              if t is best or (t.row.trial_id in front_ids and t.checkpoint is not None)}
    scored = _score_chosen(chosen, dev, tracker, parent_id)
    rows = [replace(r, dev_score=scored[r.trial_id].dev_score) if r.trial_id in scored else r for r in rows]
    front = tuple(sorted((r for r in rows if r.trial_id in front_ids), key=lambda r: r.value_of(cfg.objectives[1])))
    tracker.log_json(parent_id, {"objectives": list(cfg.objectives), "runtime": cfg.runtime, "target": cfg.target,
                                 "trials": [r.to_json() for r in rows], "pareto": [r.to_json() for r in front]},
                     "trials.json")
    if cfg.multi_objective:
        log_front_plot(cfg, rows, front_ids, tracker, parent_id, log)
    best_model = best_summary = None
    if best is not None:
        row, best_summary, best_model = best.row, scored[best.row.trial_id], best.checkpoint
        if final is not None and final.budget.enabled and not interrupted:
            try:
                best_model, best_summary = _final_model(final, best, best_summary, rows, dev, tracker, parent_id, log)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: what is scored so far stays in the final/ folder
                interrupted = True
                log("final distillation interrupted: it continues from its last scored step on resume")
        if tokenizer is not None and not (best_model / "tokenizer_config.json").exists():
            tokenizer.save_pretrained(best_model)
        tracker.log_artifacts(parent_id, best_model, "best_model")
        tracker.log_summary(parent_id, best_summary, "best_summary.json")
        _log_best(tracker, parent_id, row, best_summary)
        teacher = best_summary.teacher_score if best_summary.teacher_score is not None else math.nan
        dev_text = f", dev {best_summary.dev_score:.4f}" if best_summary.dev_score is not None else ""
        shipped = " after the final budget" if best_summary.final else ""
        log(f"{'best trial so far' if interrupted else 'best trial'} {row.trial_id}{shipped}: val "
            f"{best_summary.main_metric} {best_summary.score_at_target:.4f} at {row.achieved_factor:.3f}x{dev_text} "
            f"(teacher dev {teacher:.4f}); model in {best_model}")
    elif completed:
        sizes = [r.achieved_factor for r in rows if r.status == "completed" and r.achieved_factor]
        log(f"no trial reached the target size: the {completed} completed trial(s) ended at {min(sizes):.3f}x to "
            f"{max(sizes):.3f}x, more than 1% short of {cfg.target:g}x (whole SVD ranks round up on a small model); "
            f"nothing to export")
    else:
        log("no trial finished; nothing to export (see the stopped and failed trials above)")
    tracker.log_metrics(parent_id, {f"trials_{outcome}": sum(r.outcome == outcome for r in rows)
                                    for outcome in OUTCOMES})
    for row in rows:
        run_id = tracker.find_trial_run(parent_id, row.trial_id) if row.outcome == "interrupted" else None
        if run_id is not None:   # no callback ends it: the stop came mid-trial (a resume reopens the run)
            tracker.set_tags(run_id, {OUTCOME: "interrupted"})
            tracker.finish(run_id, "KILLED")
    if interrupted:
        log(f"search {cfg.name} interrupted after {completed} of {cfg.num_samples} trials; continue it with "
            f"`ladasearch resume {cfg.name} --storage {cfg.folder.parent}`")
    tracker.finish(parent_id, "KILLED" if interrupted else "FINISHED")
    return SearchOutcome(cfg.name, parent_id, tuple(rows), best_summary, best_model, front, interrupted)
