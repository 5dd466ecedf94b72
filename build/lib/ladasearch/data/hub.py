"""GLUE data from the Hugging Face hub (``nyu-mll/glue``), used when no local folder is given."""

from __future__ import annotations

from typing import Any

from ..errors import LadaError
from .local import ENV_DATA_DIR
from .split import Split
from .tasks import TaskSpec

HUB_DATASET = "nyu-mll/glue"
_HUB_SPLITS = {"dev": "validation", "dev_matched": "validation_matched",
               "dev_mismatched": "validation_mismatched"}


def load_hub(spec: TaskSpec, split: str) -> tuple[Split, Split, str, Any, Any]:
    """(train, dev, source, identity of both splits, identity of the train rows)."""
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
    col_a, col_b = spec.hub_columns
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
