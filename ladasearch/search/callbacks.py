"""Ray Tune callbacks that run in the driver: MLflow child runs per trial, and terminal progress.

Every trial report carries the trial's summary so far (``worker.SUMMARY_KEY``); the per-round MLflow
metrics are its last round record, named from the task's own metrics and loss terms, its score as
``val_score`` (the split it was scored on) and, once the round is at the target size, ``score_at_target``.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from ray import tune

from ..summary import TrialSummary
from ..tracking import ERROR, OUTCOME, SearchTags, Tracker
from .worker import PARAMS_KEY, reported_summary

# the progress line's words for each outcome (``summary.OUTCOMES``; a failed trial is told by on_trial_error)
OUTCOME_WORDS = {"completed": "finished", "stopped_at_target": "stopped at the target size",
                 "stopped_before_target": "stopped before the target size", "failed": "failed",
                 "interrupted": "interrupted"}


def round_metrics(summary: TrialSummary) -> dict[str, float]:
    """The numbers of the summary's latest round (and the latency, measured once on the final model)."""
    if not summary.history:
        return {}
    record = summary.history[-1]
    metrics = record.flat()
    if "score" in metrics:
        metrics[f"{record.split}_score"] = metrics.pop("score")
    if record.split == "val":  # the task's metrics on validation rows must not read as dev numbers
        metrics.update({f"val_{k}": metrics.pop(k) for k in record.metrics if k in metrics})
    if summary.score_at_target is not None:
        metrics["score_at_target"] = summary.score_at_target
    if summary.latency_ms is not None and math.isfinite(summary.latency_ms):
        metrics["latency_ms"] = summary.latency_ms
    return metrics


def trial_error(trial) -> str:
    """The last line of a failed trial's error (the exception's own message).

    Read from the trial's local error file, which Tune writes before it calls the callbacks
    (the copy in the storage folder may not be synced yet).
    """
    text = ""
    path = getattr(trial, "error_file", None)
    if path and os.path.isfile(path):
        text = Path(path).read_text(errors="replace")
    if not text:
        try:
            text = str(trial.get_error() or "")
        except Exception:  # no error file in storage either
            text = ""
    if OOM_MARK in text:
        return memory_kill(text)
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Failure #")]
    return (lines[-1] if lines else "unknown error")[:500]


OOM_MARK = "killed due to the node running low on memory"   # Ray's memory monitor, in the trial's error
_OOM_USAGE = re.compile(r"was ([\d.]+\s*[KMGT]?B) used / ([\d.]+\s*[KMGT]?B) limit")
_OOM_THRESHOLD = re.compile(r"threshold of \d+B \(([\d.]+%) of")
_OOM_TASK = re.compile(r"task name=ImplicitFunc\.(\w+)")


def memory_kill(text: str) -> str:
    """One line for a trial whose worker Ray's memory monitor killed (Ray's own text is 40 lines whose last is
    a link to its documentation)."""
    usage, threshold, task = _OOM_USAGE.search(text), _OOM_THRESHOLD.search(text), _OOM_TASK.search(text)
    when = {"__init__": " while it started", "train": " while it trained"}.get(task.group(1), "") if task else ""
    facts = [f"node memory {usage.group(1)} used of {usage.group(2)}" if usage else "",
             f"above the kill threshold of {threshold.group(1)}" if threshold else ""]
    said = ", ".join(f for f in facts if f)
    return (f"Ray's memory monitor killed the trial's worker{when}" + (f" ({said})" if said else "")
            + "; lower --concurrency, use a smaller model, or raise RAY_memory_usage_threshold (a fraction of "
              "the node's memory)")


class MlflowTrials(tune.Callback):
    """One nested MLflow run per Tune trial, reused on resume so nothing is duplicated."""

    def __init__(self, tracker: Tracker, parent_id: str, tags: SearchTags, params: dict):
        self.tracker, self.parent_id, self.tags, self.params = tracker, parent_id, tags, params
        self.runs: dict[str, str] = {}

    def _run(self, trial) -> str:
        if trial.trial_id not in self.runs:
            run_id, _ = self.tracker.trial_run(self.parent_id, trial.trial_id, f"trial-{trial.trial_id}", self.tags)
            self.runs[trial.trial_id] = run_id
            self.tracker.log_params(run_id, {**self.params, **{f"config.{k}": v for k, v in trial.config.items()}})
        return self.runs[trial.trial_id]

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = self._run(trial)
        if PARAMS_KEY in result:
            self.tracker.log_params(run_id, json.loads(result[PARAMS_KEY]))
        summary = reported_summary(result)
        if summary is not None and summary.history:
            self.tracker.log_metrics(run_id, round_metrics(summary), step=summary.history[-1].round)

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self._run(trial)
        # stopped early by the scheduler, the last report still holds the trial's summary up to then
        summary = reported_summary(trial.last_result)
        if summary is not None:
            self.tracker.log_summary(run_id, summary)
        outcome = summary.outcome if summary is not None else "stopped_before_target"
        self.tracker.set_tags(run_id, {OUTCOME: outcome})
        # the runs table shows a status: a trial the scheduler stopped before the target size never finished
        self.tracker.finish(run_id, "KILLED" if outcome == "stopped_before_target" else "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self._run(trial)
        self.tracker.set_tags(run_id, {OUTCOME: "failed", ERROR: trial_error(trial)})
        self.tracker.finish(run_id, "FAILED")


class Progress(tune.Callback):
    """Prints trials done/running/failed, the best score so far and the elapsed time."""

    def __init__(self, total: int, metric: str, target: float, echo: Callable[[str], None] = print,
                 every_s: float = 20.0):
        self.total, self.metric, self.target, self.echo, self.every_s = total, metric, target, echo, every_s
        self.started = time.monotonic()
        self.last_print = 0.0
        self.best: tuple[float, str, float] | None = None

    def __setstate__(self, state):  # a resumed search counts time from the resume
        self.__dict__.update(state)
        self.started, self.last_print = time.monotonic(), 0.0

    def _line(self, trials, note: str = "") -> str:
        done = sum(t.status == "TERMINATED" for t in trials)
        failed = sum(t.status == "ERROR" for t in trials)
        running = sum(t.status == "RUNNING" for t in trials)
        elapsed = int(time.monotonic() - self.started)
        best = (f"best {self.metric} {self.best[0]:.4f} (trial {self.best[1]}, {self.best[2]:.2f}x)"
                if self.best else "no score yet")
        return (f"[{elapsed // 3600:d}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}] trials {done + failed}/"
                f"{self.total} done ({failed} failed), {running} running | {best}{note}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        score = result.get("score_at_target")  # earlier rounds are larger models: never the best
        if isinstance(score, (int, float)) and math.isfinite(score) and self._beats(score, trial, trials):
            self.best = (score, trial.trial_id, result.get("achieved_factor", float("nan")))
        if time.monotonic() - self.last_print >= self.every_s:
            self.last_print = time.monotonic()
            self.echo(self._line(trials))

    def _beats(self, score: float, trial, trials) -> bool:
        """Higher, or equal and earlier in the search's trial order: a tie goes where ``results.best_trial`` (the
        first of the highest, in that order) sends it, so the line and the result name one trial."""
        if self.best is None or score > self.best[0]:
            return True
        if score < self.best[0] or trial.trial_id == self.best[1]:
            return False
        order = [t.trial_id for t in trials]
        return self.best[1] not in order or order.index(trial.trial_id) < order.index(self.best[1])

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        summary = reported_summary(last)
        kind = OUTCOME_WORDS[summary.outcome if summary is not None else "stopped_before_target"]
        self.echo(self._line(trials, f" | trial {trial.trial_id} {kind}: {self.metric} "
                                     f"{last.get('score', float('nan')):.4f} at round {last.get('round', '?')}"))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.echo(self._line(trials, f" | trial {trial.trial_id} failed: {trial_error(trial)}"))
