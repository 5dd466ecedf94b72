"""Ray Tune callbacks that run in the driver: MLflow child runs per trial, and terminal progress."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

from ray import tune

from .tracking import Tracker

ROUND_KEYS = ("round", "score", "accuracy", "f1", "mcc", "pearson", "spearman", "achieved_factor", "params",
              "params_embedding", "params_encoder", "seconds", "latency_ms")


def round_metrics(result: dict) -> dict:
    """The per-round numbers a trial reported (Tune's own bookkeeping keys left out)."""
    return {k: v for k, v in result.items() if (k in ROUND_KEYS or k.startswith("loss"))
            and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


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
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Failure #")]
    return (lines[-1] if lines else "unknown error")[:500]


class MlflowTrials(tune.Callback):
    """One nested MLflow run per Tune trial, reused on resume so nothing is duplicated."""

    def __init__(self, tracker: Tracker, parent_id: str, tags: dict, settings: dict):
        self.tracker, self.parent_id, self.tags, self.settings = tracker, parent_id, tags, settings
        self.runs: dict[str, str] = {}
        self.history: dict[str, list[dict]] = {}

    def _run(self, trial) -> str:
        if trial.trial_id not in self.runs:
            run_id, _ = self.tracker.trial_run(self.parent_id, trial.trial_id, f"trial-{trial.trial_id}", self.tags)
            self.runs[trial.trial_id] = run_id
            self.tracker.log_params(run_id, {**self.settings, **{f"config.{k}": v for k, v in trial.config.items()}})
        return self.runs[trial.trial_id]

    def on_trial_start(self, iteration, trials, trial, **info):
        self._run(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = self._run(trial)
        if "params_json" in result:
            self.tracker.log_params(run_id, json.loads(result["params_json"]))
        metrics = round_metrics(result)
        self.history.setdefault(trial.trial_id, []).append(metrics)
        self.tracker.log_metrics(run_id, metrics, step=int(metrics.get("round", 0)))

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self._run(trial)
        last = trial.last_result or {}
        if "summary_json" in last:
            summary = json.loads(last["summary_json"])
            outcome = "completed"
        else:  # stopped early by the scheduler: what it did is still recorded
            history = self.history.get(trial.trial_id, [])
            summary = {"config": dict(trial.config), "history": history, "stopped_early": True,
                       "score": history[-1]["score"] if history else None,
                       "achieved_factor": history[-1].get("achieved_factor") if history else None}
            outcome = "stopped_early"
        self.tracker.log_json(run_id, summary, "summary.json")
        self.tracker.set_tags(run_id, {"ladasearch.outcome": outcome})
        self.tracker.finish(run_id, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self._run(trial)
        self.tracker.set_tags(run_id, {"ladasearch.outcome": "failed", "ladasearch.error": trial_error(trial)})
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
        score = result.get("score")
        at_target = result.get("achieved_factor", 0) >= 0.99 * self.target  # earlier rounds are still larger
        if at_target and isinstance(score, (int, float)) and (self.best is None or score > self.best[0]):
            self.best = (score, trial.trial_id, result.get("achieved_factor", float("nan")))
        if time.monotonic() - self.last_print >= self.every_s:
            self.last_print = time.monotonic()
            self.echo(self._line(trials))

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        kind = "finished" if "summary_json" in last else "stopped early"
        self.echo(self._line(trials, f" | trial {trial.trial_id} {kind}: {self.metric} "
                                     f"{last.get('score', float('nan')):.4f} at round {last.get('round', '?')}"))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.echo(self._line(trials, f" | trial {trial.trial_id} failed: {trial_error(trial)}"))
