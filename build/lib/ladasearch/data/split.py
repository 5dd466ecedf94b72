"""Rows of a task's splits, and the train/dev pair a job uses."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import LadaError
from .tasks import TaskSpec


@dataclass(frozen=True)
class Split:
    """Rows of one split; ``text_b`` is None for single-sentence tasks."""

    text_a: tuple[str, ...]
    text_b: tuple[str | None, ...] | None
    labels: tuple[float | int, ...]

    def __post_init__(self) -> None:
        n = len(self.text_a)
        if len(self.labels) != n or (self.text_b is not None and len(self.text_b) != n):
            raise ValueError("Split columns have different lengths")

    def __len__(self) -> int:
        return len(self.text_a)

    def select(self, indices: Sequence[int]) -> Split:
        """Rows at ``indices``, in that order."""
        return Split(
            text_a=tuple(self.text_a[i] for i in indices),
            text_b=None if self.text_b is None else tuple(self.text_b[i] for i in indices),
            labels=tuple(self.labels[i] for i in indices),
        )

    def subset(self, n: int | None, seed: int) -> Split:
        """Deterministic random sample of ``n`` rows in file order (all rows if None or n >= len)."""
        if n is None or n >= len(self):
            return self
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise LadaError(f"subset size {n!r} is invalid; allowed: a positive integer or None")
        picked = sorted(random.Random(seed).sample(range(len(self)), n))
        return self.select(picked)


@dataclass(frozen=True)
class TaskData:
    """Train, validation and dev data of one task, with where it came from and cache keys.

    ``fingerprint`` identifies both splits; ``train_fingerprint`` the train rows alone (what a teacher's
    fine-tuning depends on, so a different dev subset reuses the same cached teacher).
    """

    task: TaskSpec
    train: Split
    dev: Split
    source: str
    fingerprint: str
    train_fingerprint: str
    val: Split | None = None          # held out of train (``validation.hold_out``); None: no validation split
    val_source: str | None = None
