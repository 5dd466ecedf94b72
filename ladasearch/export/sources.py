"""Where trial summaries come from: a compress output folder, or a search recorded in MLflow.

A SOURCE is
    a folder      with ``summary.json`` (``ladasearch compress --out``), or with a non-empty ``summary``
                  in ``ladasearch.json``; a folder without either whose sub-folders have them gives all of them
    an MLflow search, by parent run id or by search name (tag ``ladasearch.search``; the latest such
                  parent run when several have the name), read from ``tracking_uri``

MLflow layout (see ``ladasearch.tracking``): the parent run has tags ``ladasearch.role=search`` and
``ladasearch.search=<name>``; each trial is a child run (tag ``mlflow.parentRunId``, tag
``ladasearch.role=trial``) with the artifact ``summary.json``.  Only FINISHED child runs are read.
A summary that has no ratios (a trial the scheduler stopped early) is incomplete: it is dropped unless
``include_incomplete``.

Every summary returned gets a ``source`` dict: ``kind`` (folder/mlflow), ``label`` (the folder name or the
search name), and ``path`` or ``tracking_uri``/``parent_run_id``/``run_id``/``run_name``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path

from ..errors import LadaError
from ..tracking import DEFAULT_STORE, PARENT, ROLE, SEARCH

DEFAULT_TRACKING_URI = f"sqlite:///{DEFAULT_STORE / 'mlflow.db'}"
RUN_ID = re.compile(r"[0-9a-f]{32}")


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri`` when given, else $MLFLOW_TRACKING_URI, else the project-local SQLite store (never created here)."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def is_complete(summary: dict) -> bool:
    """A finished trial: it has ratios and a score, and was not stopped early."""
    return bool(summary.get("ratios")) and summary.get("score") is not None and not summary.get("stopped_early")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LadaError(f"could not read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise LadaError(f"{path} does not hold a summary (a JSON object)")
    return data


def _folder_summary(folder: Path) -> dict | None:
    if (folder / "summary.json").is_file():
        return _read_json(folder / "summary.json")
    if (folder / "ladasearch.json").is_file():
        summary = _read_json(folder / "ladasearch.json").get("summary") or None
        return summary if isinstance(summary, dict) else None
    return None


def _from_folder(folder: Path) -> list[dict]:
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
    return [{**s, "source": {"kind": "folder", "label": f.name, "path": str(f)}} for f, s in found]


def _target(text: str) -> float | None:
    """A target tag ('5x', '5.0') as a number; None when it is not one."""
    from ..compress.budget import parse_target

    try:
        return parse_target(text)
    except LadaError:
        return None


def _check_store(uri: str) -> None:
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise LadaError(f"no MLflow store at {db} (tracking URI {uri}); pass --tracking-uri or set "
                            f"MLFLOW_TRACKING_URI")
    elif uri.startswith("file:") or "://" not in uri:
        path = Path(uri.removeprefix("file://").removeprefix("file:"))
        if not path.is_dir():
            raise LadaError(f"no MLflow store at {path} (tracking URI {uri})")


def mlflow_client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    _check_store(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


def _all_runs(client, experiment_ids: list[str], filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def find_parent(client, source: str):
    """The parent run of a search given by run id or name, or None."""
    from mlflow.exceptions import MlflowException

    if RUN_ID.fullmatch(source):
        try:
            run = client.get_run(source)
        except MlflowException:
            run = None
        if run is not None:
            role = run.data.tags.get(ROLE)
            if role != "search":
                raise LadaError(f"MLflow run {source} is not a search (tag {ROLE}={role!r}); give the parent "
                                f"run of a search or its name")
            return run
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return None
    parents = [r for r in _all_runs(client, experiments, f"tags.`{ROLE}` = 'search'")
               if r.data.tags.get(SEARCH) == source]
    return max(parents, key=lambda r: r.info.start_time or 0) if parents else None


@contextlib.contextmanager
def _no_progress_bars():
    """MLflow draws a progress bar per downloaded artifact on stderr; not for one small JSON file each."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    old = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _from_mlflow(source: str, tracking_uri: str, include_incomplete: bool) -> list[dict]:
    client = mlflow_client(tracking_uri)
    parent = find_parent(client, source)
    if parent is None:
        raise LadaError(f"{source!r} is neither a folder with summary.json nor an MLflow search "
                        f"(no parent run with that id or {SEARCH} name in {tracking_uri})")
    parent_id = parent.info.run_id
    name = parent.data.tags.get(SEARCH, parent.info.run_name or parent_id)
    children = [r for r in _all_runs(client, [parent.info.experiment_id], f"tags.`{PARENT}` = '{parent_id}'")
                if r.data.tags.get(ROLE) == "trial" and r.info.status == "FINISHED"]
    summaries = []
    with tempfile.TemporaryDirectory(prefix="ladasearch-summaries-") as scratch, _no_progress_bars():
        for run in sorted(children, key=lambda r: r.info.start_time or 0):
            try:
                local = client.download_artifacts(run.info.run_id, "summary.json",
                                                  os.path.join(scratch, run.info.run_id))
            except Exception:  # noqa: BLE001 - a finished trial without its summary is skipped
                continue
            summary = _read_json(Path(local))
            for key in ("task", "target"):  # the parent's tags fill what an older summary lacks
                if summary.get(key) is None and parent.data.tags.get(f"ladasearch.{key}") is not None:
                    value = parent.data.tags[f"ladasearch.{key}"]
                    summary[key] = _target(value) if key == "target" else value
            summary["source"] = {"kind": "mlflow", "label": name, "search": name, "tracking_uri": tracking_uri,
                                 "parent_run_id": parent_id, "run_id": run.info.run_id,
                                 "run_name": run.info.run_name, "outcome": run.data.tags.get("ladasearch.outcome")}
            summaries.append(summary)
    if not include_incomplete:
        summaries = [s for s in summaries if is_complete(s)]
    return summaries


def load_summaries(source: str | Path, tracking_uri: str | None = None, *,
                   include_incomplete: bool = False) -> list[dict]:
    """Trial summaries of one SOURCE (see the module docstring), each with a ``source`` dict added."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        summaries = _from_folder(path)
        return summaries if include_incomplete else [s for s in summaries if is_complete(s)]
    if path.exists():
        raise LadaError(f"{text!r} is a file; give a folder with summary.json, or an MLflow search name or run id")
    if "/" in text or "\\" in text or text.startswith("."):
        raise LadaError(f"{text!r} is neither a folder with summary.json (no such folder) nor an MLflow search name")
    return _from_mlflow(text, resolve_tracking_uri(tracking_uri), include_incomplete)


def load_all(sources: list[str], tracking_uri: str | None = None, *, include_incomplete: bool = False) -> list[dict]:
    """``load_summaries`` of every source, concatenated; LadaError when they hold no complete trial."""
    summaries = []
    for source in sources:
        summaries.extend(load_summaries(source, tracking_uri, include_incomplete=include_incomplete))
    if not summaries:
        raise LadaError(f"no finished trial with a summary in {', '.join(map(str, sources))}")
    return summaries


def parent_runs(summaries: list[dict]) -> dict[str, str]:
    """``{parent run id: tracking uri}`` of the MLflow searches the summaries came from."""
    return {s["source"]["parent_run_id"]: s["source"]["tracking_uri"]
            for s in summaries if s.get("source", {}).get("kind") == "mlflow"}
