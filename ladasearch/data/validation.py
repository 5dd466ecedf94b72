"""The validation split: rows held out of train on which every choice of a job is made.

ASHA's stopping, the sampler's model and the best trial are all decided on these rows; the dev split
is scored only for the chosen student(s), so the dev score reported for it carries no selection bias.

The rows are carved from the task's train file BEFORE a ``--max-train`` subset is drawn (so
``--max-train`` still counts training rows and the teacher and students never see a validation row),
stratified by label (by class; by label decile for regression), with the job's seed.  ``size`` is a
fraction of the train file (capped at ``VAL_CAP`` rows) or a row count; ``--val-file`` gives the rows
instead (a TSV in the task's train layout), and then train is used whole.

Per task (``TaskSpec.val_rule``): "rows" carves train rows as they are, which resemble dev rows for every GLUE
task but SST-2.  SST-2's train file holds every phrase of its sentences' parse trees (9 words on average) while
dev holds whole sentences (20 words), so rows carved at random are mostly fragments, easier than dev, and
their sentences' other phrases stay in train.  "sentences" carves whole sentences (rows no longer row contains)
and drops from train every row inside a carved sentence, so validation is scored on unseen sentences, like dev.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import LadaError
from .files import file_identity
from .local import read_tsv
from .split import Split
from .tasks import VAL_RULES, TaskSpec

DEFAULT_VAL_SIZE = 0.1
VAL_CAP = 1000           # rows a fraction may carve: a dev-sized split; a larger one only slows every round
REGRESSION_BINS = 10


def check_val_size(value) -> float | int:
    """A fraction in (0, 0.5] or a row count >= 1 (LadaError naming the value otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise LadaError(f"val_size {value!r} is invalid; allowed: a fraction in (0, 0.5] or a row count >= 1")
    if isinstance(value, float) and value < 1:
        if not 0 < value <= 0.5:
            raise LadaError(f"val_size {value!r} is invalid; a fraction must be in (0, 0.5]")
        return value
    if value != int(value) or value < 1:
        raise LadaError(f"val_size {value!r} is invalid; allowed: a fraction in (0, 0.5] or a row count >= 1")
    return int(value)


def val_rows(n_train: int, size: float | int) -> int:
    """How many of ``n_train`` rows become validation rows (LadaError when too few would stay for training)."""
    size = check_val_size(size)
    rows = min(VAL_CAP, max(1, round(n_train * size))) if isinstance(size, float) else size
    if rows > n_train // 2:
        raise LadaError(f"val_size {size!r} asks for {rows} validation rows of a {n_train}-row train file; at most "
                        f"half of it ({n_train // 2}) may be held out")
    return rows


def _strata(labels: Sequence[float | int], regression: bool) -> list[int]:
    if not regression:
        return [int(v) for v in labels]
    order = sorted(range(len(labels)), key=lambda i: labels[i])
    bins = [0] * len(labels)
    for rank, i in enumerate(order):
        bins[i] = rank * REGRESSION_BINS // len(labels)
    return bins


def stratified_pick(labels: Sequence[float | int], k: int, seed: int, regression: bool = False) -> list[int]:
    """``k`` row indices with each stratum's share of the rows (largest remainders), seeded, sorted."""
    groups: dict[int, list[int]] = {}
    for i, stratum in enumerate(_strata(labels, regression)):
        groups.setdefault(stratum, []).append(i)
    n = len(labels)
    exact = {s: k * len(rows) / n for s, rows in groups.items()}
    quota = {s: math.floor(q) for s, q in exact.items()}
    for s in sorted(groups, key=lambda s: (quota[s] - exact[s], s))[:k - sum(quota.values())]:
        quota[s] += 1
    rng = random.Random(seed)
    picked: list[int] = []
    for s in sorted(groups):
        picked.extend(rng.sample(groups[s], quota[s]))
    return sorted(picked)


@dataclass(frozen=True)
class Holdout:
    """Train without the validation rows, the validation rows, where they came from and a cache identity."""

    train: Split
    val: Split
    source: str
    identity: tuple


def normalized_words(text: str) -> str:
    """A row as space-padded words, so that containment is checked at word boundaries."""
    return " " + " ".join(text.lower().split()) + " "


class _WordIndex:
    """Rows by word and word pair, to find the rows that contain a text among few candidates: those holding its
    rarest word or pair (SST-2's 67k rows: 2-4 s for all of them on this CPU)."""

    def __init__(self, texts: Sequence[str]):
        self.texts = texts
        self.rows: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            for key in self._keys(text):
                self.rows.setdefault(key, []).append(i)

    @staticmethod
    def _keys(text: str) -> set[str]:
        words = text.split()
        return set(words) | {f"{a} {b}" for a, b in zip(words, words[1:])}

    def containing(self, text: str) -> list[int]:
        keys = self._keys(text)
        if not keys:
            return []
        rarest = min(keys, key=lambda k: len(self.rows.get(k, ())))
        return [j for j in self.rows.get(rarest, ()) if text in self.texts[j]]


def sentence_rows(texts: Sequence[str]) -> list[int]:
    """Indices of the rows no longer row contains (SST-2: its whole sentences, not their phrases)."""
    padded = [normalized_words(t) for t in texts]
    index = _WordIndex(padded)
    return [i for i, text in enumerate(padded)
            if not any(len(padded[j]) > len(text) for j in index.containing(text))]


def _carve_sentences(train: Split, task: TaskSpec, k: int, seed: int) -> tuple[list[int], set[int]]:
    """(``k`` sentence rows, stratified and seeded; every train row inside one of them) for the "sentences" rule."""
    candidates = sentence_rows(train.text_a)
    if k > len(candidates) // 2:
        raise LadaError(f"task {task.name} carves validation rows from whole sentences, and its train file has "
                        f"{len(candidates)}; {k} validation rows would take over half of them: give a smaller "
                        f"--val-size or a --val-file")
    picked = sorted(candidates[i] for i in stratified_pick([train.labels[c] for c in candidates], k, seed))
    held = _WordIndex([normalized_words(train.text_a[i]) for i in picked])
    inside = {i for i, text in enumerate(train.text_a) if held.containing(normalized_words(text))}
    return picked, inside | set(picked)


def hold_out(train: Split, task: TaskSpec, size: float | int | None, seed: int,
             val_file: str | os.PathLike | None = None, rule: str | None = None) -> Holdout:
    """The validation split of ``train``: read from ``val_file``, else ``size`` rows carved (stratified, seeded)
    by ``rule`` (one of ``VAL_RULES``; None: the task's own)."""
    rule = rule or task.val_rule
    if rule not in VAL_RULES:
        raise LadaError(f"validation rule {rule!r} is not one of {', '.join(VAL_RULES)}")
    if val_file is not None:

        path = Path(val_file).expanduser()
        if path.is_dir():
            raise LadaError(f"validation file {str(path)!r} is a folder; give a TSV file in the {task.name} train "
                            f"layout")
        if not path.is_file():
            raise LadaError(f"validation file {str(path)!r} does not exist; give a TSV in the {task.name} train layout")
        val = read_tsv(path, task)
        if not len(val):
            raise LadaError(f"validation file {str(path)!r} has no rows")
        return Holdout(train, val, f"file {path}", ("val-file",) + file_identity(path))
    k = val_rows(len(train), DEFAULT_VAL_SIZE if size is None else size)
    if rule == "sentences" and train.text_b is None:
        picked, held = _carve_sentences(train, task, k, seed)
        source = (f"{k} whole sentences carved from train (stratified, seed {seed}); the {len(held) - k} "
                  f"other train rows inside them dropped")
        identity = ("val-sentences", k, seed)
    else:
        picked = stratified_pick(train.labels, k, seed, task.is_regression)
        held, source, identity = set(picked), f"{k} rows carved from train (stratified, seed {seed})", ("val", k, seed)
    rest = train.select([i for i in range(len(train)) if i not in held])
    return Holdout(rest, train.select(picked), source, identity)
