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


from .server import check_reader_server, check_server, no_retries, store_timeout  # noqa: F401
from .store import DEFAULT_STORE, Relocation, relocate_artifacts, resolve_tracking_uri  # noqa: F401
from .tags import (  # noqa: F401
    ATTEMPTS, BEST, BEST_TRIAL, CHOSEN, ERROR, EXPERIMENT_KIND, OUTCOME, PARENT, ROLE, RUN_ID, RUNS_VIEW, SEARCH,
    SUMMARY_FILE, TRAINING_KIND, TRIAL_ID, BestTags, RunRecord, SearchTags, TrialTags,
)
from .tracker import DEFAULT_EXPERIMENT, Tracker  # noqa: F401
