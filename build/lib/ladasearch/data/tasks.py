"""The GLUE tasks: one record per task holding its files, hub columns, label names and metrics.

Adding a task is adding one ``TaskSpec`` to ``TASKS`` (and, for a metric not yet known, one function
to ``metrics.METRICS``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import LadaError


@dataclass(frozen=True)
class TsvLayout:
    """Columns of a task's GLUE TSV files: header names, or indices for header-less files."""

    text_a: str | int
    text_b: str | int | None
    label: str | int
    has_header: bool = True


VAL_RULES = ("rows", "sentences")   # see ``validation``


@dataclass(frozen=True)
class TaskSpec:
    """Static description of one GLUE task."""

    name: str
    glue_dir: str                      # folder of the GLUE distribution (SST-2, MNLI, ...)
    tsv: TsvLayout
    hub_columns: tuple[str, str | None]  # (text_a, text_b) on the hub; the label column is always "label"
    label_names: tuple[str, ...]       # name of class i (the hub's names); empty for regression
    tsv_labels: tuple[str, ...]        # class i as the TSV files write it; empty: a float score
    main_metric: str
    metrics: tuple[str, ...]           # every metric reported, main_metric among them
    dev_splits: tuple[str, ...] = ("dev",)
    # how validation rows are carved from train (``validation.VAL_RULES``): "rows" when train rows look like dev
    # rows; "sentences" when train also holds the phrases of its sentences (SST-2) and dev holds sentences only
    val_rule: str = "rows"

    def __post_init__(self):
        if self.val_rule not in VAL_RULES:
            raise ValueError(f"task {self.name}: val_rule {self.val_rule!r} is not 'rows' or 'sentences'")
        if self.main_metric not in self.metrics:
            raise ValueError(f"task {self.name}: main metric {self.main_metric!r} is not in {self.metrics}")
        if len(self.tsv_labels) != len(self.label_names):
            raise ValueError(f"task {self.name}: {len(self.tsv_labels)} TSV labels for {len(self.label_names)} names")

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        """Outputs of the classifier head: the number of classes, 1 for regression."""
        return len(self.label_names) or 1


_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
_PAIR = TsvLayout("sentence1", "sentence2", "label")

TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("sst2", "SST-2", TsvLayout("sentence", None, "label"), ("sentence", None),
                 ("negative", "positive"), _BINARY, "accuracy", ("accuracy",), val_rule="sentences"),
        TaskSpec("mnli", "MNLI", TsvLayout("sentence1", "sentence2", "gold_label"), ("premise", "hypothesis"),
                 ("entailment", "neutral", "contradiction"), ("entailment", "neutral", "contradiction"),
                 "accuracy", ("accuracy",), dev_splits=("dev_matched", "dev_mismatched")),
        TaskSpec("qnli", "QNLI", TsvLayout("question", "sentence", "label"), ("question", "sentence"),
                 _NLI2, _NLI2, "accuracy", ("accuracy",)),
        TaskSpec("qqp", "QQP", TsvLayout("question1", "question2", "is_duplicate"), ("question1", "question2"),
                 ("not_duplicate", "duplicate"), _BINARY, "f1", ("accuracy", "f1")),
        TaskSpec("mrpc", "MRPC", TsvLayout("#1 String", "#2 String", "Quality"), ("sentence1", "sentence2"),
                 ("not_equivalent", "equivalent"), _BINARY, "f1", ("accuracy", "f1")),
        TaskSpec("rte", "RTE", _PAIR, ("sentence1", "sentence2"), _NLI2, _NLI2, "accuracy", ("accuracy",)),
        # CoLA's files have no header: source, label, original label, sentence
        TaskSpec("cola", "CoLA", TsvLayout(3, None, 1, has_header=False), ("sentence", None),
                 ("unacceptable", "acceptable"), _BINARY, "mcc", ("accuracy", "mcc")),
        TaskSpec("stsb", "STS-B", TsvLayout("sentence1", "sentence2", "score"), ("sentence1", "sentence2"),
                 (), (), "pearson", ("pearson", "spearman")),
    )
}


def get_task(name: str) -> TaskSpec:
    """Look up a task by name, case-insensitively and ignoring '-' ('SST-2' -> sst2)."""
    key = str(name).strip().lower().replace("-", "")
    if key not in TASKS:
        raise LadaError(f"unknown task {name!r}; allowed: {', '.join(TASKS)}")
    return TASKS[key]
