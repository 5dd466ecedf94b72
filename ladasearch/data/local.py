"""Local GLUE data: the distribution's folder layout (``<root>/<TASK>/train.tsv`` ...) and its TSV files."""

from __future__ import annotations

import csv
import math
import os
import pathlib
import random
from typing import Any

from ..errors import LadaError
from .files import file_identity
from .split import Split
from .tasks import TASKS, TaskSpec

ENV_DATA_DIR = "LADASEARCH_DATA_DIR"
HOLDOUT_FRACTION = 0.05
_HOLDOUT_SEED = 0  # fixed: the held-out dev set does not change with --seed


def _parse_label(raw: str, task: TaskSpec, path: pathlib.Path, line: int) -> int | float:
    value = raw.strip()
    if task.is_regression:
        try:
            score = float(value)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise LadaError(f"{path}, line {line}: label {raw!r} is not a finite number")
        return score
    if value not in task.tsv_labels:
        raise LadaError(f"{path}, line {line}: unknown label {raw!r}; allowed: "
                        f"{', '.join(task.tsv_labels)}")
    return task.tsv_labels.index(value)


def _utf8_error(path: pathlib.Path) -> str:
    """Where ``path`` stops being UTF-8, as a byte offset in the file (the text reader's own offset is
    relative to the chunk it was decoding, wrong past the first 8 KB)."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        return f"{path} is not valid UTF-8 ({exc.reason} at byte {exc.start}, line {line})"
    return f"{path} is not valid UTF-8"


def read_tsv(path: str | os.PathLike, task: TaskSpec) -> Split:
    """Parse one GLUE TSV file of ``task`` (columns by header name where there is a header)."""
    path = pathlib.Path(path)
    fmt = task.tsv
    text_a: list[str] = []
    text_b: list[str] = []
    labels: list[int | float] = []
    reader = None
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
                labels.append(_parse_label(row[idx["label"]], task, path, line))
    except UnicodeDecodeError:
        raise LadaError(_utf8_error(path)) from None
    except csv.Error as exc:  # e.g. a field over the csv module's 131,072 characters
        where = f", line {reader.line_num}" if reader is not None and reader.line_num else ""
        raise LadaError(f"{path}{where}: cannot parse TSV ({exc})") from None
    except OSError as exc:
        raise LadaError(f"cannot read {path} ({exc.strerror or exc})") from None
    if not labels:
        what = "has a header but no data rows" if fmt.has_header and path.stat().st_size else "is empty"
        raise LadaError(f"{path} {what}; expected at least one row")
    return Split(tuple(text_a), tuple(text_b) if fmt.text_b is not None else None, tuple(labels))


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


def load_local(spec: TaskSpec, split: str, root: pathlib.Path) -> tuple[Split, Split, str, Any, Any]:
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
        files = (file_identity(train_path), file_identity(dev_path))
        train_files = files[:1]
    elif spec.dev_splits == ("dev",):
        train, dev = _holdout(train)
        notes.append("dev held out from train")
        files = (file_identity(train_path), ("holdout", HOLDOUT_FRACTION, _HOLDOUT_SEED))
        train_files = files  # the held-out rows leave train
    else:
        raise LadaError(f"{spec.name} split {split!r} is not available: file {split}.tsv is "
                        f"missing in folder {folder} and cannot be derived from train; "
                        f"use another dev split ({', '.join(o for o in spec.dev_splits if o != split)}) "
                        "or load from the hub")
    source = str(folder) + (f" ({'; '.join(notes)})" if notes else "")
    return train, dev, source, ("local",) + files, ("local",) + train_files
