"""Library entry point behind `ladasearch compress`: one compression with given (or solved) ratios."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .compress import Ratios, count_parameters, paper_ratios, parse_target, solve
from .config import DataConfig, TeacherConfig, TrainConfig
from .models import load_classifier, pick_device
from .pipeline import prepare, prepare_teacher
from .serialize import save_compressed
from .trial import compress_model


def round_line(row: dict, rounds: int, metric: str) -> str:
    label = "final" if row["round"] > rounds else f"round {row['round']}/{rounds}"
    return (f"{label}: dev {metric} {row['score']:.4f}, {row['achieved_factor']:.2f}x "
            f"({row['params']:,} params), loss {row.get('loss', float('nan')):.4f}, {row['seconds']:.1f}s")


def resolve_ratios(model_name: str, num_labels: int, regression: bool, target: float, *, method: str = "hybrid",
                   embedding: float | None = None, svd: float | None = None, weight: float | None = None,
                   paper: bool = False) -> Ratios:
    """Solve the ratios on the architecture alone, so a bad target fails before any training."""
    counts = count_parameters(load_classifier(model_name, num_labels, regression))
    if paper:
        return paper_ratios(counts, target)
    return solve(counts, target, method=method, embedding=embedding, svd=svd, weight=weight)


def compress_once(data_cfg: DataConfig, model: str, teacher_cfg: TeacherConfig, train_cfg: TrainConfig,
                  target: str | float, *, teacher_path: str | None = None, method: str = "hybrid",
                  embedding: float | None = None, svd: float | None = None, weight: float | None = None,
                  paper: bool = False, out: str | Path | None = None, device: str = "auto",
                  cache_dir: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Fine-tune (or reuse) the teacher, compress it with the given ratios, save model + summary.json."""
    factor = parse_target(target)
    dev = pick_device(device)
    prepared = prepare(data_cfg, model, teacher_path)
    task = prepared.data.task
    ratios = resolve_ratios(teacher_path or model, task.num_labels, task.is_regression, factor, method=method,
                            embedding=embedding, svd=svd, weight=weight, paper=paper)
    log(f"ratios: embedding {ratios.embedding:.4f}, svd {ratios.svd:.4f}, weight {ratios.weight:.4f} "
        f"({ratios.method}) for {factor:g}x")
    teacher = prepare_teacher(prepared, data_cfg, model, teacher_cfg, dev, Path(cache_dir) if cache_dir else None,
                              teacher_path, log)
    result = compress_model(teacher.model, prepared.train, prepared.dev, task, ratios, train_cfg, dev,
                            callback=lambda row: log(round_line(row, train_cfg.rounds, task.main_metric)))
    summary = {**result.summary(), "task": task.name, "main_metric": task.main_metric, "target": factor,
               "model": model, "teacher": str(teacher.path), "teacher_score": teacher.score,
               "teacher_metrics": teacher.metrics, "data": prepared.data.source, "distill": train_cfg.distill}
    if out is not None:
        out = Path(out)
        save_compressed(result.student, out, summary, prepared.tokenizer)
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary
