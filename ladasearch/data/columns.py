"""The column and label code of a task given by files (``files``) or by a dataset (``dataset``): the rows of
one split as a ``Table``, the text columns, the labels turned into class ids in sorted order (or regression
targets), and the task's splits and ``TaskSpec`` from them, with the same bad-data messages for both.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import LadaError
from .split import Split
from .tasks import TaskSpec, TsvLayout

METRIC_ALIASES = {"matthews": "mcc", "acc": "accuracy"}
CLASS_METRICS = ("accuracy", "f1", "mcc")
REGRESSION_METRICS = ("pearson", "spearman")


def check_metric(metric: str | None) -> str | None:
    """The metric's canonical name (``matthews`` -> ``mcc``); LadaError naming the allowed ones."""
    if metric is None:
        return None
    name = METRIC_ALIASES.get(str(metric).strip().lower(), str(metric).strip().lower())
    if name not in CLASS_METRICS + REGRESSION_METRICS:
        raise LadaError(f"metric {metric!r} is unknown; allowed: {', '.join(CLASS_METRICS + REGRESSION_METRICS)}, "
                        f"matthews (= mcc)")
    return name


class TaskColumns(Protocol):
    """What the column and label code reads of a task given by files (FileTask) or by a dataset (DatasetTask)."""

    name: str
    text_column: str
    text_pair_column: str | None
    label_column: str
    metric: str | None
    label_names: tuple[str, ...] | None


def _reason(exc: BaseException) -> str:
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        exc = inner  # datasets wraps the parser's error, which says what is wrong
        seen.add(id(exc))
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:160]


@contextmanager
def quiet_datasets():
    """The ``datasets`` module with its logging and progress bars off: its parser errors are logged too, and the
    message says them once."""
    import datasets

    level = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(logging.CRITICAL)
    bars = datasets.utils.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield datasets
    finally:
        datasets.logging.set_verbosity(level)
        if bars:
            datasets.enable_progress_bars()


@dataclass(frozen=True)
class Table:
    """The columns of one split's rows (a file, or a split of a dataset) and how messages name them."""

    names: tuple[str, ...]             # every column the rows have (a missing one's message lists them)
    columns: dict[str, list]           # the columns the task reads, of those present
    where: str                         # "train file '/data/r.csv'", "dev split 'validation' of dataset 'imdb'"
    kind: str                          # what the train rows are in messages: "file" or "split"

    @classmethod
    def of(cls, rows: Any, where: str, kind: str, wanted: tuple[str | None, ...]) -> Table:
        """The ``wanted`` columns of a ``datasets.Dataset``; a class-label column gives its class names, so a
        hub dataset's classes are named as a file's text labels would be (-1, "no label", is an empty label)."""
        import datasets

        if not rows.num_rows:
            raise LadaError(f"{where} has no data rows")
        names = tuple(rows.column_names)
        keep = [c for c in dict.fromkeys(wanted) if c is not None and c in names]
        columns = rows.select_columns(keep).to_dict()
        for name in keep:
            feature = rows.features[name]
            if isinstance(feature, datasets.ClassLabel):
                columns[name] = [None if v is None or v < 0 else feature.int2str(v) for v in columns[name]]
        return cls(names, columns, where, kind)


def read_rows(where: str, kind: str, load: Callable[[str], Any], wanted: tuple[str | None, ...],
              what: str = "") -> Table:
    """The rows ``load(cache)`` returns as a ``datasets.Dataset`` (``cache``: a throw-away folder it may use),
    as a Table; whatever the parser raises is a LadaError naming ``where``."""
    with quiet_datasets(), tempfile.TemporaryDirectory(prefix="ladasearch-data-") as cache:
        try:
            return Table.of(load(cache), where, kind, wanted)
        except LadaError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the parser raises, the rows are the user's input
            if "corresponds to no data" in str(exc):
                raise LadaError(f"{where} has no data rows") from None
            raise LadaError(f"cannot read {where}{what} ({_reason(exc)})") from None


def columns_of(spec: TaskColumns) -> tuple[str | None, ...]:
    """The columns a task reads."""
    return (spec.text_column, spec.text_pair_column, spec.label_column)


def _column(table: Table, name: str, option: str) -> list:
    if name not in table.names:
        raise LadaError(f"{table.where} has no column {name!r} ({option}); columns found: "
                        f"{', '.join(map(repr, table.names))}")
    return table.columns[name]


def _texts(values: list, name: str, where: str) -> tuple[str, ...]:
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            raise LadaError(f"{where}, row {i + 1}: column {name!r} is empty")
    return tuple(str(v) for v in values)


def _number(value: Any) -> float | None:
    """The value as a number when it is one (or a string writing one), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def _raw_labels(values: list, spec: TaskColumns, where: str) -> tuple[list, bool]:
    """(labels, numeric): numbers as floats, strings stripped; LadaError on missing or mixed kinds."""
    numbers, strings = [], []
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip()):
            raise LadaError(f"{where}, row {i + 1}: label column {spec.label_column!r} is empty")
        n = _number(v)
        (numbers if n is not None and math.isfinite(n) else strings).append((i, v, n))
    if numbers and strings:
        raise LadaError(f"{where}: label column {spec.label_column!r} mixes numbers "
                        f"(e.g. {numbers[0][1]!r}, row {numbers[0][0] + 1}) and text (e.g. {strings[0][1]!r}, "
                        f"row {strings[0][0] + 1}); use one kind of label")
    if numbers:
        return [n for _, _, n in numbers], True
    return [str(v).strip() for _, v, _ in strings], False


def _class_name(value: float | str) -> str:
    return str(int(value)) if isinstance(value, float) else value


def _infer(labels: list, numeric: bool, spec: TaskColumns, where: str) -> tuple[str, ...]:
    """Class names in id order from the train labels; () for regression."""
    regression = numeric and (spec.metric in REGRESSION_METRICS or any(v != int(v) for v in labels))
    if regression:
        return ()
    if spec.metric in REGRESSION_METRICS:
        raise LadaError(f"metric {spec.metric} needs numeric labels; {where} has text labels (e.g. {labels[0]!r})")
    names = tuple(_class_name(v) for v in sorted(set(labels)))
    if len(names) < 2:
        raise LadaError(f"{where} has a single class ({names[0]!r}) in column {spec.label_column!r}; "
                        f"a classifier needs at least 2")
    if spec.metric == "f1" and len(names) != 2:
        raise LadaError(f"metric f1 scores a binary task (class {names[1]!r} as positive); {where} "
                        f"has {len(names)} classes: use accuracy or mcc")
    return names


def _ids(labels: list, numeric: bool, names: tuple[str, ...], table: Table) -> tuple[float | int, ...]:
    where = table.where
    if not names:
        if not numeric:
            raise LadaError(f"{where} has text labels (e.g. {labels[0]!r}); this regression task needs numbers")
        return tuple(float(v) for v in labels)
    if numeric and any(v != int(v) for v in labels):
        bad = next(v for v in labels if v != int(v))
        raise LadaError(f"{where} has label {bad!r}; allowed: the train classes {', '.join(names)}")
    index = {n: i for i, n in enumerate(names)}
    given = [_class_name(v) for v in labels]
    unknown = sorted({g for g in given if g not in index})
    if unknown:
        raise LadaError(f"{where} has label(s) not in the train {table.kind}: "
                        f"{', '.join(map(repr, unknown[:5]))}; train classes: {', '.join(map(repr, names))}")
    return tuple(index[g] for g in given)


def table_split(table: Table, spec: TaskColumns, names: tuple[str, ...] | None = None) -> tuple[Split, tuple[str, ...]]:
    """(the rows of ``table``, the class names): ``names`` None infers them from these rows (train's).  The
    columns, metric and labels are read alike from a file and from a dataset's split."""
    where = table.where
    text_a = _texts(_column(table, spec.text_column, "--text-column"), spec.text_column, where)
    text_b = None
    if spec.text_pair_column is not None:
        text_b = _texts(_column(table, spec.text_pair_column, "--text-pair-column"), spec.text_pair_column, where)
    labels, numeric = _raw_labels(_column(table, spec.label_column, "--label-column"), spec, where)
    if names is None:
        names = _infer(labels, numeric, spec, where)
    return Split(text_a, text_b, _ids(labels, numeric, names, table)), names


@dataclass(frozen=True)
class LoadedTask:
    """What a task given by files or by a dataset loads: the TaskSpec, its splits, and cache identities."""

    task: TaskSpec
    train: Split | None                # None: only dev was read (an export), the classes were recorded
    dev: Split
    val: Split | None                  # rows named for validation (else carved from train)
    source: str
    identity: Any                      # of every split read
    train_identity: Any                # of the train rows alone (the teacher's cache key)
    val_source: str | None = None
    val_identity: Any = None


def task_splits(spec: TaskColumns, train: Table | None, dev: Table, val: Table | None = None
                ) -> tuple[TaskSpec, Split | None, Split, Split | None]:
    """(task, train, dev, val) of a task given by files or a dataset, from the tables of its splits: the classes
    come from train (or the recorded ``spec.label_names`` when train is None)."""
    names = spec.label_names
    rows = None
    if train is not None:
        rows, names = table_split(train, spec, None if names is None else tuple(names))
    task = file_spec(spec, tuple(names))
    known = task.label_names if names else ()
    dev_rows = table_split(dev, spec, known)[0]
    return task, rows, dev_rows, table_split(val, spec, known)[0] if val is not None else None


def file_spec(spec: TaskColumns, names: tuple[str, ...]) -> TaskSpec:
    """The TaskSpec everything downstream takes; ``glue_dir`` is empty (no GLUE folder holds it)."""
    if names:
        main = spec.metric or "accuracy"
        if main in REGRESSION_METRICS:
            raise LadaError(f"metric {main} needs a regression task; task {spec.name} has classes {', '.join(names)}")
        metrics = (main,) + (("accuracy",) if main != "accuracy" else ())
    else:
        main = spec.metric or "pearson"
        if main not in REGRESSION_METRICS:
            raise LadaError(f"metric {main} needs class labels; task {spec.name} is a regression (numeric labels "
                            f"that are not all integers): use pearson or spearman")
        metrics = (main,) + tuple(m for m in REGRESSION_METRICS if m != main)
    return TaskSpec(spec.name, "", TsvLayout(spec.text_column, spec.text_pair_column, spec.label_column),
                    (spec.text_column, spec.text_pair_column), names, names, main, metrics)


