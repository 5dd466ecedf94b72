"""MLflow records of a search: one parent run per search, one nested child run per trial.

The one door to MLflow: the search writes through ``Tracker``, and the reports (``report.sources``,
``ladasearch report``) read through it too, so the layout below is known in this module alone.

Only the driver process writes (trials report to Ray Tune, a Tune callback logs), so the
default SQLite store never sees two writers.  Default store: ``sqlite:///mlruns/mlflow.db``
with artifacts under ``mlruns/``; ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` override it.

Layout (the experiment is tagged as one of training runs, so MLflow 3's UI opens on them):
    parent  tags ladasearch.role=search, ladasearch.search=<name>, ladasearch.task/target/model,
            ladasearch.best.* (the best trial's ratios, val_score, dev_score: what warm starts read)
            metrics val_score, dev_score of the best trial; artifacts best_model/, best_summary.json,
            trials.json, search_space.json, warm_starts.json, plots/*.png
    child   tags ladasearch.role=trial, ladasearch.trial_id=<tune id>, mlflow.parentRunId=<parent>,
            ladasearch.outcome, ladasearch.error (failed), ladasearch.attempts (re-run after a resume)
            params: sampled config, solved ratios, ranks, settings; metrics per round (step=round):
            val_score, score_at_target; dev_score only on the chosen trial(s); artifact summary.json
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from unittest import mock

from .errors import LadaError
from .tracking_server import check_reader_server

if TYPE_CHECKING:
    from .summary import TrialSummary

DEFAULT_STORE = Path("mlruns")
DEFAULT_EXPERIMENT = "ladasearch"
ROLE, SEARCH, TRIAL_ID = "ladasearch.role", "ladasearch.search", "ladasearch.trial_id"
OUTCOME, ERROR, ATTEMPTS = "ladasearch.outcome", "ladasearch.error", "ladasearch.attempts"
CHOSEN = "ladasearch.chosen"      # on a trial picked for the dev score: why
PARENT = "mlflow.parentRunId"
BEST = "ladasearch.best."   # parent tags of the best trial: embedding_ratio, svd_ratio, ..., val_score, dev_score
# MLflow 3's UI opens an experiment without this tag on its GenAI overview (traces, judges); ours holds training runs
EXPERIMENT_KIND, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
RUNS_VIEW = "workflowType=machine_learning"   # the UI's "Model training" switch, as a URL parameter
SUMMARY_FILE = "summary.json"
RUN_ID = re.compile(r"[0-9a-f]{32}")


def resolve_tracking_uri(uri: str | None = None, *, create: bool = True) -> str:
    """Explicit URI, else $MLFLOW_TRACKING_URI, else the project-local SQLite store ``mlruns/mlflow.db``.

    ``create``: make the store folder and check that it is writable (a search, the UI), so an unusable
    store fails before any work; readers pass False, which never writes anything.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    store = DEFAULT_STORE.resolve()
    if not create:
        return f"sqlite:///{store / 'mlflow.db'}"
    if store.exists() and not store.is_dir():
        raise LadaError(f"the MLflow store {store} exists and is not a folder; move it or pass --tracking-uri")
    try:
        store.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=store, prefix=".write-check-")
        probe.close()
    except OSError as exc:
        raise LadaError(f"the MLflow store folder {store} is not writable ({exc.strerror}); "
                        f"fix its permissions or pass --tracking-uri") from None
    return f"sqlite:///{store / 'mlflow.db'}"


def _check_store(uri: str) -> None:
    if uri.startswith(("http://", "https://")):
        check_reader_server(uri)
    elif uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise LadaError(f"no MLflow store at {db} (tracking URI {uri}); pass --tracking-uri or set "
                            f"MLFLOW_TRACKING_URI")
    elif uri.startswith("file:") or "://" not in uri:
        path = Path(uri.removeprefix("file://").removeprefix("file:"))
        if not path.is_dir():
            raise LadaError(f"no MLflow store at {path} (tracking URI {uri})")


# ---- the tag codec: what the runs' tags mean, written and read here only ------------------------------------

def _float(text: str | None) -> float | None:
    try:
        return float(text.rstrip("x")) if text not in (None, "", "None") else None
    except ValueError:
        return None


@dataclass(frozen=True)
class SearchTags:
    """A search's parent-run tags: which search, task, target, model and space (``ladasearch.<field>``)."""

    task: str | None = None
    target: float | None = None
    model: str | None = None
    space: str | None = None

    def to_tags(self) -> dict[str, str]:
        return _str({"ladasearch.task": self.task, "ladasearch.model": self.model, "ladasearch.space": self.space,
                     "ladasearch.target": f"{self.target:g}x" if self.target is not None else None})

    @classmethod
    def of(cls, tags: dict[str, str]) -> SearchTags:
        return cls(tags.get("ladasearch.task"), _float(tags.get("ladasearch.target")), tags.get("ladasearch.model"),
                   tags.get("ladasearch.space"))


BEST_TRIAL = "ladasearch.best_trial"


@dataclass(frozen=True)
class BestTags:
    """The best trial a search shipped, on its parent run (``ladasearch.best_trial`` and ``ladasearch.best.*``):
    what warm starts of later searches read."""

    trial_id: str | None
    method: str
    embedding_ratio: float
    svd_ratio: float
    weight_ratio: float
    structured_ratio: float = 1.0     # absent (an older parent): nothing removed
    svd_split: float | None = None
    val_score: float | None = None
    dev_score: float | None = None

    def to_tags(self) -> dict[str, str]:
        numbers = {f"{BEST}{k}": getattr(self, k) for k in ("embedding_ratio", "svd_ratio", "weight_ratio",
                                                            "svd_split", "structured_ratio", "val_score",
                                                            "dev_score")}
        return _str({BEST_TRIAL: self.trial_id, f"{BEST}method": self.method, **numbers})

    @classmethod
    def of(cls, tags: dict[str, str]) -> BestTags | None:
        """None when the run holds no readable best trial (none yet, or a parent written by hand)."""
        ratios = [_float(tags.get(f"{BEST}{k}")) for k in ("embedding_ratio", "svd_ratio", "weight_ratio")]
        if any(r is None for r in ratios):
            return None
        structured = _float(tags.get(f"{BEST}structured_ratio"))
        return cls(tags.get(BEST_TRIAL), tags.get(f"{BEST}method", "hybrid"), *ratios,
                   structured if structured is not None else 1.0, _float(tags.get(f"{BEST}svd_split")),
                   _float(tags.get(f"{BEST}val_score")), _float(tags.get(f"{BEST}dev_score")))


@dataclass(frozen=True)
class TrialTags:
    """A trial's child-run tags: its Tune id, its search's parent run, how it ended, why it failed, how often it
    ran (after resumes), why it was chosen."""

    trial_id: str | None
    parent: str | None
    outcome: str | None = None
    error: str | None = None
    attempts: int = 1
    chosen: str | None = None

    @classmethod
    def of(cls, tags: dict[str, str]) -> TrialTags:
        attempts = _float(tags.get(ATTEMPTS))
        return cls(tags.get(TRIAL_ID), tags.get(PARENT), tags.get(OUTCOME), tags.get(ERROR),
                   int(attempts) if attempts is not None else 1, tags.get(CHOSEN))


@dataclass(frozen=True)
class RunRecord:
    """What the reports need of one MLflow run: its identity, status, times, tags (typed through the codec
    above), metrics and params."""

    run_id: str
    name: str | None
    experiment_id: str
    status: str
    start_time: int
    tags: dict[str, str]
    end_time: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, run) -> RunRecord:
        return cls(run.info.run_id, run.info.run_name, run.info.experiment_id, run.info.status,
                   run.info.start_time or 0, dict(run.data.tags), run.info.end_time, dict(run.data.metrics),
                   dict(run.data.params))

    @property
    def search(self) -> str:
        """The search's name (a parent run): its tag, else the run's name or id."""
        return self.tags.get(SEARCH, self.name or self.run_id)

    @property
    def search_tags(self) -> SearchTags:
        return SearchTags.of(self.tags)

    @property
    def best(self) -> BestTags | None:
        return BestTags.of(self.tags)

    @property
    def trial(self) -> TrialTags:
        return TrialTags.of(self.tags)


def _no_progress_bars():
    """MLflow draws a progress bar per downloaded artifact on stderr; not for one small JSON file each."""
    return mock.patch.dict(os.environ, {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})


@dataclass(frozen=True)
class Relocation:
    """An experiment of a copied or moved store whose artifact root now points into the store's own folder."""

    experiment: str
    was: str
    now: str


def relocate_artifacts(db: Path) -> list[Relocation]:
    """Make a copied or moved SQLite store self-contained.

    MLflow records absolute artifact locations, so a copy would go on reading (and writing) the original's
    artifacts, and find nothing once the original is gone.  Our stores keep an experiment's artifacts in
    ``artifacts/<experiment>`` beside ``mlflow.db``; where that folder exists and is not the recorded one, the
    experiment's and its runs' locations are rewritten to it, so a copy reads its own.  An experiment with no
    such folder (made elsewhere, or copied without its artifacts) is left as it is.
    """
    import sqlite3
    from urllib.parse import unquote, urlparse

    if not db.is_file():
        return []
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
            if not con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='experiments'").fetchone():
                return []
            moves = []
            for exp_id, name, location in con.execute(
                    "SELECT experiment_id, name, artifact_location FROM experiments").fetchall():
                if not (location or "").startswith("file:"):
                    continue
                was = Path(unquote(urlparse(location).path))
                now = db.parent / "artifacts" / name
                if now.is_dir() and not (was.exists() and was.samefile(now)):
                    moves.append((exp_id, Relocation(name, str(was), str(now)), location, now.as_uri()))
            if not moves:
                return []
            with con:   # one transaction: a store is rewritten whole or not at all
                for exp_id, _, old, new in moves:
                    con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (new, exp_id))
                    con.execute("UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) WHERE experiment_id = ? "
                                "AND substr(artifact_uri, 1, ?) = ?", (new, len(old) + 1, exp_id, len(old), old))
    except sqlite3.Error as exc:
        raise LadaError(f"the MLflow store {db} was copied or moved and its artifact folders must be re-pointed to "
                        f"{db.parent / 'artifacts'}, but the store cannot be written ({exc}); make it writable") \
            from None
    return [m[1] for m in moves]


class Tracker:
    """A thin, picklable wrapper around ``MlflowClient`` (the client is made on first use)."""

    def __init__(self, tracking_uri: str, experiment: str = DEFAULT_EXPERIMENT):
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self._client = None
        self._experiment_id = None
        self.relocated: list[Relocation] = []   # artifact roots of a moved store, rewritten when it was opened

    @classmethod
    def existing(cls, tracking_uri: str, experiment: str = DEFAULT_EXPERIMENT) -> Tracker:
        """A tracker on a store that must exist already (LadaError naming it otherwise): reports never make one."""
        _check_store(tracking_uri)
        return cls(tracking_uri, experiment)

    def __getstate__(self):
        return {"tracking_uri": self.tracking_uri, "experiment": self.experiment, "_client": None,
                "_experiment_id": self._experiment_id, "relocated": []}

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            if self.tracking_uri.startswith("sqlite:///"):
                self.relocated = relocate_artifacts(Path(self.tracking_uri.removeprefix("sqlite:///")))
                if self.relocated:   # MLflow caches each run's artifact folder by run id, for the whole process
                    from mlflow.tracking._tracking_service import utils

                    utils._artifact_repos_cache.clear()
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is not None:
                self._experiment_id = found.experiment_id
                if EXPERIMENT_KIND not in found.tags:  # made by an older version
                    self.client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND, TRAINING_KIND)
            else:
                location = None
                if self.tracking_uri.startswith("sqlite:///") and Path(self.tracking_uri[10:]).parent.exists():
                    location = (Path(self.tracking_uri[10:]).parent / "artifacts" / self.experiment).as_uri()
                self._experiment_id = self.client.create_experiment(self.experiment, artifact_location=location,
                                                                    tags={EXPERIMENT_KIND: TRAINING_KIND})
        return self._experiment_id

    # ---- writing -----------------------------------------------------------------------
    def start_search(self, name: str, tags: SearchTags, params: dict) -> str:
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={ROLE: "search", SEARCH: name, **tags.to_tags()})
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def reopen(self, run_id: str) -> None:
        """Mark a run RUNNING again (a resumed search's parent)."""
        self.client.update_run(run_id, status="RUNNING")

    def trial_run(self, parent_id: str, trial_id: str, name: str, tags: SearchTags) -> tuple[str, bool]:
        """The child run of ``trial_id`` (reused when it exists, e.g. after a resume); True when new."""
        runs = self.client.search_runs(
            [self.experiment_id], f"tags.`{PARENT}` = '{parent_id}' and tags.`{TRIAL_ID}` = '{trial_id}'",
            max_results=1)
        if runs:  # a trial that ran before a resume: same run, one more attempt
            run = runs[0]
            attempts = TrialTags.of(run.data.tags).attempts + 1
            self.client.set_tag(run.info.run_id, ATTEMPTS, str(attempts))
            if run.info.status != "RUNNING":
                self.client.update_run(run.info.run_id, status="RUNNING")
            return run.info.run_id, False
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={ROLE: "trial", TRIAL_ID: trial_id, PARENT: parent_id, **tags.to_tags()})
        return run.info.run_id, True

    def log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(run_id).data.params
        new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        for start in range(0, len(new), 100):
            self.client.log_batch(run_id, params=new[start:start + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if batch:
            self.client.log_batch(run_id, metrics=batch)

    def set_tags(self, run_id: str, tags: dict) -> None:
        for k, v in _str(tags).items():
            self.client.set_tag(run_id, k, v)

    def mark_best(self, parent_id: str, best: BestTags) -> None:
        self.set_tags(parent_id, best.to_tags())

    def log_json(self, run_id: str, payload: dict | list, name: str) -> None:
        self.client.log_text(run_id, json.dumps(payload, indent=2, default=float), name)

    def log_summary(self, run_id: str, summary: TrialSummary, name: str = SUMMARY_FILE) -> None:
        self.log_json(run_id, summary.to_json(), name)

    def log_artifacts(self, run_id: str, folder: str | Path, path: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(folder), path)

    def log_artifact(self, run_id: str, file: str | Path, path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(file), path)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    # ---- reading (any experiment of the store) ------------------------------------------
    def _all_runs(self, experiment_ids: list[str], filter_string: str) -> list:
        runs, token = [], None
        while True:
            page = self.client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def find_search(self, source: str) -> RunRecord | None:
        """The parent run of a search given by run id or by name (the latest of that name), or None."""
        from mlflow.exceptions import MlflowException

        if RUN_ID.fullmatch(source):
            try:
                run = self.client.get_run(source)
            except MlflowException:
                run = None
            if run is not None:
                role = run.data.tags.get(ROLE)
                if role != "search":
                    raise LadaError(f"MLflow run {source} is not a search (tag {ROLE}={role!r}); give the parent "
                                    f"run of a search or its name")
                return RunRecord.of(run)
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        if not experiments:
            return None
        parents = [r for r in self._all_runs(experiments, f"tags.`{ROLE}` = 'search'")
                   if r.data.tags.get(SEARCH) == source]
        return RunRecord.of(max(parents, key=lambda r: r.info.start_time or 0)) if parents else None

    def past_searches(self, model: str, task: str) -> list[RunRecord]:
        """Parent runs of the store's searches of ``model`` on ``task``, newest first (warm starts read them)."""
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        runs = self._all_runs(experiments, f"tags.`{ROLE}` = 'search' and tags.`ladasearch.task` = '{task}'") \
            if experiments else []
        return sorted((RunRecord.of(r) for r in runs if r.data.tags.get("ladasearch.model") == model),
                      key=lambda r: r.start_time, reverse=True)

    def find_trial_run(self, parent_id: str, trial_id: str) -> str | None:
        """The child run of ``trial_id`` in the search ``parent_id`` (None when it has none)."""
        runs = self.client.search_runs(
            [self.experiment_id], f"tags.`{PARENT}` = '{parent_id}' and tags.`{TRIAL_ID}` = '{trial_id}'",
            max_results=1)
        return runs[0].info.run_id if runs else None

    def runs_views(self, base_url: str) -> list[tuple[str, str]]:
        """(experiment, URL) of the runs table of each experiment of training runs in the store.  MLflow 3's UI opens
        an experiment on its GenAI overview whatever the experiment's tags say; the URL's workflow type decides."""
        return [(e.name, f"{base_url}/#/experiments/{e.experiment_id}?{RUNS_VIEW}")
                for e in self.client.search_experiments() if e.tags.get(EXPERIMENT_KIND) == TRAINING_KIND]

    def missing_artifact_roots(self) -> list[tuple[str, str]]:
        """(experiment, folder) of each experiment with runs whose local artifact folder is missing: a copied or
        moved store (MLflow records absolute artifact locations)."""
        from urllib.parse import unquote, urlparse

        exps = [e for e in self.client.search_experiments() if "://" not in (e.artifact_location or "://")
                or e.artifact_location.startswith("file:")]
        paths = [(e, Path(unquote(urlparse(e.artifact_location).path))) for e in exps]
        return [(e.name, str(p)) for e, p in paths if not p.exists() and self.client.search_runs([e.experiment_id],
                                                                                                max_results=1)]

    def require_artifacts(self, run: RunRecord, source: str) -> None:
        """LadaError naming the folder when the artifacts of ``run``'s experiment are not where the store says (a
        store copied without its ``artifacts/`` folder): without this, every artifact would just seem absent."""
        from urllib.parse import unquote, urlparse

        experiment = self.client.get_experiment(run.experiment_id)
        location = experiment.artifact_location or ""
        folder = Path(unquote(urlparse(location).path)) if location.startswith("file:") else None
        if folder is not None and not folder.exists():
            raise LadaError(f"the artifacts of search {source!r} (models, summaries, plots) were written to {folder}, "
                            f"which is not there, and the store {self.tracking_uri} has no "
                            f"artifacts/{experiment.name} folder beside it: copy the store's artifacts/ folder with it")

    def searches(self) -> list[RunRecord]:
        """The parent runs of this tracker's experiment, oldest first (none when the store has no such experiment:
        a reader creates nothing)."""
        found = self.client.get_experiment_by_name(self.experiment)
        runs = self._all_runs([found.experiment_id], f"tags.`{ROLE}` = 'search'") if found is not None else []
        return sorted((RunRecord.of(r) for r in runs), key=lambda r: r.start_time)

    def trial_runs(self, parent: RunRecord) -> list[RunRecord]:
        """The trial runs of a search, oldest first."""
        children = self._all_runs([parent.experiment_id], f"tags.`{PARENT}` = '{parent.run_id}'")
        return sorted((RunRecord.of(r) for r in children if r.data.tags.get(ROLE) == "trial"),
                      key=lambda r: r.start_time)

    def download(self, run_id: str, artifact: str, dest: str | Path) -> str:
        """Artifact ``artifact`` of ``run_id`` copied under ``dest``: its local path (MLflow's errors pass through)."""
        with _no_progress_bars():
            return self.client.download_artifacts(run_id, artifact, str(dest))

    def read_summary(self, run_id: str, name: str = SUMMARY_FILE) -> dict | None:
        """The run's ``name`` (a JSON object, ``summary.json`` by default) as logged; None when it has none."""
        with tempfile.TemporaryDirectory(prefix="ladasearch-summary-") as scratch, _no_progress_bars():
            try:
                local = self.client.download_artifacts(run_id, name, scratch)
            except Exception:  # noqa: BLE001 - MLflow raises several kinds for a missing artifact
                return None
            try:
                data = json.loads(Path(local).read_text())
            except (OSError, ValueError) as exc:
                raise LadaError(f"{name} of MLflow run {run_id} is not readable JSON: {exc}") from None
        if not isinstance(data, dict):
            raise LadaError(f"{name} of MLflow run {run_id} does not hold a JSON object")
        return data


def _str(tags: dict) -> dict[str, str]:
    return {k: str(v) for k, v in tags.items() if v is not None}
