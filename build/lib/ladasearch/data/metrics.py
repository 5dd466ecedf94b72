"""GLUE metrics by name; a task lists the ones it reports (``TaskSpec.metrics``)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..errors import LadaError
from .tasks import TaskSpec


def _accuracy(p: np.ndarray, g: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score

    return accuracy_score(g, p)


def _f1(p: np.ndarray, g: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return f1_score(g, p, pos_label=1, average="binary", zero_division=0)


def _mcc(p: np.ndarray, g: np.ndarray) -> float:
    from sklearn.metrics import matthews_corrcoef

    return matthews_corrcoef(g, p)


def _pearson(p: np.ndarray, g: np.ndarray) -> float:
    from scipy.stats import pearsonr

    return pearsonr(p, g)[0]


def _spearman(p: np.ndarray, g: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return spearmanr(p, g)[0]


# (predictions, gold) -> value: class ids for classification, floats for regression
METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": _accuracy, "f1": _f1, "mcc": _mcc, "pearson": _pearson, "spearman": _spearman}


def _finite(x: float) -> float:
    x = float(x)
    return x if math.isfinite(x) else 0.0


def _predictions(task: TaskSpec, predictions: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, gold) as 1-D arrays of the task's kind: class ids, or regression values."""
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
        return preds.astype(np.float64), gold.astype(np.float64)
    if preds.dtype.kind == "f" and not np.all(preds == np.round(preds)):
        raise LadaError(f"1-D predictions for {task.name} must be class ids; "
                        f"pass (N, {task.num_labels}) logits instead")
    return preds.astype(np.int64), gold.astype(np.int64)


def compute_metrics(task: TaskSpec, predictions: Any, labels: Any) -> dict[str, float]:
    """The task's metrics from logits ``(N, num_labels)`` (or class ids ``(N,)``) or regression
    outputs ``(N,)``/``(N, 1)``; correlations of constant inputs are 0.0, never nan."""
    p, g = _predictions(task, predictions, labels)
    if task.is_regression and (len(p) < 2 or np.ptp(p) == 0 or np.ptp(g) == 0):
        return dict.fromkeys(task.metrics, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: _finite(METRICS[name](p, g)) for name in task.metrics}


def main_score(task: TaskSpec, metrics: Mapping[str, float]) -> float:
    """The task's headline metric from ``metrics``."""
    if task.main_metric not in metrics:
        raise LadaError(f"metrics have no {task.main_metric!r} for task {task.name}; "
                        f"found: {', '.join(metrics) or 'none'}")
    return float(metrics[task.main_metric])
