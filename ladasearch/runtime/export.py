"""`ladasearch export-model`: a compressed model (a folder or a search's best) to a deployable folder.

The folder is written in a scratch folder beside ``out`` and moved into place only when everything
passed (the logits check, the int8 gate), so a refused export leaves nothing behind.  It holds the
format's files (see ``formats``), ``README.md`` (the model card) and ``ladasearch_export.json`` (the
card's numbers, for scripts).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ..config import DataConfig
from ..errors import LadaError
from ..io import refuse_source_overlap, umask
from ..models import load_classifier
from ..serialize import load_compressed
from ..summary import RatioRecord, TrialSummary, own_task
from .card import TEACHER_METHOD, method_as_built, student_dev_score, write_card
from .footprint import file_bytes
from .formats import Timed, Written, get_format
from .hf import deploy_model
from .inputs import INPUT_NAMES, input_names, max_length
from .latency import Latency
from .memory import DeploymentMemory, deployment_memory
from .scoring import load_dev
from .source import open_source, source_tokenizer
from .timing import machine_facts

RECORD_FILE = "ladasearch_export.json"


@dataclass(frozen=True)
class DevData:
    """Where the int8 gate reads the task's dev split (the task itself comes from the model's record)."""

    data_dir: str | None = None
    dev_split: str | None = None         # a GLUE task's (MNLI), or a dataset task's split instead of the recorded
    max_dev: int | None = 1000
    max_length: int = 128
    seed: int = 0
    dev_file: str | None = None          # a task given by files: its dev rows instead of the recorded file
    text_column: str | None = None       # ... and columns instead of the recorded ones (files or dataset)
    text_pair_column: str | None = None
    label_column: str | None = None
    dataset: str | None = None           # a task given by a dataset: read from this one instead (a moved folder)

    def for_task(self, task: str) -> DataConfig:
        return DataConfig(task=task, data_dir=self.data_dir, max_length=self.max_length, max_dev=self.max_dev,
                          dev_split=self.dev_split, seed=self.seed)

    def for_summary(self, summary: TrialSummary) -> DataConfig:
        """The dev data of the model ``summary`` records: its GLUE task, or its task given by files or a dataset
        rebuilt from the recorded files or dataset, columns, metric and class names (the ids the model was trained
        on)."""
        data = summary.data or {}
        how = own_task(data)
        if how != "files" and self.dev_file is not None:
            raise LadaError(f"--dev-file is for a model trained on a task given by files; {summary.task} is "
                            + ("given by a dataset (give --dataset to read another)" if how else
                               "a GLUE task (its dev split comes from --data-dir or the hub)"))
        if how != "dataset" and self.dataset is not None:
            raise LadaError(f"--dataset is for a model trained on a task given by a dataset; {summary.task} is "
                            + ("given by files (give --dev-file to read another)" if how else
                               "a GLUE task (its dev split comes from --data-dir or the hub)"))
        if how is None:
            return self.for_task(summary.task)
        if data.get("labels") is None:
            raise LadaError(f"the model's record of task {summary.task} has no class names; it was made before "
                            f"tasks given by files were recorded")

        def pick(name: str):
            return getattr(self, name) if getattr(self, name) is not None else data.get(name)

        common = dict(task=summary.task, max_length=self.max_length, max_dev=self.max_dev, seed=self.seed,
                      text_column=pick("text_column"), text_pair_column=pick("text_pair_column"),
                      label_column=pick("label_column"), metric=data.get("metric"), labels=tuple(data["labels"]))
        if how == "files":
            return DataConfig(train_file=data["train_file"], dev_file=pick("dev_file"), **common)
        # a folder by the absolute path the job recorded: the export may run from another folder
        dataset = self.dataset or data.get("dataset_folder") or data["dataset"]
        return DataConfig(dataset=dataset, dataset_config=data.get("dataset_config"),
                          train_split=data.get("train_split"), dev_split=pick("dev_split"), **common)


@dataclass(frozen=True)
class ExportSettings:
    max_drop: float = 1.0              # points of the main metric int8 may lose against fp32
    dev: DevData = field(default_factory=DevData)
    timed: Timed = field(default_factory=Timed)
    measure: bool = True               # latency and deployment memory on the card
    opset: int = 17
    overwrite: bool = False
    tracking_uri: str | None = None    # where a search SOURCE is looked up
    trust_unchecked: bool = False      # load a folder saved without checksums (``integrity``)
    teacher: bool = False              # export SOURCE's teacher (the dense baseline) instead of the student

    def __post_init__(self):
        if self.max_drop != self.max_drop:
            raise LadaError("max_drop must be a number of points, got nan")
        if self.opset < 14:
            raise LadaError(f"opset must be >= 14 (scaled-dot-product attention), got {self.opset}")


@dataclass(frozen=True)
class ExportRecord:
    """What one export wrote and measured; the model card is rendered from it."""

    format: str
    folder: Path
    origin: str
    summary: TrialSummary
    labels: tuple[str, ...]            # class i's name (id2label)
    written: Written
    file_bytes: int
    teacher_file_bytes: int | None
    latency: tuple[Latency, ...] = ()
    memory: DeploymentMemory | None = None
    model_type: str = "ladasearch_bert"   # the exported config's (the source family's, prefixed)
    inputs: tuple[str, ...] = INPUT_NAMES  # what the model reads (no token_type_ids without segment embeddings)
    machine: dict | None = None            # where the latency was measured (``timing.machine_facts``)
    role: str = "student"                  # or "teacher": the dense model SOURCE was compressed from

    def to_json(self) -> dict:
        w = self.written
        return {"format": self.format, "role": self.role, "runtime": w.runtime, "model_file": w.model_file,
                "opset": w.opset,
                "model_type": self.model_type, "inputs": list(self.inputs),
                "origin": self.origin, "task": self.summary.task, "main_metric": self.summary.main_metric,
                "method": self.summary.ratios.method, "method_as_built": method_as_built(self.summary),
                "score": self.summary.score, "score_split": self.summary.score_split,
                "score_rows": (self.summary.data or {}).get(f"{self.summary.score_split}_rows"),
                "dev_score": student_dev_score(self.summary), "dev_rows": (self.summary.data or {}).get("dev_rows"),
                "teacher_score": self.summary.teacher_score,
                "achieved_factor": self.summary.achieved_factor, "labels": list(self.labels),
                "file_bytes": self.file_bytes,
                "teacher_file_bytes": self.teacher_file_bytes,
                "onnx_max_abs_diff": w.onnx_check.worst if w.onnx_check else None,
                "int8_max_abs_diff": w.quantized_check.worst if w.quantized_check else None,
                "int8_gate": w.gate.to_json() if w.gate else None,
                "packed": w.packed.to_json() if w.packed else None,
                "latency": [x.to_json() for x in self.latency], "machine": self.machine,
                "memory": self.memory.to_json() if self.memory else None}


def _teacher_file_bytes(summary: TrialSummary) -> int | None:
    if not summary.teacher or not Path(summary.teacher).is_dir():
        return None
    try:
        return file_bytes(summary.teacher)
    except LadaError:
        return None


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise LadaError(f"--out {str(out)!r} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise LadaError(f"--out {str(out)!r} is not empty; give a new folder or --overwrite")
    parent = Path(os.path.abspath(out)).parent
    try:  # the staging folder is made beside --out: find out now, before the model is loaded, that it can be
        parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=".probe.", dir=parent))
    except OSError as exc:
        raise LadaError(f"--out {str(out)!r} cannot be written: {exc.strerror or exc}"
                        + (f" ({exc.filename})" if exc.filename else "")) from None


def _move_into(staging: Path, out: Path) -> None:
    """Put the finished ``staging`` folder at ``out``; an existing ``out`` (--overwrite) is replaced as a whole.

    Replaced, not merged into: a file of an earlier export (model.onnx beside a new hf export, an old card)
    would otherwise ship with the new one.  The old folder is renamed away before the new one is renamed in
    and removed only then, so a failed rename puts the old export back."""
    for item in staging.iterdir():  # some writers (safetensors through a temporary file) leave files private
        if item.is_file():
            item.chmod(0o666 & ~umask())
    if not out.exists():
        staging.replace(out)
        return
    # a fresh name for the old folder (a symlinked --out moves as the link; what it points at is kept)
    holder = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    old = holder / out.name
    out.replace(old)
    try:
        staging.replace(out)
    except OSError:
        old.replace(out)
        raise
    shutil.rmtree(holder, ignore_errors=True)


def _teacher_of(src) -> tuple[nn.Module, TrialSummary]:
    """The dense teacher SOURCE was compressed from, and its record in a summary's shape (factor 1, scored on
    dev): what the card and the export record report for the baseline."""
    s = src.summary
    if not s.teacher or not (Path(s.teacher) / "config.json").is_file():
        raise LadaError(f"{src.origin} records its teacher at {s.teacher!r}, which is not a model folder here: "
                        f"--teacher exports the fine-tuned teacher a model was compressed from")
    model = load_classifier(s.teacher)
    counts = s.teacher_params
    dense = RatioRecord(TEACHER_METHOD, 1.0, 1.0, 1.0)
    summary = TrialSummary(task=s.task, main_metric=s.main_metric, ratios=dense, achieved_factor=1.0,
                           teacher_params=counts, student_params=counts, matrices=(), score=s.teacher_score,
                           metrics=dict(s.teacher_metrics), history=(), score_split="dev", model=s.model,
                           teacher=s.teacher, teacher_score=s.teacher_score, teacher_metrics=dict(s.teacher_metrics),
                           data=dict(s.data or {}), dev_score=s.teacher_score, dev_metrics=dict(s.teacher_metrics))
    return model, summary


def export_model(source: str | Path, fmt: str, out: str | Path, settings: ExportSettings = ExportSettings(),
                 log=print) -> ExportRecord:
    """Write SOURCE (a compress folder, a search name or parent run id) as ``fmt`` into the folder ``out``."""

    form = get_format(fmt)
    out = Path(out)
    _check_out(out, settings.overwrite)
    where = Path(os.path.abspath(out))  # staging beside it, never inside it (--out .)
    with open_source(source, settings.tracking_uri) as src:
        summary = src.summary
        # before loading the model: the export (with --overwrite, a replacement of the whole folder) must not
        # land on the model it reads, nor on the teacher whose tokenizer and size the card may read
        refuse_source_overlap(out, (src.folder, summary.teacher))
        tokenizer = source_tokenizer(src)
        if settings.teacher:
            model, summary = _teacher_of(src)
            log(f"export-model: the teacher of {src.origin} ({summary.task}, dense, {summary.teacher}) as "
                f"{form.name}")
        else:
            log(f"export-model: {src.origin} ({summary.task}, {summary.achieved_factor:.2f}x) as {form.name}")
            model = load_compressed(src.folder, keep_masks=False, trust_unchecked=settings.trust_unchecked)
        exported = deploy_model(model, summary)
        dev = load_dev(settings.dev.for_summary(summary), tokenizer) if form.needs_dev else None
        where.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{where.name}.", dir=where.parent))
        staging.chmod(0o777 & ~umask())  # mkdtemp makes it private; the export is an ordinary folder
        try:
            written = form.write(exported, staging, tokenizer, dev=dev, max_drop=settings.max_drop,
                                 opset=settings.opset, threads=settings.timed.threads)
            if written.gate is not None:
                g = written.gate
                log(f"int8 gate: dev {g.metric} {g.before:.4f} (fp32) -> {g.after:.4f} (int8) on {g.rows} rows, "
                    f"drop {g.drop:.2f} points (allowed {g.max_drop:g})")
            latency, memory = (), None
            if settings.measure:
                latency = form.latency(exported, staging, written, settings.timed)
                memory = deployment_memory(staging, form.runtime, model_file=written.model_file,
                                           batch=max(settings.timed.batches),
                                           seq_len=max_length(exported, settings.timed.seq_len),
                                           threads=settings.timed.threads)
            labels = tuple(exported.config.id2label[i] for i in range(exported.config.num_labels))
            record = ExportRecord(form.name, out, src.origin, summary, labels, written,
                                  (staging / written.model_file).stat().st_size, _teacher_file_bytes(summary),
                                  latency, memory, exported.config.model_type, input_names(exported),
                                  machine_facts() if settings.measure else None,
                                  "teacher" if settings.teacher else "student")
            write_card(record, staging)
            (staging / RECORD_FILE).write_text(json.dumps(record.to_json(), indent=2, default=float) + "\n")
            _move_into(staging, where)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return record
