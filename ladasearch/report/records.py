"""A trial summary as a report sees it: the typed summary and where it was read from."""

from __future__ import annotations

from dataclasses import dataclass

from ..summary import TrialSummary


@dataclass(frozen=True)
class Source:
    """Where a summary was read: a compress folder (``path``) or a trial of an MLflow search (the run ids).

    ``label`` names the group in tables and plots: the folder name or the search name.
    """

    kind: str                          # "folder" or "mlflow"
    label: str
    path: str | None = None
    search: str | None = None
    tracking_uri: str | None = None
    parent_run_id: str | None = None
    run_id: str | None = None
    run_name: str | None = None
    outcome: str | None = None


@dataclass(frozen=True)
class LoadedTrial:
    """One trial's summary, with its source when it came from a folder or a search (None: given directly)."""

    summary: TrialSummary
    source: Source | None = None

    @property
    def label(self) -> str | None:
        return self.source.label if self.source is not None else None

    @property
    def complete(self) -> bool:
        """A trial with a score at its size: completed, or stopped by the scheduler after it reached its target
        (a search trial's outcome, the one rule of ``summary.trial_outcome``)."""
        at_target = self.summary.outcome == "stopped_at_target"
        return (self.summary.completed or at_target) and self.summary.score is not None
