"""A task given by files (``--train-file``/``--dev-file``/``--val-file``) instead of a GLUE name.

The files are CSV, TSV, JSON, JSON Lines or Parquet, read through the ``datasets`` library; the columns are
named by ``FileTask``.  Labels become class ids in sorted order (strings sort as strings, integers as
numbers), so the same train file always gives the same ids; a label column of non-integer numbers, or a
correlation metric, makes the task a regression.  The class names (or ``()`` for regression) are recorded with
the job (``pipeline.data_record``): an export or a resume rebuilds the task from them (``FileTask.label_names``)
and needs only the dev file, so a class id means the same class however the files change later.

The column and label code (``columns``) reads a ``Table`` (the rows of one split and how messages name them), so
a task given by a dataset (``dataset``) goes through it too: the same columns, classes, metric and bad-data
messages.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import LadaError
from .columns import LoadedTask, Table, check_metric, columns_of, read_rows, task_splits

# suffix -> (datasets builder, its options); TSV is the csv builder with tabs, quotes taken literally as GLUE's are
FORMATS: dict[str, tuple[str, dict]] = {
    ".csv": ("csv", {}), ".tsv": ("csv", {"delimiter": "\t", "quoting": 3}), ".json": ("json", {}),
    ".jsonl": ("json", {}), ".parquet": ("parquet", {})}
DEFAULT_TEXT, DEFAULT_LABEL = "text", "label"
_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def task_name(name: str | None, train_file: str | os.PathLike) -> str:
    """``name`` (``--task``) when given, else the train file's name without suffix (``reviews.train.csv`` ->
    ``reviews``)."""
    return clean_name(str(name).strip() if name else Path(train_file).name.split(".")[0])


def clean_name(raw: str) -> str:
    """A task's name as output folders, searches and MLflow tags take it: letters, digits and ``._-``."""
    clean = _NAME.sub("-", raw).strip("-.")
    if not clean:
        raise LadaError(f"task name {raw!r} has no letters or digits; give --task NAME")
    return clean


@dataclass(frozen=True)
class FileTask:
    """Where a file task's rows are and how they are read."""

    name: str
    train_file: str | None             # None: only the dev file is read (an export), with recorded label_names
    dev_file: str
    text_column: str = DEFAULT_TEXT
    text_pair_column: str | None = None
    label_column: str = DEFAULT_LABEL
    metric: str | None = None          # None: accuracy, or pearson for regression
    label_names: tuple[str, ...] | None = None  # recorded class names (() regression); None: from the train file

    def __post_init__(self):
        object.__setattr__(self, "metric", check_metric(self.metric))
        if self.train_file is None and self.label_names is None:
            raise LadaError(f"task {self.name}: without a train file the label names must be known")


def _path(path: str | os.PathLike, role: str) -> Path:
    p = Path(path).expanduser()
    suffix = p.suffix.lower()
    if suffix not in FORMATS:
        raise LadaError(f"{role} file {str(p)!r} has an unsupported extension {p.suffix or '(none)'!r}; "
                        f"allowed: {', '.join(FORMATS)}")
    if p.is_dir():
        raise LadaError(f"{role} file {str(p)!r} is a folder; give a file")
    if not p.is_file():
        raise LadaError(f"{role} file {str(p)!r} does not exist")
    with open(p, "rb") as fh:
        head = fh.read(4096)
    if not head.strip():
        raise LadaError(f"{role} file {str(p)!r} is empty; expected a header (or keys) and data rows")
    return p


def read_table(path: str | os.PathLike, role: str, wanted: tuple[str | None, ...]) -> Table:
    """The ``wanted`` columns of one file, read by the ``datasets`` builder of its suffix (in a throw-away cache:
    a file rewritten in place must never come back from an old cache entry)."""
    p = _path(path, role)
    builder, options = FORMATS[p.suffix.lower()]

    def load(cache: str):
        import datasets

        return datasets.load_dataset(builder, data_files=str(p), split="train", cache_dir=cache,
                                     keep_in_memory=True, **options)

    return read_rows(f"{role} file {str(p)!r}", "file", load, wanted, f" as {p.suffix.lstrip('.').upper()}")


def file_identity(path: str | os.PathLike) -> tuple[int, str]:
    """(size, sha256 of the content): a cache key that changes when the rows do, not when the file moves."""
    p = Path(path).expanduser()
    digest = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return (p.stat().st_size, digest.hexdigest())


def load_files(spec: FileTask, val_file: str | os.PathLike | None = None) -> LoadedTask:
    """The task's splits, read from its files (train only when ``spec.train_file`` is set)."""
    wanted = columns_of(spec)
    train = read_table(spec.train_file, "train", wanted) if spec.train_file is not None else None
    dev = read_table(spec.dev_file, "dev", wanted)
    val = read_table(val_file, "validation", wanted) if val_file else None
    task, train_rows, dev_rows, val_rows = task_splits(spec, train, dev, val)
    layout = (spec.text_column, spec.text_pair_column, spec.label_column, task.main_metric, task.label_names)
    train_identity = ("files", file_identity(spec.train_file) if spec.train_file else None, layout)
    identity = train_identity + (file_identity(spec.dev_file),)
    source = f"files train {spec.train_file}, dev {spec.dev_file}" if spec.train_file else f"file dev {spec.dev_file}"
    return LoadedTask(task, train_rows, dev_rows, val_rows, source, identity, train_identity,
                      f"file {val_file}" if val_file else None,
                      ("val-file",) + file_identity(val_file) if val_file else None)
