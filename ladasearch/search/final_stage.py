"""The search's last stage: its best trial (on validation) distilled to the final budget, in the driver.

The trials screen configurations on short runs; the model a user ships gets the budget.  The chosen trial's
checkpoint is the start, the teacher the trials distilled from the source, the train rows up to what the
budget reads (beyond the search's ``--max-train`` subset: distillation needs only the teacher's outputs),
and the validation rows the judge (``ladasearch.final``).  State lives in ``<storage>/<name>/final/``, so
``ladasearch resume`` continues a killed final distillation where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import FinalBudget
from ..train.features import Features
from ..jobs.final import FinalResult, distill_final
from ..jobs.pipeline import prepare
from ..summary import TrialSummary
from .settings import SearchSettings
from .worker import TrialPayload

if TYPE_CHECKING:
    from .results import TrialRow

FOLDER = "final"


def final_train_rows(settings: SearchSettings, train: Features, log: Callable[[str], None],
                     saved_steps: int = 0) -> Features:
    """The train rows of the final budget: the search's own when they suffice, else a larger draw of the same file
    (the validation rows are held out before any subset is drawn, so they stay out of it)."""
    data_cfg, budget = settings.data, settings.final
    needed = budget.rows_needed(settings.train.batch_size, saved_steps)
    if data_cfg.max_train is None or (needed is not None and needed <= len(train)):
        return train
    prepared = prepare(replace(data_cfg, max_train=needed), settings.model, settings.teacher_path)
    log(f"final distillation: {len(prepared.train):,} train rows (the trials used {len(train):,})")
    return prepared.train


@dataclass(frozen=True)
class FinalStage:
    """What ``results.finish`` calls with the best trial: its checkpoint and summary in, the final model out."""

    settings: SearchSettings
    payload: TrialPayload
    device: object
    log: Callable[[str], None] = print

    @property
    def budget(self) -> FinalBudget:
        return self.settings.final

    def saved_steps(self, rows: Sequence[TrialRow]) -> int:
        """Trial steps the scheduler's early stops left unspent: each stopped trial's full length (its own training
        knobs) less the steps it trained.  Failed trials spent what they ran, and a trial's result says no more."""
        payload, saved = self.payload, 0
        for row in rows:
            if row.status == "stopped_early" and row.steps is not None:
                saved += max(payload.space.train_config(payload.train_cfg, row.config).total_steps - row.steps, 0)
        return saved

    def __call__(self, checkpoint: Path, summary: TrialSummary, rows: Sequence[TrialRow] = ()) -> FinalResult:
        """``rows``: every trial of the search (what the budget reclaims is read from them)."""
        payload = self.payload
        train_cfg = payload.space.train_config(payload.train_cfg, summary.config)  # the trial's own training knobs
        saved = self.saved_steps(rows) if self.budget.reclaim else 0
        train = final_train_rows(self.settings, payload.train, self.log, saved)
        return distill_final(checkpoint, summary, payload.teacher(), train, payload.val, payload.task, train_cfg,
                             self.budget, self.settings.search.folder / FOLDER, self.device, self.log, saved)
