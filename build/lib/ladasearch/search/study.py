"""The Optuna study of a search, kept in a journal file in the search's folder, and the searcher that feeds it.

    <storage>/<name>/optuna_study.log      open it with `optuna-dashboard <that file>`

``StudySearch`` is Ray Tune's ``OptunaSearch`` with what a fair search needs:

- a trial is told to Optuna with its ``score_at_target`` (the validation score at the target size); a trial
  stopped before the target has none and is told PRUNED, so the sampler never models the score of a larger,
  intermediate-size model as if it were a final one (and a failed trial is FAIL, whatever it reported);
- every round's validation score is an intermediate value (step = round): how far a pruned trial got.

The journal outlives the process, so ``ladasearch resume`` continues the same study, its enqueued warm-start
trials included.  A trial the journal shows running but the restored searcher does not know (asked after
the last searcher checkpoint, before the kill) is failed and, when it was an enqueued point, enqueued again:
a kill never loses a warm start.
"""

from __future__ import annotations

import math
from pathlib import Path

from ray.tune.search.optuna import OptunaSearch

STUDY_FILE = "optuna_study.log"
OBJECTIVE = "score_at_target"


def study_file(folder: str | Path) -> Path:
    return Path(folder) / STUDY_FILE


def journal_storage(path: str | Path):
    """An Optuna journal storage in the file ``path`` (created with its folder)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class StudySearch(OptunaSearch):
    """OptunaSearch telling Optuna only scores at the target size (see the module docstring)."""

    def on_trial_result(self, trial_id: str, result: dict):
        if isinstance(self.metric, list) or trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return  # Optuna keeps no intermediate values for several objectives
        score, step = result.get("score"), result.get("round")
        reported = self.__dict__.setdefault("_reported_steps", {}).setdefault(trial_id, set())
        if _number(score) and isinstance(step, int) and step not in reported:  # a re-run trial repeats rounds
            self._ot_trials[trial_id].report(float(score), step)
            reported.add(step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        if error or not result or not all(_number(result.get(m)) for m in metrics):
            result = None  # FAIL when it errored, else PRUNED: it never reached the target size
        super().on_trial_complete(trial_id, result, error)

    def restore(self, checkpoint_path: str):
        super().restore(checkpoint_path)
        self.requeue_orphans()

    def requeue_orphans(self) -> list[dict]:
        """Fail the study's running trials no Tune trial owns; enqueue again those that were enqueued points."""
        from optuna.trial import TrialState

        owned = {t.number for t in self._ot_trials.values()}
        again = []
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen.number in owned:
                continue
            self._ot_study.tell(frozen.number, state=TrialState.FAIL)
            fixed = frozen.system_attrs.get("fixed_params")
            if fixed:
                self._ot_study.enqueue_trial(dict(fixed), skip_if_exists=False)
                again.append(dict(fixed))
        return again


def make_searcher(space, metric, mode, sampler, points: list[dict], folder: Path, name: str) -> StudySearch:
    """The searcher of a new search: its study in ``folder``'s journal, ``points`` enqueued first."""
    return StudySearch(space=space, metric=metric, mode=mode, sampler=sampler, points_to_evaluate=points or None,
                       study_name=name, storage=journal_storage(study_file(folder)))
