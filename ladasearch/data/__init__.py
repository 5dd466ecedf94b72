"""Task data: one record per GLUE task (``tasks``), loading from a local folder (``local``) or the
Hugging Face hub (``hub``), or a task given by the user's files (``files``) or by a dataset id (``dataset``), the
validation split held out of train (``validation``), and the tasks' metrics (``metrics``).

Local data uses the GLUE distribution layout (``<root>/<TASK>/train.tsv`` ...);
without a local folder the data comes from ``nyu-mll/glue`` on the hub.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from ..errors import LadaError
from .dataset import (
    DEFAULT_DEV_SPLIT,
    DEFAULT_TRAIN_SPLIT,
    DatasetTask,
    dataset_folder,
    dataset_task_name,
    load_dataset_task,
)
from .columns import check_metric
from .files import FORMATS, FileTask, load_files, task_name
from .hub import HUB_DATASET, load_hub
from .local import ENV_DATA_DIR, HOLDOUT_FRACTION, find_task_dir, load_local, read_tsv, resolve_data_dir
from .metrics import METRICS, compute_metrics, main_score
from .split import Split, TaskData
from .tasks import TASKS, TaskSpec, TsvLayout, get_task
from .validation import DEFAULT_VAL_SIZE, VAL_CAP, Holdout, check_val_size, hold_out

__all__ = [
    "DEFAULT_DEV_SPLIT", "DEFAULT_TRAIN_SPLIT", "DEFAULT_VAL_SIZE", "ENV_DATA_DIR", "FORMATS", "DatasetTask",
    "FileTask", "HOLDOUT_FRACTION", "HUB_DATASET", "METRICS", "TASKS", "VAL_CAP", "Split", "TaskData", "TaskSpec",
    "TsvLayout", "check_metric", "check_val_size", "compute_metrics", "dataset_folder", "dataset_task_name",
    "find_task_dir", "get_task", "hold_out", "load_task", "main_score", "read_tsv", "resolve_data_dir", "task_name",
]

_FINGERPRINT_VERSION = "data-v1"


def _fingerprint(*parts: Any) -> str:
    text = "\n".join(repr(p) for p in (_FINGERPRINT_VERSION,) + parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _check_split(task: TaskSpec, dev_split: str | None) -> str:
    split = task.dev_splits[0] if dev_split is None else str(dev_split).strip().lower()
    if split not in task.dev_splits:
        raise LadaError(f"dev split {dev_split!r} is not valid for task {task.name}; "
                        f"allowed: {', '.join(task.dev_splits)}")
    return split


def _check_max(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise LadaError(f"{name} {value!r} is invalid; allowed: a positive integer or None")


def _effective(n: int | None, split: Split) -> int | None:
    return None if n is None or n >= len(split) else n


def load_task(
    task: str,
    data_dir: str | os.PathLike | None = None,
    *,
    dev_split: str | None = None,
    max_train: int | None = None,
    max_dev: int | None = None,
    seed: int = 0,
    val_size: float | int | None = None,
    val_file: str | os.PathLike | None = None,
    val_rule: str | None = None,
    files: FileTask | None = None,
    dataset: DatasetTask | None = None,
) -> TaskData:
    """Load train and dev data of a GLUE task from a local folder or the hub, or of the task ``files`` or
    ``dataset`` describes (then ``task`` and ``data_dir`` are not read: its ``name`` names it).

    With ``val_size`` or ``val_file`` a validation split is held out of train first (``validation.hold_out``),
    so ``max_train`` rows are drawn from what is left and the fingerprints cover the held-out rows.
    """
    _check_max("max_train", max_train)
    _check_max("max_dev", max_dev)
    held = None
    if files is not None and dataset is not None:
        raise LadaError(f"task {files.name}: give its rows by files or by a dataset, not both")
    if files is not None or dataset is not None:
        if files is not None:
            if dev_split is not None and str(dev_split).strip().lower() != "dev":
                raise LadaError(f"dev split {dev_split!r} is for GLUE tasks; a task given by files has its "
                                f"--dev-file")
            loaded, split = load_files(files, val_file), "dev"
        else:
            if dev_split is not None and dev_split != dataset.dev_split:
                raise LadaError(f"dev split {dev_split!r} differs from the dataset task's {dataset.dev_split!r}")
            if val_file is not None:
                raise LadaError(f"validation file {str(val_file)!r} is for a GLUE task or one given by files; a "
                                f"task given by a dataset takes --val-split")
            loaded, split = load_dataset_task(dataset), dataset.dev_split
        spec, train, dev, source = loaded.task, loaded.train, loaded.dev, loaded.source
        identity, train_identity = loaded.identity, loaded.train_identity
        if train is None:  # an export scores dev alone: train stands in empty
            train = Split((), None if spec.tsv.text_b is None else (), ())
        if loaded.val is not None:  # the task's own reader: its format and columns, its classes
            held = Holdout(train, loaded.val, loaded.val_source, loaded.val_identity)
    else:
        spec = get_task(task)
        split = _check_split(spec, dev_split)
        root = resolve_data_dir(data_dir)
        if root is None:
            train, dev, source, identity, train_identity = load_hub(spec, split)
        else:
            train, dev, source, identity, train_identity = load_local(spec, split, root)
    if held is None and (val_size is not None or val_file is not None) and len(train):
        held = hold_out(train, spec, val_size, seed, val_file, val_rule)
    if held is not None:
        train, identity, train_identity = held.train, (identity, held.identity), (train_identity, held.identity)
    eff_train, eff_dev = _effective(max_train, train), _effective(max_dev, dev)
    fingerprint = _fingerprint(spec.name, split, identity, eff_train, eff_dev,
                               seed if (eff_train or eff_dev) else None)
    train_fingerprint = _fingerprint(spec.name, "train", train_identity, eff_train, seed if eff_train else None)
    return TaskData(
        task=spec,
        train=train.subset(eff_train, seed),
        dev=dev.subset(eff_dev, seed),
        source=source,
        fingerprint=fingerprint,
        train_fingerprint=train_fingerprint,
        val=held.val if held is not None else None,
        val_source=held.source if held is not None else None,
    )
