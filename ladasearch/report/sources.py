"""Where trial summaries come from: a compress output folder, or a search recorded in MLflow.

A SOURCE is
    a folder      with ``summary.json`` (``ladasearch compress --out``), or with a non-empty ``summary``
                  in ``ladasearch.json``; a folder without either whose sub-folders have them gives all of them
    an MLflow search, by parent run id or by search name (tag ``ladasearch.search``; the latest such
                  parent run when several have the name), read from ``tracking_uri``

MLflow layout (see ``ladasearch.tracking``): the parent run has tags ``ladasearch.role=search`` and
``ladasearch.search=<name>``; each trial is a child run (tag ``mlflow.parentRunId``, tag
``ladasearch.role=trial``) with the artifact ``summary.json``.  Only ended child runs are read (FINISHED, or
KILLED: stopped before the target size, or interrupted).  A trial whose outcome (``summary.trial_outcome``) is
not completed or stopped at the target, or without a score, is incomplete: it is dropped unless
``include_incomplete``.

Every summary is read as a ``TrialSummary`` (a hand-edited one with a wrong type is one LadaError naming
the file and the field) and returned as a ``LoadedTrial`` with its ``Source``: ``kind`` (folder/mlflow),
``label`` (the folder name or the search name), and ``path`` or ``tracking_uri``/``parent_run_id``/``run_id``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import LadaError
from ..serialize import META
from ..summary import TrialSummary
from ..tracking import SEARCH, Tracker, resolve_tracking_uri
from .records import LoadedTrial, Source


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LadaError(f"could not read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise LadaError(f"{path} does not hold a summary (a JSON object)")
    return data


def _folder_summary(folder: Path) -> TrialSummary | None:
    if (folder / "summary.json").is_file():
        return TrialSummary.from_json(_read_json(folder / "summary.json"), str(folder / "summary.json"))
    if (folder / META).is_file():
        summary = _read_json(folder / META).get("summary")
        return TrialSummary.from_json(summary, f"{folder / META} summary") if summary else None
    return None


def _from_folder(folder: Path) -> list[LoadedTrial]:
    found = []
    summary = _folder_summary(folder)
    if summary is not None:
        found.append((folder, summary))
    else:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            summary = _folder_summary(sub)
            if summary is not None:
                found.append((sub, summary))
    if not found:
        raise LadaError(f"{str(folder)!r} has no summary.json (nor a ladasearch.json with a summary), "
                        f"and neither has any folder in it")
    return [LoadedTrial(s, Source("folder", f.name, path=str(f))) for f, s in found]


def _from_mlflow(source: str, tracking_uri: str, include_incomplete: bool) -> list[LoadedTrial]:
    tracker = Tracker.existing(tracking_uri)
    parent = tracker.find_search(source)
    if parent is None:
        raise LadaError(f"{source!r} is neither a folder with summary.json nor an MLflow search "
                        f"(no parent run with that id or {SEARCH} name in {tracking_uri})")
    name = parent.search
    tracker.require_artifacts(parent, name)
    summaries = []
    for run in tracker.trial_runs(parent):
        # FINISHED: completed or stopped at the target size; KILLED: stopped before it (``MlflowTrials``)
        summary = tracker.read_summary(run.run_id) if run.status in ("FINISHED", "KILLED") else None
        if summary is None:  # running, failed, or finished without its summary
            continue
        searched = parent.search_tags
        for key in ("task", "target"):  # the parent's tags fill what an older summary lacks
            if summary.get(key) is None and getattr(searched, key) is not None:
                summary[key] = getattr(searched, key)
        where = f"summary.json of MLflow run {run.run_id}"
        summaries.append(LoadedTrial(TrialSummary.from_json(summary, where), Source(
            "mlflow", name, search=name, tracking_uri=tracking_uri, parent_run_id=parent.run_id, run_id=run.run_id,
            run_name=run.name, outcome=run.trial.outcome)))
    if not include_incomplete:
        summaries = [s for s in summaries if s.complete]
    return summaries


def load_summaries(source: str | Path, tracking_uri: str | None = None, *,
                   include_incomplete: bool = False) -> list[LoadedTrial]:
    """Trial summaries of one SOURCE (see the module docstring), each with where it came from."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        summaries = _from_folder(path)
        return summaries if include_incomplete else [s for s in summaries if s.complete]
    if path.exists():
        raise LadaError(f"{text!r} is a file; give a folder with summary.json, or an MLflow search name or run id")
    if "/" in text or "\\" in text or text.startswith("."):
        raise LadaError(f"{text!r} is neither a folder with summary.json (no such folder) nor an MLflow search name")
    return _from_mlflow(text, resolve_tracking_uri(tracking_uri, create=False), include_incomplete)


def load_all(sources: list[str], tracking_uri: str | None = None, *,
             include_incomplete: bool = False) -> list[LoadedTrial]:
    """``load_summaries`` of every source, concatenated; LadaError when they hold no complete trial."""
    summaries = []
    for source in sources:
        summaries.extend(load_summaries(source, tracking_uri, include_incomplete=include_incomplete))
    if not summaries:
        raise LadaError(f"no finished trial with a summary in {', '.join(map(str, sources))}")
    return summaries


def parent_runs(trials: list[LoadedTrial]) -> dict[str, str]:
    """``{parent run id: tracking uri}`` of the MLflow searches the trials came from."""
    return {t.source.parent_run_id: t.source.tracking_uri
            for t in trials if t.source is not None and t.source.kind == "mlflow"}
