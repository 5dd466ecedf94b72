"""GLUE task data: task specs, loading (local TSV or Hugging Face hub), metrics.

Local data uses the GLUE distribution layout (``<root>/<TASK>/train.tsv`` ...);
without a local folder the data comes from ``nyu-mll/glue`` on the hub.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import pathlib
import random
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ladasearch.errors import LadaError

ENV_DATA_DIR = "LADASEARCH_DATA_DIR"
HUB_DATASET = "nyu-mll/glue"
HOLDOUT_FRACTION = 0.05
_HOLDOUT_SEED = 0  # fixed: the held-out dev set does not change with --seed
_FINGERPRINT_VERSION = "data-v1"


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class TaskSpec:
    """Static description of one GLUE task."""

    name: str
    glue_dir: str
    num_labels: int
    is_regression: bool
    main_metric: str
    dev_splits: tuple[str, ...]


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("sst2", "SST-2", 2, False, "accuracy", ("dev",)),
        TaskSpec("mnli", "MNLI", 3, False, "accuracy", ("dev_matched", "dev_mismatched")),
        TaskSpec("qnli", "QNLI", 2, False, "accuracy", ("dev",)),
        TaskSpec("qqp", "QQP", 2, False, "f1", ("dev",)),
        TaskSpec("mrpc", "MRPC", 2, False, "f1", ("dev",)),
        TaskSpec("rte", "RTE", 2, False, "accuracy", ("dev",)),
        TaskSpec("cola", "CoLA", 2, False, "mcc", ("dev",)),
        TaskSpec("stsb", "STS-B", 1, True, "pearson", ("dev",)),
    )
}


def get_task(name: str) -> TaskSpec:
    """Look up a task by name, case-insensitively and ignoring '-' ('SST-2' -> sst2)."""
    key = str(name).strip().lower().replace("-", "")
    if key not in TASKS:
        raise LadaError(f"unknown task {name!r}; allowed: {', '.join(TASKS)}")
    return TASKS[key]


# --------------------------------------------------------------------------- splits


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
    """Train and dev data of one task, with where it came from and cache keys.

    ``fingerprint`` identifies both splits; ``train_fingerprint`` the train rows alone (what a teacher's
    fine-tuning depends on, so a different dev subset reuses the same cached teacher).
    """

    task: TaskSpec
    train: Split
    dev: Split
    source: str
    fingerprint: str
    train_fingerprint: str


# --------------------------------------------------------------------------- local TSV format


@dataclass(frozen=True)
class _TsvFormat:
    text_a: str | int  # header name, or column index for header-less files
    text_b: str | int | None
    label: str | int
    labels: Mapping[str, int] | None  # None: float label (regression)
    has_header: bool = True


_BINARY = {"0": 0, "1": 1}
_NLI2 = {"entailment": 0, "not_entailment": 1}
_FORMATS: dict[str, _TsvFormat] = {
    "sst2": _TsvFormat("sentence", None, "label", _BINARY),
    "mnli": _TsvFormat("sentence1", "sentence2", "gold_label",
                       {"entailment": 0, "neutral": 1, "contradiction": 2}),
    "qnli": _TsvFormat("question", "sentence", "label", _NLI2),
    "qqp": _TsvFormat("question1", "question2", "is_duplicate", _BINARY),
    "mrpc": _TsvFormat("#1 String", "#2 String", "Quality", _BINARY),
    "rte": _TsvFormat("sentence1", "sentence2", "label", _NLI2),
    "cola": _TsvFormat(3, None, 1, _BINARY, has_header=False),  # source,label,orig_label,sentence
    "stsb": _TsvFormat("sentence1", "sentence2", "score", None),
}

# hub column names: (text_a, text_b); the label column is always "label"
_HUB_COLUMNS: dict[str, tuple[str, str | None]] = {
    "sst2": ("sentence", None),
    "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "qqp": ("question1", "question2"),
    "mrpc": ("sentence1", "sentence2"),
    "rte": ("sentence1", "sentence2"),
    "cola": ("sentence", None),
    "stsb": ("sentence1", "sentence2"),
}
_HUB_SPLITS = {"dev": "validation", "dev_matched": "validation_matched",
               "dev_mismatched": "validation_mismatched"}


def _parse_label(raw: str, fmt: _TsvFormat, path: pathlib.Path, line: int) -> int | float:
    value = raw.strip()
    if fmt.labels is None:
        try:
            score = float(value)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise LadaError(f"{path}, line {line}: label {raw!r} is not a finite number")
        return score
    if value not in fmt.labels:
        raise LadaError(f"{path}, line {line}: unknown label {raw!r}; allowed: "
                        f"{', '.join(fmt.labels)}")
    return fmt.labels[value]


def read_tsv(path: str | os.PathLike, task: TaskSpec) -> Split:
    """Parse one GLUE TSV file of ``task`` (columns by header name where there is a header)."""
    path = pathlib.Path(path)
    fmt = _FORMATS[task.name]
    text_a: list[str] = []
    text_b: list[str] = []
    labels: list[int | float] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
            cols: dict[str, int | None] = {"text_a": fmt.text_a, "text_b": fmt.text_b,
                                           "label": fmt.label}
            if fmt.has_header:
                header = next((r for r in reader if r and r != [""]), None)
                if header is None:
                    raise LadaError(f"{path} is empty; expected a header and data rows")
                names = [h.strip() for h in header]
                header_line = reader.line_num
                for key, want in list(cols.items()):
                    if want is None:
                        continue
                    if want not in names:
                        raise LadaError(f"{path}, line {header_line}: header has no column {want!r}; "
                                        f"columns found: {', '.join(map(repr, names))}")
                    cols[key] = names.index(want)
            idx = {k: v for k, v in cols.items() if v is not None}
            needed = max(idx.values()) + 1
            for row in reader:
                if not row or row == [""]:
                    continue  # blank line
                line = reader.line_num
                if len(row) < needed:
                    raise LadaError(f"{path}, line {line}: expected at least {needed} "
                                    f"tab-separated fields, found {len(row)}")
                text_a.append(row[idx["text_a"]])
                if "text_b" in idx:
                    text_b.append(row[idx["text_b"]])
                labels.append(_parse_label(row[idx["label"]], fmt, path, line))
    except UnicodeDecodeError as exc:
        raise LadaError(f"{path} is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise LadaError(f"{path}: cannot parse TSV ({exc})") from None
    except OSError as exc:
        raise LadaError(f"cannot read {path} ({exc.strerror or exc})") from None
    if not labels:
        what = "has a header but no data rows" if fmt.has_header and path.stat().st_size else "is empty"
        raise LadaError(f"{path} {what}; expected at least one row")
    return Split(tuple(text_a), tuple(text_b) if fmt.text_b is not None else None, tuple(labels))


# --------------------------------------------------------------------------- locating data


def resolve_data_dir(data_dir: str | os.PathLike | None) -> pathlib.Path | None:
    """Explicit ``data_dir``, else $LADASEARCH_DATA_DIR, else None (use the hub)."""
    origin = "data dir"
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(ENV_DATA_DIR) or None
        origin = f"${ENV_DATA_DIR}"
        if data_dir is None:
            return None
    path = pathlib.Path(data_dir).expanduser()
    if not path.exists():
        raise LadaError(f"{origin} {str(path)!r} does not exist; "
                        "expected a GLUE folder (containing e.g. SST-2/) or one task folder")
    if not path.is_dir():
        raise LadaError(f"{origin} {str(path)!r} is not a folder; "
                        "expected a GLUE folder (containing e.g. SST-2/) or one task folder")
    return path.resolve()


def _norm(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def _find_file(folder: pathlib.Path, stem: str) -> pathlib.Path | None:
    for name in (f"{stem}.tsv", f"{stem}.sample.tsv"):
        if (folder / name).is_file():
            return folder / name
    return None


def find_task_dir(data_dir: pathlib.Path, task: TaskSpec) -> pathlib.Path:
    """The task folder: ``data_dir/<glue_dir>`` (any case), or ``data_dir`` itself."""
    exact = data_dir / task.glue_dir
    if exact.is_dir():
        return exact
    for child in sorted(data_dir.iterdir()):
        if child.is_dir() and _norm(child.name) == _norm(task.glue_dir):
            return child
    own = _norm(data_dir.name)
    other_task = any(own == _norm(t.glue_dir) for t in TASKS.values() if t is not task)
    if own == _norm(task.glue_dir) or (not other_task and _find_file(data_dir, "train")):
        return data_dir
    raise LadaError(f"task folder {task.glue_dir!r} not found under {data_dir}; pass the GLUE "
                    f"root (containing {task.glue_dir}/) or the {task.glue_dir} folder itself")


def _holdout(split: Split, fraction: float = HOLDOUT_FRACTION) -> tuple[Split, Split]:
    """Split off a fixed random ``fraction`` (at least 1 row) as dev: (train, dev)."""
    n = len(split)
    if n < 2:
        raise LadaError(f"cannot hold out a dev set from a train file with {n} row(s); "
                        "need at least 2 rows or a dev file")
    k = max(1, round(n * fraction))
    dev_idx = sorted(random.Random(_HOLDOUT_SEED).sample(range(n), k))
    held = set(dev_idx)
    return split.select([i for i in range(n) if i not in held]), split.select(dev_idx)


def _fingerprint(*parts: Any) -> str:
    text = "\n".join(repr(p) for p in (_FINGERPRINT_VERSION,) + parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _file_identity(path: pathlib.Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


# --------------------------------------------------------------------------- loading


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
) -> TaskData:
    """Load train and dev data of a GLUE task from a local folder or the hub."""
    spec = get_task(task)
    split = _check_split(spec, dev_split)
    _check_max("max_train", max_train)
    _check_max("max_dev", max_dev)
    root = resolve_data_dir(data_dir)
    if root is None:
        train, dev, source, identity, train_identity = _load_hub(spec, split)
    else:
        train, dev, source, identity, train_identity = _load_local(spec, split, root)
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
    )


def _load_local(spec: TaskSpec, split: str, root: pathlib.Path) -> tuple[Split, Split, str, Any, Any]:
    """(train, dev, source, identity of both splits, identity of the train rows)."""
    folder = find_task_dir(root, spec)
    train_path = _find_file(folder, "train")
    if train_path is None:
        raise LadaError(f"no train.tsv or train.sample.tsv in folder {folder}")
    train = read_tsv(train_path, spec)
    notes = []
    if ".sample." in train_path.name:
        notes.append(f"train from {train_path.name}, a subset")
    dev_path = _find_file(folder, split)
    if dev_path is not None:
        dev = read_tsv(dev_path, spec)
        files = (_file_identity(train_path), _file_identity(dev_path))
        train_files = files[:1]
    elif spec.dev_splits == ("dev",):
        train, dev = _holdout(train)
        notes.append("dev held out from train")
        files = (_file_identity(train_path), ("holdout", HOLDOUT_FRACTION, _HOLDOUT_SEED))
        train_files = files  # the held-out rows leave train
    else:
        raise LadaError(f"{spec.name} split {split!r} is not available: file {split}.tsv is "
                        f"missing in folder {folder} and cannot be derived from train; "
                        f"use another dev split ({', '.join(o for o in spec.dev_splits if o != split)}) "
                        "or load from the hub")
    source = str(folder) + (f" ({'; '.join(notes)})" if notes else "")
    return train, dev, source, ("local",) + files, ("local",) + train_files


def _load_hub(spec: TaskSpec, split: str) -> tuple[Split, Split, str, Any, Any]:
    hub_split = _HUB_SPLITS[split]
    try:
        import datasets

        ds = datasets.load_dataset(HUB_DATASET, spec.name)
        train = _hub_split(ds["train"], spec)
        dev = _hub_split(ds[hub_split], spec)
    except LadaError:
        raise
    except Exception as exc:  # noqa: BLE001 - any hub failure is a user-facing error
        reason = " ".join(str(exc).split())[:200] or "no details"
        raise LadaError(
            f"could not load GLUE task {spec.name} from the Hugging Face hub "
            f"({type(exc).__name__}: {reason}); pass --data-dir or set {ENV_DATA_DIR} "
            "to a local GLUE folder") from None
    return (train, dev, f"hub:{HUB_DATASET}", ("hub", HUB_DATASET, spec.name, hub_split),
            ("hub", HUB_DATASET, spec.name))


def _hub_split(table: Any, spec: TaskSpec) -> Split:
    col_a, col_b = _HUB_COLUMNS[spec.name]
    raw = list(table["label"])
    if spec.is_regression:
        labels = tuple(float(x) for x in raw)
    else:
        labels = tuple(int(x) for x in raw)
        bad = sorted({x for x in labels if not 0 <= x < spec.num_labels})
        if bad:
            raise LadaError(f"hub data for {spec.name} has label(s) {bad[:5]}; "
                            f"allowed: 0..{spec.num_labels - 1}")
    return Split(
        text_a=tuple(str(x) for x in table[col_a]),
        text_b=None if col_b is None else tuple(str(x) for x in table[col_b]),
        labels=labels,
    )


# --------------------------------------------------------------------------- metrics


def _finite(x: float) -> float:
    x = float(x)
    return x if math.isfinite(x) else 0.0


def compute_metrics(task: TaskSpec, predictions: Any, labels: Any) -> dict[str, float]:
    """GLUE metrics from logits ``(N, num_labels)`` (or class ids ``(N,)``) or regression
    outputs ``(N,)``/``(N, 1)``; correlations of constant inputs are 0.0, never nan."""
    preds = np.asarray(predictions)
    gold = np.asarray(labels)
    if gold.ndim != 1:
        gold = gold.reshape(-1)
    if preds.ndim == 2 and (task.is_regression or preds.shape[1] == task.num_labels):
        preds = preds.reshape(-1) if task.is_regression else preds.argmax(axis=-1)
    if task.is_regression and preds.ndim == 2 and preds.shape[1] != 1:
        raise LadaError(f"regression predictions have shape {preds.shape}; allowed: (N,) or (N, 1)")
    if preds.ndim != 1:
        raise LadaError(f"predictions have shape {preds.shape}; allowed: "
                        f"(N, {task.num_labels}) logits or (N,) values")
    if len(preds) != len(gold) or len(gold) == 0:
        raise LadaError(f"got {len(preds)} predictions for {len(gold)} labels; "
                        "need the same non-zero number")

    if task.is_regression:
        from scipy.stats import pearsonr, spearmanr

        p, g = preds.astype(np.float64), gold.astype(np.float64)
        if len(p) < 2 or np.ptp(p) == 0 or np.ptp(g) == 0:
            return {"pearson": 0.0, "spearman": 0.0}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {"pearson": _finite(pearsonr(p, g)[0]),
                    "spearman": _finite(spearmanr(p, g)[0])}

    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    if preds.dtype.kind == "f" and not np.all(preds == np.round(preds)):
        raise LadaError(f"1-D predictions for {task.name} must be class ids; "
                        f"pass (N, {task.num_labels}) logits instead")
    p, g = preds.astype(np.int64), gold.astype(np.int64)
    out = {"accuracy": _finite(accuracy_score(g, p))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if task.main_metric == "f1":
            out["f1"] = _finite(f1_score(g, p, pos_label=1, average="binary", zero_division=0))
        if task.main_metric == "mcc":
            out["mcc"] = _finite(matthews_corrcoef(g, p))
    return out


def main_score(task: TaskSpec, metrics: Mapping[str, float]) -> float:
    """The task's headline metric from ``metrics``."""
    if task.main_metric not in metrics:
        raise LadaError(f"metrics have no {task.main_metric!r} for task {task.name}; "
                        f"found: {', '.join(metrics) or 'none'}")
    return float(metrics[task.main_metric])
