"""The tag codec: what the MLflow runs' tags of a search mean, written and read through these records only."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

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
        return tag_values({"ladasearch.task": self.task, "ladasearch.model": self.model, "ladasearch.space": self.space,
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
        return tag_values({BEST_TRIAL: self.trial_id, f"{BEST}method": self.method, **numbers})

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


def tag_values(tags: dict) -> dict[str, str]:
    """Tag values as MLflow stores them (strings); a None value is no tag."""
    return {k: str(v) for k, v in tags.items() if v is not None}
