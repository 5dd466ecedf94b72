"""Dev score of an exported ONNX graph on the task's dev split, read through ladasearch's data loading."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np

from ..config import DataConfig
from ..data import TaskSpec, compute_metrics, load_task, main_score
from ..train.features import Features, encode, eval_batches
from .onnx_export import run_onnx


@dataclass(frozen=True)
class DevSet:
    """Tokenized dev rows of a task and where they came from."""

    task: TaskSpec
    features: Features
    source: str

    @property
    def rows(self) -> int:
        return len(self.features)


def load_dev(data: DataConfig, tokenizer) -> DevSet:
    """The dev split ``data`` names (subset ``max_dev``), tokenized with the exported tokenizer.  A task given by
    files or a dataset whose class names were recorded reads its dev rows alone (train only told the names)."""
    files, dataset = data.files(), data.dataset_task()
    if files is not None and files.label_names is not None:
        files = replace(files, train_file=None)
    if dataset is not None and dataset.label_names is not None:
        dataset = replace(dataset, train_split=None, val_split=None)
    loaded = load_task(data.task, data.data_dir, dev_split=data.dev_split, max_dev=data.max_dev, seed=data.seed,
                       files=files, dataset=dataset)
    task = loaded.task
    # encoding sets the fast tokenizer's padding and truncation state, which a later save would write out
    features = encode(loaded.dev, copy.deepcopy(tokenizer), data.max_length, task.is_regression)
    return DevSet(task, features, loaded.source)


def onnx_score(session, dev: DevSet, batch_size: int = 64) -> float:
    """The task's main metric of ``session``'s logits on ``dev`` (batches trimmed to their longest row)."""

    logits = []
    for batch in eval_batches(dev.features, batch_size):
        batch.pop("labels")
        logits.append(run_onnx(session, batch))
    metrics = compute_metrics(dev.task, np.concatenate(logits), dev.features.labels.numpy())
    return main_score(dev.task, metrics)
