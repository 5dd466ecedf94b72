"""Glue for one job: task data -> tokenized features -> teacher.  Shared by `compress`, `run` and benchmarks.

Every job has three splits: train (teacher and students learn from it), val (held out of train: every
choice is made on it) and dev (scored only for the chosen model, the number a job reports).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import DataConfig, TeacherConfig
from ..data import TaskData, dataset_folder, load_task
from ..train.features import Features, encode
from ..models import check_family, load_tokenizer, quiet_transformers
from .teacher import Teacher, get_teacher


@dataclass(frozen=True)
class Prepared:
    data: TaskData
    tokenizer: object
    train: Features
    dev: Features
    val: Features


def prepare(data_cfg: DataConfig, model_name: str, teacher_path: str | None = None) -> Prepared:
    """Load and tokenize the task with the tokenizer of the teacher folder when given, else of the model."""
    quiet_transformers()
    check_family(teacher_path or model_name)
    data = load_task(data_cfg.task, data_cfg.data_dir, dev_split=data_cfg.dev_split,
                     max_train=data_cfg.max_train, max_dev=data_cfg.max_dev, seed=data_cfg.seed,
                     val_size=data_cfg.val_size, val_file=data_cfg.val_file, val_rule=data_cfg.val_rule,
                     files=data_cfg.files(), dataset=data_cfg.dataset_task())
    tokenizer = load_tokenizer(teacher_path or model_name)
    regression = data.task.is_regression
    return Prepared(data, tokenizer, encode(data.train, tokenizer, data_cfg.max_length, regression),
                    encode(data.dev, tokenizer, data_cfg.max_length, regression),
                    encode(data.val, tokenizer, data_cfg.max_length, regression))


def data_record(prepared: Prepared, data_cfg: DataConfig) -> dict:
    """Where a job's data came from, for its summary: the source, the settings, the dev split scored (resolved:
    the task's default when none was asked for) and the rows of each split.  A task given by files or a dataset
    also records its class names (``labels``, [] for regression) and metric: what rebuilds the task without its
    train rows."""
    data = prepared.data
    if data_cfg.dataset is not None:  # the dataset's own split name, as it spells it
        dev_split = data.task.dev_splits[0]
    else:
        dev_split = (data_cfg.dev_split or data.task.dev_splits[0]).strip().lower()
    task = {}
    if data_cfg.train_file is not None or data_cfg.dataset is not None:
        task = {"labels": list(data.task.label_names), "metric": data.task.main_metric,
                "regression": data.task.is_regression}
    if data_cfg.dataset is not None:  # a folder as an absolute path (an export may run elsewhere); None: a hub id
        folder = dataset_folder(data_cfg.dataset)
        task["dataset_folder"] = None if folder is None else str(folder)
    return {"source": data.source, **asdict(data_cfg), **task, "task": data.task.name, "dev_split": dev_split,
            "val_source": data.val_source,
            "train_rows": len(prepared.train), "val_rows": len(prepared.val), "dev_rows": len(prepared.dev)}


def prepare_teacher(prepared: Prepared, data_cfg: DataConfig, model_name: str, teacher_cfg: TeacherConfig,
                    device, cache_dir: Path | None = None, teacher_path: str | None = None,
                    log: Callable[[str], None] = print) -> Teacher:
    return get_teacher(model_name, prepared.data, data_cfg, teacher_cfg, prepared.train, prepared.dev, device,
                       cache_dir=cache_dir, teacher_path=teacher_path, log=log)
