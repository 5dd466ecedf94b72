"""The dev score of the chosen student(s), measured in the driver after every choice is made.

Trials are scored on validation rows only (ASHA, the sampler and the best trial decide on them); once
the search has picked its best trial (and, with latency as an objective, its Pareto front), each chosen
model is loaded from its checkpoint and scored once on the dev split.  That is equivalent to scoring it
at the end of its trial, but by construction no trial, scheduler or sampler can ever see a dev score.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data import TaskSpec, main_score
from ..train.evaluate import evaluate
from ..train.features import Features
from ..io import write_json_atomic
from ..serialize import META, load_compressed, read_meta
from ..summary import TrialSummary


def score_on_dev(folder: Path, summary: TrialSummary, dev: Features, task: TaskSpec, device="cpu",
                 batch_size: int = 64) -> TrialSummary:
    """``summary`` with the dev score of the model in ``folder``; the folder's saved summary gets it too."""
    model = load_compressed(folder, device=device)
    metrics = evaluate(model, dev, task, batch_size, device)
    scored = summary.with_(dev_score=main_score(task, metrics), dev_metrics=metrics)
    meta = read_meta(folder)
    meta["summary"] = scored.to_json()
    write_json_atomic(Path(folder) / META, meta, sort_keys=True)
    return scored


@dataclass(frozen=True)
class DevSet:
    """The dev split the chosen models are scored on, held by the driver (never put in a trial's payload)."""

    features: Features
    task: TaskSpec
    device: object = "cpu"

    def score(self, folder: Path, summary: TrialSummary) -> TrialSummary:
        return score_on_dev(folder, summary, self.features, self.task, self.device)
