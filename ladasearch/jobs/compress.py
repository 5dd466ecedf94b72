"""One compression job, the library side of `ladasearch compress`: solve the ratios on the architecture,
get the teacher and the calibration statistics its plug-ins read (cached, ``calibration_cache``), run the
LadaBERT loop (each round scored on the validation split), score the final student once on dev, save the
model and its ``summary.json``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .calibration_cache import CalibrationRequest, cached_statistics
from ..compress import Ratios, count_parameters, make_plan, paper_ratios, parse_target, solve
from ..compress.calibration import plugin_needs
from ..compress.structure import Widths
from ..config import CompressionConfig, DataConfig, TeacherConfig, TrainConfig
from ..data import main_score
from ..errors import LadaError
from ..train.evaluate import evaluate
from ..io import refuse_source_overlap, write_json_atomic
from ..train.ladabert import LoopHooks, compress_model
from ..models import load_classifier, pick_device
from .pipeline import data_record, prepare, prepare_teacher
from ..serialize import save_compressed
from ..summary import RoundRecord, TrialSummary


def round_line(record: RoundRecord, rounds: int, metric: str) -> str:
    label = "final" if record.round > rounds else f"round {record.round}/{rounds}"
    return (f"{label}: {record.split} {metric} {record.score:.4f}, {record.achieved_factor:.2f}x "
            f"({record.params.total:,} params), loss {record.losses.get('loss', float('nan')):.4f}, "
            f"{record.seconds:.1f}s")


def resolve_ratios(model_name: str, num_labels: int, regression: bool, target: float, *, method: str = "hybrid",
                   embedding: float | None = None, svd: float | None = None, weight: float | None = None,
                   paper: bool = False, structure: float = 1.0) -> Ratios:
    """Solve the ratios on the architecture alone, so a bad target fails before any training."""
    if paper and structure != 1.0:
        raise LadaError(f"--paper-ratios removes no heads or neurons (the paper's recipe); drop --structured-ratio "
                        f"{structure:g} or --paper-ratios")
    model = load_classifier(model_name, num_labels, regression)
    counts = count_parameters(model)
    if paper:
        return paper_ratios(counts, target)
    widths = Widths.of(model.config) if structure != 1.0 else None  # exact counts of what the removal leaves
    return solve(counts, target, method=method, embedding=embedding, svd=svd, weight=weight, structure=structure,
                 widths=widths)


def compress_once(data_cfg: DataConfig, model: str, teacher_cfg: TeacherConfig, train_cfg: TrainConfig,
                  target: str | float, *, compression: CompressionConfig = CompressionConfig(),
                  teacher_path: str | None = None, method: str = "hybrid", embedding: float | None = None,
                  svd: float | None = None, weight: float | None = None, paper: bool = False, structure: float = 1.0,
                  out: str | Path | None = None, device: str = "auto", cache_dir: str | None = None,
                  log: Callable[[str], None] = print) -> TrialSummary:
    """Fine-tune (or reuse) the teacher, compress it with the given ratios, save model + summary.json."""
    if out is not None:  # before any loading: the saved student must not land on the teacher or model it reads
        refuse_source_overlap(out, (teacher_path, model))
    factor = parse_target(target)
    dev = pick_device(device)
    prepared = prepare(data_cfg, model, teacher_path)
    task = prepared.data.task
    ratios = resolve_ratios(teacher_path or model, task.num_labels, task.is_regression, factor, method=method,
                            embedding=embedding, svd=svd, weight=weight, paper=paper, structure=structure)
    kept = f", structure {ratios.structure:.4f}" if ratios.structure < 1 else ""
    log(f"ratios: embedding {ratios.embedding:.4f}, svd {ratios.svd:.4f}, weight {ratios.weight:.4f}{kept} "
        f"({ratios.method}) for {factor:g}x")
    teacher = prepare_teacher(prepared, data_cfg, model, teacher_cfg, dev, Path(cache_dir) if cache_dir else None,
                              teacher_path, log)
    # gathered once per teacher and data (cached beside the teacher), not by every run
    needs = plugin_needs((compression.factorizer,), (compression.prune_score,), make_plan(teacher.model, ratios))
    request = CalibrationRequest(needs, compression.calibration_batches, train_cfg.batch_size, data_cfg.max_length)
    stats = cached_statistics(teacher, prepared, request, dev, cache_dir, log)
    hooks = LoopHooks(after_eval=lambda record: log(round_line(record, train_cfg.rounds, task.main_metric)))
    result = compress_model(teacher.model, prepared.train, prepared.val, task, ratios, train_cfg, dev,
                            compression=compression, hooks=hooks, stats=stats, eval_split="val")
    dev_metrics = evaluate(result.student, prepared.dev, task, train_cfg.eval_batch_size, dev)
    summary = result.summary(target=factor, model=model, teacher=str(teacher.path), teacher_score=teacher.score,
                             teacher_metrics=teacher.metrics, data=data_record(prepared, data_cfg),
                             dev_score=main_score(task, dev_metrics), dev_metrics=dev_metrics)
    if out is not None:
        out = Path(out)
        save_compressed(result.student, out, summary, prepared.tokenizer)
        write_json_atomic(out / "summary.json", summary.to_json())
    return summary
