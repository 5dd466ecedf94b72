"""MLflow records of a search: one parent run per search, one nested child run per trial.

Only the driver process writes (trials report to Ray Tune, a Tune callback logs), so the
default SQLite store never sees two writers.  Default store: ``sqlite:///mlruns/mlflow.db``
with artifacts under ``mlruns/``; ``--tracking-uri`` or ``MLFLOW_TRACKING_URI`` override it.

Layout (read back by ``ladasearch export``/``report``):
    parent  tags ladasearch.role=search, ladasearch.search=<name>, ladasearch.task/target/model
    child   tags ladasearch.role=trial, ladasearch.trial_id=<tune id>, mlflow.parentRunId=<parent>
            params: sampled config, solved ratios, ranks, settings; metrics per round (step=round);
            artifact summary.json
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .errors import LadaError

DEFAULT_STORE = Path("mlruns")
DEFAULT_EXPERIMENT = "ladasearch"
ROLE, SEARCH, TRIAL_ID = "ladasearch.role", "ladasearch.search", "ladasearch.trial_id"
PARENT = "mlflow.parentRunId"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Explicit URI, else $MLFLOW_TRACKING_URI, else the project-local SQLite store (created, checked writable)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    store = DEFAULT_STORE.resolve()
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


class Tracker:
    """A thin, picklable wrapper around ``MlflowClient`` (the client is made on first use)."""

    def __init__(self, tracking_uri: str, experiment: str = DEFAULT_EXPERIMENT):
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self._client = None
        self._experiment_id = None

    def __getstate__(self):
        return {"tracking_uri": self.tracking_uri, "experiment": self.experiment, "_client": None,
                "_experiment_id": self._experiment_id}

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is not None:
                self._experiment_id = found.experiment_id
            else:
                location = None
                if self.tracking_uri.startswith("sqlite:///") and Path(self.tracking_uri[10:]).parent.exists():
                    location = (Path(self.tracking_uri[10:]).parent / "artifacts" / self.experiment).as_uri()
                self._experiment_id = self.client.create_experiment(self.experiment, artifact_location=location)
        return self._experiment_id

    # ---- runs --------------------------------------------------------------------------
    def start_search(self, name: str, tags: dict, params: dict) -> str:
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={ROLE: "search", SEARCH: name, **_str(tags)})
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def find_search(self, name: str) -> str | None:
        runs = self.client.search_runs([self.experiment_id],
                                       f"tags.`{ROLE}` = 'search' and tags.`{SEARCH}` = '{name}'",
                                       order_by=["attributes.start_time DESC"], max_results=1)
        return runs[0].info.run_id if runs else None

    def trial_run(self, parent_id: str, trial_id: str, name: str, tags: dict) -> tuple[str, bool]:
        """The child run of ``trial_id`` (reused when it exists, e.g. after a resume); True when new."""
        runs = self.client.search_runs(
            [self.experiment_id], f"tags.`{PARENT}` = '{parent_id}' and tags.`{TRIAL_ID}` = '{trial_id}'",
            max_results=1)
        if runs:  # a trial that ran before a resume: same run, one more attempt
            run = runs[0]
            attempts = int(run.data.tags.get("ladasearch.attempts", "1")) + 1
            self.client.set_tag(run.info.run_id, "ladasearch.attempts", str(attempts))
            if run.info.status != "RUNNING":
                self.client.update_run(run.info.run_id, status="RUNNING")
            return run.info.run_id, False
        run = self.client.create_run(self.experiment_id, run_name=name,
                                     tags={ROLE: "trial", TRIAL_ID: trial_id, PARENT: parent_id, **_str(tags)})
        return run.info.run_id, True

    def trial_runs(self, parent_id: str) -> list:
        return self.client.search_runs([self.experiment_id], f"tags.`{PARENT}` = '{parent_id}'",
                                       max_results=10000)

    def log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(run_id).data.params
        new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        for start in range(0, len(new), 100):
            self.client.log_batch(run_id, params=new[start:start + 100])

    def log_metrics(self, run_id: str, metrics: dict, step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if batch:
            self.client.log_batch(run_id, metrics=batch)

    def set_tags(self, run_id: str, tags: dict) -> None:
        for k, v in _str(tags).items():
            self.client.set_tag(run_id, k, v)

    def log_json(self, run_id: str, payload: dict, name: str) -> None:
        self.client.log_text(run_id, json.dumps(payload, indent=2, default=float), name)

    def log_artifacts(self, run_id: str, folder: str | Path, path: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(folder), path)

    def log_artifact(self, run_id: str, file: str | Path, path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(file), path)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)


def _str(tags: dict) -> dict[str, str]:
    return {k: str(v) for k, v in tags.items() if v is not None}
