"""Frozen configuration dataclasses.  Every value is checked on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from .compress.registry import get_factorizer, get_pruning_score
from .compress.unit_scores import get_unit_score
from .data.dataset import DEFAULT_DEV_SPLIT, DEFAULT_TRAIN_SPLIT, DatasetTask
from .data.columns import check_metric
from .data.files import FileTask
from .data.validation import VAL_RULES, check_val_size
from .errors import LadaError
from .precision import PRECISIONS
from .registry import canonical


def _check_precision(owner: str, value) -> None:
    if value not in PRECISIONS:
        raise LadaError(f"{owner}.precision must be one of {', '.join(PRECISIONS)}, got {value!r}")


def _positive(owner: str, name: str, value, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not math.isnan(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise LadaError(f"{owner}.{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def _check_warmup(owner: str, warmup) -> None:
    if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or not 0 <= warmup <= 0.5:
        raise LadaError(f"{owner}.warmup must be a share of the steps in [0, 0.5], got {warmup!r}")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the distillation terms (see ``ladasearch.distill``)."""

    embedding: float = 1.0
    attention: float = 1.0
    hidden: float = 1.0
    logits: float = 1.0

    def __post_init__(self):
        for f in fields(self):
            _positive("loss_weights", f.name, getattr(self, f.name), allow_zero=True)


@dataclass(frozen=True)
class TrainConfig:
    """How a student is trained between and after the compression rounds."""

    rounds: int = 4               # compression steps; the last one lands on the target size
    steps_per_round: int = 100
    final_steps: int = 100        # distillation at the target size, after the last round
    batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    temperature: float = 1.0
    loss_weights: LossWeights = field(default_factory=LossWeights)
    distill: bool = True          # False: the "hybrid without distillation" ablation (gold labels only)
    max_grad_norm: float = 1.0
    eval_batch_size: int = 64
    seed: int = 0
    precision: str = "fp32"       # "bf16": forward passes under autocast (see ladasearch.precision)
    warmup: float = 0.1           # share of each training phase's steps the learning rate ramps up (``schedule``)

    def __post_init__(self):
        _check_precision("train", self.precision)
        _check_warmup("train", self.warmup)
        for name in ("rounds", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise LadaError(f"train.{name} must be an integer >= 1, got {value!r}")
        for name in ("steps_per_round", "final_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise LadaError(f"train.{name} must be an integer >= 0, got {value!r}")
        for name in ("learning_rate", "temperature", "max_grad_norm"):
            _positive("train", name, getattr(self, name))
        _positive("train", "weight_decay", self.weight_decay, allow_zero=True)

    @property
    def total_steps(self) -> int:
        """Steps a run of these settings trains when nothing stops it: its rounds, then its final distillation."""
        return self.rounds * self.steps_per_round + self.final_steps


FINAL_UNITS = ("steps", "epochs")


@dataclass(frozen=True)
class FinalBudget:
    """The training the chosen student gets after the search: distillation at its target size from the
    teacher, on up to ``max_rows`` train rows (the search's subset bounds only the trials), with warm-up and
    decay over the whole budget, scored on validation every ``eval_every`` steps, the best checkpoint kept.

    ``amount`` of ``unit`` (steps, or epochs over the rows used); 0 turns the stage off (the chosen trial's
    own checkpoint is the result, as before the final budget existed).  ``reclaim`` adds the trial steps the
    scheduler's early stops left unspent, so that a search spends a fixed total of training steps: ASHA's savings
    go to the model that ships instead of being lost.
    """

    amount: float = 0
    unit: str = "steps"
    max_rows: int | None = None       # None: as many as the budget reads once (steps x batch), all for epochs
    eval_every: int | None = None     # None: a tenth of the budget (at least 10 steps)
    learning_rate: float | None = None  # None: the trials' learning rate
    warmup: float = 0.06
    reclaim: bool = False

    def __post_init__(self):
        if self.unit not in FINAL_UNITS:
            raise LadaError(f"final budget unit must be one of {', '.join(FINAL_UNITS)}, got {self.unit!r}")
        if isinstance(self.amount, bool) or not isinstance(self.amount, (int, float)) or math.isnan(self.amount) \
                or self.amount < 0 or (self.unit == "steps" and self.amount != int(self.amount)):
            raise LadaError(f"final budget must be a whole number of steps or a number of epochs >= 0, "
                            f"got {self.amount!r} {self.unit}")
        for name in ("max_rows", "eval_every"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise LadaError(f"final.{name} must be an integer >= 1 or unset, got {value!r}")
        if self.learning_rate is not None:
            _positive("final", "learning_rate", self.learning_rate)
        _check_warmup("final", self.warmup)
        if not isinstance(self.reclaim, bool):
            raise LadaError(f"final.reclaim must be true or false, got {self.reclaim!r}")

    @classmethod
    def parse(cls, text: str, **options) -> FinalBudget:
        """'1000', '1000steps', '2epochs', '0.5 epochs', '0' (off)."""
        raw = str(text).strip().lower()
        number = raw.rstrip("abcdefghijklmnopqrstuvwxyz ")
        unit = raw[len(number):].strip() or "steps"
        unit = {"step": "steps", "epoch": "epochs"}.get(unit, unit)
        try:
            amount = float(number)
        except ValueError:
            raise LadaError(f"final budget {text!r} must be a number of steps or epochs, e.g. 1000, 1000steps, "
                            f"2epochs, or 0 for none") from None
        return cls(amount=int(amount) if unit == "steps" and amount == int(amount) else amount, unit=unit, **options)

    @property
    def enabled(self) -> bool:
        return self.amount > 0

    def rows_needed(self, batch_size: int, saved: int = 0) -> int | None:
        """Train rows the budget reads (None: all there are)."""
        if self.unit == "epochs":
            return self.max_rows
        needed = self.steps(0, batch_size, saved) * batch_size
        return needed if self.max_rows is None else min(needed, self.max_rows)

    def steps(self, rows: int, batch_size: int, saved: int = 0) -> int:
        """Steps of the final distillation; ``saved``: the trial steps the scheduler left unspent (added when the
        budget reclaims them)."""
        extra = saved if self.reclaim else 0
        if self.unit == "steps":
            return int(self.amount) + extra
        return max(1, math.ceil(self.amount * (rows // min(batch_size, rows)))) + extra

    def eval_interval(self, steps: int) -> int:
        return min(self.eval_every or max(10, steps // 10), max(steps, 1))

    def describe(self) -> str:
        if not self.enabled:
            return "none"
        return f"{self.amount:g} {self.unit}" + (" + the trial steps saved" if self.reclaim else "")


@dataclass(frozen=True)
class TeacherConfig:
    """Fine-tuning of the teacher when none is given."""

    steps: int = 300
    batch_size: int = 32
    learning_rate: float = 5e-5
    seed: int = 0
    precision: str = "fp32"       # "bf16": forward passes under autocast (see ladasearch.precision)

    def __post_init__(self):
        _check_precision("teacher", self.precision)
        if not isinstance(self.steps, int) or self.steps < 0:
            raise LadaError(f"teacher.steps must be an integer >= 0, got {self.steps!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise LadaError(f"teacher.batch_size must be an integer >= 1, got {self.batch_size!r}")
        _positive("teacher", "learning_rate", self.learning_rate)


@dataclass(frozen=True)
class DataConfig:
    """Which task data, how much of it, and how it is tokenized.

    ``task`` is a GLUE name, or with ``train_file`` the free name of a task given by files (``data.files``), or
    with ``dataset`` that of a task given by a dataset id (``data.dataset``: ``dev_split`` then names the
    dataset's split scored as dev); ``labels`` are such a task's class names as a job recorded them (None: read
    from its train rows).
    """

    task: str
    data_dir: str | None = None
    max_length: int = 64
    max_train: int | None = None
    max_dev: int | None = None
    dev_split: str | None = None     # a GLUE task's (MNLI's two), or a dataset's split name (None: validation)
    seed: int = 0
    val_size: float | int = 0.1      # held out of train for every choice: a fraction (capped) or a row count
    val_file: str | None = None      # a TSV of validation rows instead (train is then used whole)
    val_rule: str | None = None      # how rows are carved (``data.validation.VAL_RULES``); None: the task's own
    train_file: str | None = None    # a task given by files: CSV, TSV, JSON, JSON Lines or Parquet
    dev_file: str | None = None
    text_column: str | None = None   # None: "text" (tasks given by files or a dataset, as are the four below)
    text_pair_column: str | None = None
    label_column: str | None = None  # None: "label"
    metric: str | None = None        # None: accuracy, or pearson for regression
    labels: tuple[str, ...] | None = None
    dataset: str | None = None       # a task given by a dataset: a hub id or a local folder in the hub layout
    dataset_config: str | None = None
    train_split: str | None = None   # None: train (set so with a dataset)
    val_split: str | None = None     # the dataset's validation rows (train is then used whole)

    def __post_init__(self):
        object.__setattr__(self, "metric", check_metric(self.metric))
        if self.labels is not None:  # a list when read back from JSON
            object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        if self.train_file is not None and self.dataset is not None:
            raise LadaError("data.train_file (--train-file) and data.dataset (--dataset) both give the task's rows; "
                            "give one")
        if self.dataset is None:
            given = [name for name in ("dataset_config", "train_split", "val_split") if getattr(self, name) is not None]
            if given:
                option = "--" + given[0].replace("_", "-")
                raise LadaError(f"data.{given[0]} ({option}) is for a task given by a dataset; give --dataset too")
        if self.train_file is None and self.dataset is None:
            given = [name for name in ("dev_file", "text_column", "text_pair_column", "label_column", "metric",
                                       "labels") if getattr(self, name) is not None]
            if given:
                option = "--" + given[0].replace("_", "-")
                raise LadaError(f"data.{given[0]} ({option}) is for a task given by files or a dataset; give "
                                f"--train-file or --dataset too, or leave it unset for the GLUE task {self.task!r}")
        elif self.train_file is not None and self.dev_file is None:
            raise LadaError("a task given by --train-file needs --dev-file (the rows the chosen model is scored on)")
        if self.dataset is not None:
            self._check_dataset()
        check_val_size(self.val_size)
        if self.val_rule is not None and self.val_rule not in VAL_RULES:
            raise LadaError(f"data.val_rule must be one of {', '.join(VAL_RULES)} or unset (the task's rule), "
                            f"got {self.val_rule!r}")
        if not isinstance(self.max_length, int) or not 8 <= self.max_length <= 512:
            raise LadaError(f"data.max_length must be an integer in [8, 512], got {self.max_length!r}")
        for name in ("max_train", "max_dev"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise LadaError(f"data.{name} must be an integer >= 1 or unset, got {value!r}")

    def files(self) -> FileTask | None:
        """The file task these settings name; None for a GLUE task."""
        if self.train_file is None:
            return None
        return FileTask(self.task, self.train_file, self.dev_file, self.text_column or "text", self.text_pair_column,
                        self.label_column or "label", self.metric, self.labels)

    def dataset_task(self) -> DatasetTask | None:
        """The dataset task these settings name; None for a GLUE task or one given by files."""
        if self.dataset is None:
            return None
        return DatasetTask(self.task, self.dataset, self.dataset_config, self.train_split,
                           self.dev_split or DEFAULT_DEV_SPLIT, self.val_split, self.text_column or "text",
                           self.text_pair_column, self.label_column or "label", self.metric, self.labels)

    def _check_dataset(self) -> None:
        for name, option, allowed in (("dev_file", "--dev-file", "its dev rows are the split --dev-split names"),
                                      ("val_file", "--val-file", "give --val-split, a split of the dataset"),
                                      ("data_dir", "--data-dir", "a local dataset folder goes in --dataset")):
            if getattr(self, name) is not None:
                raise LadaError(f"data.{name} ({option}) is not for a task given by a dataset: {allowed}")
        if self.train_split is None:
            object.__setattr__(self, "train_split", DEFAULT_TRAIN_SPLIT)
        self.dataset_task()  # the id, config and split names are checked by the task they build


@dataclass(frozen=True)
class CompressionConfig:
    """Which plug-ins compress the matrices (``ladasearch.compress.registry``), and how much data they may read.

    ``calibration_batches`` train batches go through the teacher once when the factorizer or the pruning
    score needs statistics (activations, gradients); plain SVD and magnitude read none.
    """

    factorizer: str = "svd"
    prune_score: str = "magnitude"
    calibration_batches: int = 16
    structure_score: str = "taylor"   # how heads and FFN neurons are ranked when ratios.structure < 1
    structure_batches: int = 8        # train batches the unit scores read each round

    def __post_init__(self):
        for name, build in (("factorizer", get_factorizer), ("prune_score", get_pruning_score),
                            ("structure_score", get_unit_score)):
            build(getattr(self, name))  # LadaError naming the registered ones, or the arguments refused
            # one spelling of a spec with arguments, so configs, Optuna choices and MLflow params compare equal
            object.__setattr__(self, name, canonical(getattr(self, name)))
        for name in ("calibration_batches", "structure_batches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LadaError(f"compression.{name} must be an integer >= 1, got {value!r}")
