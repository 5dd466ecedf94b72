"""A complete search read back from MLflow: what ``resume`` of a finished search answers, changing nothing.

Re-finalizing a finished search would append parent metrics again and, with tied scores, could pick
another best trial; so a resume whose parent run is FINISHED (set only once every trial ended and the
results were logged) reports the recorded outcome from ``trials.json`` and ``best_summary.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

from ..errors import LadaError
from ..summary import TrialSummary
from ..tracking import Tracker
from .results import SearchOutcome, TrialRow

def _rows(items: Any, where: str) -> tuple[TrialRow, ...]:
    if not isinstance(items, list):
        raise LadaError(f"{where} must hold a list of trials")
    known = {f.name for f in fields(TrialRow)}
    try:
        return tuple(TrialRow(**{k: v for k, v in item.items() if k in known}) for item in items)
    except (AttributeError, TypeError) as exc:
        raise LadaError(f"{where} has a trial that is not a trial row: {exc}") from None


def recorded_outcome(tracker: Tracker, name: str, parent_id: str,
                     log: Callable[[str], None]) -> SearchOutcome | None:
    """The outcome of search ``name`` when its parent run is FINISHED, else None (there is work to resume)."""
    parent = tracker.find_search(parent_id)
    if parent is None:
        raise LadaError(f"the MLflow parent run {parent_id} of search {name!r} is not in {tracker.tracking_uri}")
    if parent.status != "FINISHED":
        return None
    trials = tracker.read_summary(parent_id, "trials.json") or {"trials": []}
    where = f"trials.json of MLflow run {parent_id}"
    rows = _rows(trials.get("trials", []), where)
    best = tracker.read_summary(parent_id, "best_summary.json")
    best_summary = TrialSummary.from_json(best, f"best_summary.json of MLflow run {parent_id}") if best else None
    best_id = parent.best.trial_id if parent.best is not None else None
    log(f"search {name} is complete (MLflow parent run {parent_id}, {len(rows)} trials"
        + (f", best trial {best_id}" if best_id else "") + f"); nothing to resume, nothing changed. "
        f"Its table: ladasearch export {name}")
    return SearchOutcome(name, parent_id, rows, best_summary, None, _rows(trials.get("pareto", []), where))
