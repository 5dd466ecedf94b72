"""The teacher: a model fine-tuned on the task, cached so every trial and every later run reuses it.

Cache key = model identity + train-data fingerprint (source, train subset, seed) + max_length + TeacherConfig.
The dev data is not part of the key: a cached teacher met with another dev set (say a different --max-dev)
is evaluated on it and its score for that dev set is added to the cache.  A teacher folder given by the
user is used as is (only evaluated), except that a head whose config names its classes in another order than
the task's is reordered to the task's (``align_labels``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import DataConfig, TeacherConfig
from ..data import TaskData, TaskSpec, main_score
from ..errors import LadaError
from ..train.evaluate import evaluate
from ..train.features import Features, train_batches
from ..io import write_json_atomic
from ..models import load_classifier, load_tokenizer, model_fingerprint
from ..nn.losses import task_loss
from ..precision import autocast
from ..train.schedule import warmup_decay


def default_cache_dir() -> Path:
    return Path(os.environ.get("LADASEARCH_CACHE", Path.home() / ".cache" / "ladasearch"))


@dataclass(frozen=True)
class Teacher:
    model: nn.Module
    path: Path
    metrics: dict[str, float]
    score: float
    cached: bool   # True when loaded from the cache or a given folder, False when fine-tuned now


def teacher_key(model_name: str, data: TaskData, data_cfg: DataConfig, cfg: TeacherConfig) -> str:
    teacher = {k: v for k, v in asdict(cfg).items() if not (k == "precision" and v == "fp32")}  # keys made before
    ident = {"model": model_fingerprint(model_name), "data": data.train_fingerprint, "max_length": data_cfg.max_length,
             "teacher": teacher}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def fine_tune(model: nn.Module, train: Features, cfg: TeacherConfig, regression: bool, device,
              log: Callable[[str], None] = print) -> None:
    """Plain fine-tuning on gold labels: AdamW, 10% warm-up then linear decay."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.01)
    schedule = warmup_decay(optimizer, cfg.steps, 0.1)
    batches = train_batches(train, cfg.batch_size, cfg.seed, device)
    model.train()
    started, running = time.perf_counter(), 0.0
    for step in range(1, cfg.steps + 1):
        batch = next(batches)
        labels = batch.pop("labels")
        with autocast(cfg.precision, device):
            logits = model(**batch).logits
        loss = task_loss(logits.float(), labels, regression)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        running += loss.item()
        if step % max(1, cfg.steps // 10) == 0 or step == cfg.steps:
            log(f"teacher fine-tuning: step {step}/{cfg.steps}, loss {running / step:.4f}, "
                f"{step * cfg.batch_size / (time.perf_counter() - started):.1f} samples/s")
    model.eval()


def name_labels(model: nn.Module, task: TaskSpec) -> nn.Module:
    """Write the task's class names into the model's config (``id2label``/``label2id``): the students are copies of
    the teacher, so the names reach every saved and exported model of the job."""
    if task.label_names and len(task.label_names) == model.config.num_labels:
        model.config.id2label = dict(enumerate(task.label_names))
        model.config.label2id = {name: i for i, name in enumerate(task.label_names)}
    return model


def align_labels(model: nn.Module, task: TaskSpec, where: str) -> nn.Module:
    """``model`` (a given teacher) with its classifier's rows in the task's class order, in place.

    A task's class ids are its class names in sorted order; a fine-tuned model names its own classes in
    ``id2label`` (transformers' default ``LABEL_i`` names none).  Where the names are the task's in another
    order (compared without case), the head's output rows are permuted so that logit i is the task's class i;
    names that are not the task's are refused, since class i would silently mean another class."""
    names = task.label_names
    count = model.config.num_labels
    own = [str((model.config.id2label or {}).get(i, f"LABEL_{i}")) for i in range(count)]
    if task.is_regression or not names or len(names) != count or all(re.fullmatch(r"LABEL_\d+", n) for n in own):
        return model
    key = [n.strip().lower() for n in own]
    wanted = [str(n).strip().lower() for n in names]
    if key == wanted:
        return model
    if sorted(key) != sorted(wanted) or len(set(key)) != count:
        raise LadaError(f"teacher {where} names its classes {own}, the task's are {list(names)}: a logit would "
                        f"score another class than the label it is compared with; give a teacher fine-tuned on "
                        f"these classes (or one whose config names them LABEL_0..LABEL_{count - 1}, taken in the "
                        f"task's order)")
    order = torch.tensor([key.index(n) for n in wanted])
    head = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == count][-1]
    with torch.no_grad():
        head.weight.copy_(head.weight[order].clone())
        if head.bias is not None:
            head.bias.copy_(head.bias[order].clone())
    return model


def get_teacher(model_name: str, data: TaskData, data_cfg: DataConfig, cfg: TeacherConfig, train: Features,
                dev: Features, device, cache_dir: Path | None = None, teacher_path: str | None = None,
                log: Callable[[str], None] = print) -> Teacher:
    """The given teacher folder, the cached fine-tuned teacher, or a newly fine-tuned (and cached) one."""
    task = data.task
    if teacher_path is not None:
        model = load_classifier(teacher_path, task.num_labels, task.is_regression)
        model = name_labels(align_labels(model, task, teacher_path), task).to(device).eval()
        metrics = evaluate(model, dev, task, device=device)
        return Teacher(model, Path(teacher_path), metrics, main_score(task, metrics), cached=True)

    folder = Path(cache_dir or default_cache_dir()) / "teachers" / teacher_key(model_name, data, data_cfg, cfg)
    if (folder / "teacher.json").is_file():
        info = json.loads((folder / "teacher.json").read_text())
        model = name_labels(load_classifier(str(folder), task.num_labels, task.is_regression), task).to(device).eval()
        scores = info.setdefault("dev_scores", {})
        if data.fingerprint not in scores:  # first met with this dev set: evaluate once, remember
            metrics = evaluate(model, dev, task, device=device)
            scores[data.fingerprint] = {"metrics": metrics, "score": main_score(task, metrics)}
            write_json_atomic(folder / "teacher.json", info)
        metrics, score = scores[data.fingerprint]["metrics"], scores[data.fingerprint]["score"]
        log(f"teacher: cached at {folder} (dev {task.main_metric} {score:.4f})")
        return Teacher(model, folder, metrics, score, cached=True)

    # seeded before the model is made: its new classifier head is random, and a resume must get the same teacher
    torch.manual_seed(cfg.seed)
    model = name_labels(load_classifier(model_name, task.num_labels, task.is_regression), task).to(device)
    log(f"teacher: fine-tuning {model_name} on {task.name} for {cfg.steps} steps (cached for later runs)")
    fine_tune(model, train, cfg, task.is_regression, device, log)
    metrics = evaluate(model, dev, task, device=device)
    score = main_score(task, metrics)
    partial = folder.with_name(folder.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    load_tokenizer(model_name).save_pretrained(partial)
    write_json_atomic(partial / "teacher.json", {
        "model": model_name, "task": task.name, "data": data.source, "config": asdict(cfg),
        "max_length": data_cfg.max_length, "dev_scores": {data.fingerprint: {"metrics": metrics, "score": score}}})
    folder.parent.mkdir(parents=True, exist_ok=True)
    if folder.exists():  # another process finished first; keep theirs
        shutil.rmtree(partial, ignore_errors=True)
    else:
        partial.rename(folder)
    log(f"teacher: dev {task.main_metric} {score:.4f}, saved to {folder}")
    return Teacher(model, folder, metrics, score, cached=False)
