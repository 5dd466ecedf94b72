"""``Tracker``: the one door to MLflow, writing a search's runs and reading them back."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING
from unittest import mock

from ..errors import LadaError
from .store import Relocation, check_store, file_folder, relocate_artifacts
from .tags import (ATTEMPTS, ERROR, EXPERIMENT_KIND, PARENT, ROLE, RUN_ID, RUNS_VIEW, SEARCH, SUMMARY_FILE,
                   TRAINING_KIND, TRIAL_ID, BestTags, RunRecord, SearchTags, TrialTags, tag_values)

if TYPE_CHECKING:
    from ..summary import TrialSummary

DEFAULT_EXPERIMENT = "ladasearch"


def _no_progress_bars():
    """MLflow draws a progress bar per downloaded artifact on stderr; not for one small JSON file each."""
    return mock.patch.dict(os.environ, {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})


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
        check_store(tracking_uri)
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

    def _trial_child(self, parent_id: str, trial_id: str):
        """The MLflow run of ``trial_id`` in the search ``parent_id``, or None."""
        runs = self.client.search_runs(
            [self.experiment_id], f"tags.`{PARENT}` = '{parent_id}' and tags.`{TRIAL_ID}` = '{trial_id}'",
            max_results=1)
        return runs[0] if runs else None

    def trial_run(self, parent_id: str, trial_id: str, name: str, tags: SearchTags) -> tuple[str, bool]:
        """The child run of ``trial_id`` (reused when it exists, e.g. after a resume); True when new."""
        run = self._trial_child(parent_id, trial_id)
        if run is not None:  # a trial that ran before a resume: same run, one more attempt
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
        for k, v in tag_values(tags).items():
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

    def fail_search(self, parent_id: str, why: str) -> None:
        """A search that cannot go on: its parent and every trial run still RUNNING end FAILED with ``why``
        (a resume reopens them)."""
        running = self._all_runs([self.experiment_id], f"tags.`{PARENT}` = '{parent_id}' and "
                                                        f"attributes.status = 'RUNNING'")
        for run_id in [r.info.run_id for r in running] + [parent_id]:
            self.set_tags(run_id, {ERROR: why})
            self.finish(run_id, "FAILED")

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

    def trial_outcome(self, parent_id: str, trial_id: str) -> str | None:
        """The outcome tag of ``trial_id``'s run in the search ``parent_id`` (None: no run, or none recorded)."""
        run = self._trial_child(parent_id, trial_id)
        return TrialTags.of(run.data.tags).outcome if run is not None else None

    def find_trial_run(self, parent_id: str, trial_id: str) -> str | None:
        """The child run of ``trial_id`` in the search ``parent_id`` (None when it has none)."""
        run = self._trial_child(parent_id, trial_id)
        return run.info.run_id if run is not None else None

    def runs_views(self, base_url: str) -> list[tuple[str, str]]:
        """(experiment, URL) of the runs table of each experiment of training runs in the store.  MLflow 3's UI opens
        an experiment on its GenAI overview whatever the experiment's tags say; the URL's workflow type decides."""
        return [(e.name, f"{base_url}/#/experiments/{e.experiment_id}?{RUNS_VIEW}")
                for e in self.client.search_experiments() if e.tags.get(EXPERIMENT_KIND) == TRAINING_KIND]

    def missing_artifact_roots(self) -> list[tuple[str, str]]:
        """(experiment, folder) of each experiment with runs whose local artifact folder is missing: a copied or
        moved store (MLflow records absolute artifact locations)."""
        exps = [e for e in self.client.search_experiments() if "://" not in (e.artifact_location or "://")
                or e.artifact_location.startswith("file:")]
        paths = [(e, file_folder(e.artifact_location) or Path(e.artifact_location)) for e in exps]
        return [(e.name, str(p)) for e, p in paths if not p.exists() and self.client.search_runs([e.experiment_id],
                                                                                                max_results=1)]

    def require_artifacts(self, run: RunRecord, source: str) -> None:
        """LadaError naming the folder when the artifacts of ``run``'s experiment are not where the store says (a
        store copied without its ``artifacts/`` folder): without this, every artifact would just seem absent."""
        experiment = self.client.get_experiment(run.experiment_id)
        folder = file_folder(experiment.artifact_location)
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
