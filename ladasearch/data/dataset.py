"""A task given by a dataset id (``--dataset``): a Hugging Face hub dataset, or a local folder laid out as one.

Read through ``datasets``: a folder's data files (``train.csv``, ``validation.jsonl``, ``data/train-*.parquet``,
or the ``configs`` its README.md lists) name its splits as a hub repo's do.  The rows of each split go through
the same column and label code as a task given by files (``files.task_splits``), so columns, classes, metric and
every bad-data message behave alike.  Each split is read alone (its own data files): the splits a task does not
use (a large unlabelled ``test``) are neither downloaded nor parsed, and a parser error names its split.

Cache identity of a split: for a folder, the SHA-256 of its files (a moved folder keeps its key, as a moved file
does); for a hub id, the id, config and split with the fingerprint ``datasets`` gives the rows (it follows the
hub revision of the files).
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import LadaError
from .columns import LoadedTask, check_metric, columns_of, quiet_datasets, read_rows, task_splits
from .files import DEFAULT_LABEL, DEFAULT_TEXT, clean_name, file_identity

DEFAULT_TRAIN_SPLIT, DEFAULT_DEV_SPLIT = "train", "validation"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_CARD = "README.md"   # a hub-layout folder's card: its YAML may declare configs, features and parser options


@dataclass(frozen=True)
class DatasetTask:
    """Which dataset and splits a task's rows come from, and how they are read (the columns as ``FileTask``'s)."""

    name: str
    dataset: str                       # a hub id (imdb, stanfordnlp/sst2) or a local folder in the hub layout
    config: str | None = None          # None: the dataset's only (or default) config
    train_split: str | None = DEFAULT_TRAIN_SPLIT  # None: only the dev split is read (an export), with label_names
    dev_split: str = DEFAULT_DEV_SPLIT
    val_split: str | None = None       # None: validation rows are carved from train
    text_column: str = DEFAULT_TEXT
    text_pair_column: str | None = None
    label_column: str = DEFAULT_LABEL
    metric: str | None = None          # None: accuracy, or pearson for regression
    label_names: tuple[str, ...] | None = None  # recorded class names (() regression); None: from the train split

    def __post_init__(self):
        object.__setattr__(self, "metric", check_metric(self.metric))
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise LadaError(f"dataset {self.dataset!r} is invalid; give a hub id (e.g. imdb) or a local folder")
        if self.config is not None and (not isinstance(self.config, str) or not self.config.strip()):
            raise LadaError(f"dataset config {self.config!r} is invalid; give a config name or leave it unset")
        if self.train_split is None and self.label_names is None:
            raise LadaError(f"task {self.name}: without a train split the label names must be known")
        _check_splits(self.train_split, self.dev_split, self.val_split)


def _check_splits(train: str | None, dev: str | None, val: str | None) -> None:
    """LadaError for a split name that is not a non-empty string, or one split given two roles."""
    named = [(role, option, split) for role, option, split in (
        ("train", "--train-split", train), ("dev", "--dev-split", dev), ("validation", "--val-split", val))
        if split is not None]
    for role, option, split in named:
        if not isinstance(split, str) or not split.strip():
            raise LadaError(f"{role} split {split!r} ({option}) is invalid; give a split name of the dataset")
    if dev is not None and dev == train:
        raise LadaError(f"the dev split is the train split {dev!r}: the reported score would be on rows the model "
                        f"learnt; give --dev-split another split of the dataset")
    if val is not None and val == train:
        raise LadaError(f"the validation split is the train split {val!r}; leave --val-split out to carve "
                        f"validation rows from train")
    if val is not None and val == dev:
        raise LadaError(f"the validation split is the dev split {val!r}: every choice would be made on the rows the "
                        f"final score is reported on; give --val-split another split, or leave it out")


def dataset_folder(dataset: str) -> Path | None:
    """The local folder ``dataset`` names; None when it is a hub id; LadaError when it is neither."""
    path = Path(dataset).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise LadaError(f"dataset {dataset!r} is a file; give a dataset folder or a hub id (a task given by files "
                        f"takes --train-file and --dev-file)")
    if not _HUB_ID.fullmatch(dataset):
        raise LadaError(f"dataset {dataset!r} is no folder here and no hub id (NAME or OWNER/NAME)")
    return None


def dataset_task_name(name: str | None, dataset: str, config: str | None = None) -> str:
    """``name`` (``--task``) when given, else the dataset's name with its config (``stanfordnlp/sst2`` -> ``sst2``,
    ``nyu-mll/glue`` config ``mrpc`` -> ``glue-mrpc``, a folder ``data/reviews/`` -> ``reviews``)."""
    if name:
        return clean_name(str(name).strip())
    path = Path(dataset).expanduser()
    base = path.resolve().name if path.is_dir() else path.name  # a folder given as "." has a name too
    return clean_name(base + (f"-{config}" if config else ""))


def _label(spec: DatasetTask, config: str | None = None) -> str:
    """How messages name the dataset: its config too when one was asked for or the dataset chose another than
    its default."""
    config = spec.config or (config if config != "default" else None)
    return f"dataset {spec.dataset!r}" + (f" (config {config!r})" if config else "")


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]


def _open(spec: DatasetTask, folder: Path | None) -> tuple[Any, dict[str, list[str]] | None]:
    """(the dataset's builder, its data files by split; None when it names its splits without data files)."""
    import datasets

    try:
        # resolves the configs and data files, reads no rows; a folder's cache is thrown away (an edited file must
        # never come back from an old cache entry), a hub download is worth keeping
        with tempfile.TemporaryDirectory(prefix="ladasearch-data-") as cache:
            builder = datasets.load_dataset_builder(str(folder or spec.dataset), spec.config,
                                                    cache_dir=cache if folder is not None else None)
    except Exception as exc:  # noqa: BLE001 - whatever loading raises, the id or folder is the user's input
        if folder is not None:
            raise LadaError(f"cannot read {_label(spec)} ({_one_line(exc)})") from None
        elsewhere = f"; and {spec.dataset!r} is no folder here" if "/" in spec.dataset else ""
        raise LadaError(f"cannot load {_label(spec)} from the Hugging Face hub ({_one_line(exc)}){elsewhere}; give "
                        f"a hub id that exists (the hub reachable, or the dataset in the datasets cache) or a local "
                        f"dataset folder") from None
    files = builder.config.data_files
    return builder, None if files is None else {str(split): list(paths) for split, paths in files.items()}


def _split_identity(spec: DatasetTask, folder: Path | None, files: list[str] | None, split: str,
                    fingerprint: str | None, config: str) -> tuple:
    if folder is None:
        return ("hub", spec.dataset, config, split, fingerprint)
    card = folder / _CARD
    return ("folder", config, file_identity(card) if card.is_file() else None,
            tuple(sorted((os.path.relpath(f, folder),) + file_identity(f) for f in files or ())))


def load_dataset_task(spec: DatasetTask) -> LoadedTask:
    """The task's splits, read from its dataset (train only when ``spec.train_split`` is set)."""
    folder = dataset_folder(spec.dataset)
    with quiet_datasets() as datasets:
        builder, files = _open(spec, folder)
        config = builder.config.name
        present = list(files) if files is not None else [str(s) for s in (builder.info.splits or {})]
        roles = [(role, option, split) for role, option, split in (
            ("train", "--train-split", spec.train_split), ("dev", "--dev-split", spec.dev_split),
            ("validation", "--val-split", spec.val_split)) if split is not None]
        for role, option, split in roles:
            if split not in present:
                raise LadaError(f"{_label(spec, config)} has no split {split!r} ({option}); splits found: "
                                f"{', '.join(map(repr, present)) or 'none'}")
        features = builder.info.features  # declared by the card (class names): a split read alone keeps them
        fingerprints: dict[str, str] = {}

        def reader(split: str):
            def load(cache: str):
                rows = datasets.load_dataset(
                    str(folder or spec.dataset), spec.config, split=split, keep_in_memory=True,
                    cache_dir=cache if folder is not None else None,
                    **({} if files is None else {"data_files": {split: files[split]}}),
                    **({} if features is None else {"features": features}))
                fingerprints[split] = rows._fingerprint
                return rows
            return load

        tables = {role: read_rows(f"{role} split {split!r} of {_label(spec)}", "split", reader(split),
                                  columns_of(spec)) for role, _, split in roles}
    task, train, dev, val = task_splits(spec, tables.get("train"), tables["dev"], tables.get("validation"))
    task = replace(task, dev_splits=(spec.dev_split,))  # the record names the split scored as the dataset does

    def identity(split: str) -> tuple:
        return _split_identity(spec, folder, None if files is None else files[split], split,
                               fingerprints.get(split), config)

    layout = (spec.text_column, spec.text_pair_column, spec.label_column, task.main_metric, task.label_names)
    train_identity = ("dataset", identity(spec.train_split) if spec.train_split else None, layout)
    where = str(folder) if folder is not None else f"hub:{spec.dataset}"
    where += f" ({config})" if spec.config else ""
    source = (f"dataset {where}, train split {spec.train_split}, dev split {spec.dev_split}" if spec.train_split
              else f"dataset {where}, dev split {spec.dev_split}")
    return LoadedTask(task, train, dev, val, source, train_identity + (identity(spec.dev_split),), train_identity,
                      f"split {spec.val_split} of dataset {where}" if spec.val_split else None,
                      ("val-split",) + identity(spec.val_split) if spec.val_split else None)
