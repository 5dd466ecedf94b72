"""Distillation throughput with the teacher's outputs recomputed, written to the cache, and read back from it,
beside fine-tuning the same student on the labels (no teacher at all).

A search's trials draw the same batches in the same order, so from the second trial on every batch is a
cache hit (``ladasearch.train.teacher_outputs``).  Issue 20's aim: distillation at least 0.95x the fine-tuning
throughput of the same student.

    python benchmarks/teacher_cache.py --steps 16 --repeats 2

The student is the teacher compressed to ``--target`` (hybrid, ``--structured`` share of heads and neurons
kept) with one training step, so only the training step is timed.  Modes alternate, ``--repeats`` times,
and each reports its median samples/s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import _common as C


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_data_args(p, max_train=2000, max_dev=64, threads=1)
    p.add_argument("--steps", type=int, default=16, help="training steps timed per mode and repeat")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--target", type=float, default=5.0)
    p.add_argument("--structured", type=float, default=0.5, help="share of heads and FFN neurons kept (1: none)")
    p.add_argument("--out-dir", default=None)
    return p.parse_args(argv)


def student_of(teacher, prepared, task, args):
    from ladasearch.compress import count_parameters
    from ladasearch.compress.budget import split_ratios
    from ladasearch.config import TrainConfig
    from ladasearch.train.ladabert import compress_model

    counts = count_parameters(teacher)
    widths = None
    if args.structured < 1:
        from ladasearch.compress.structure import Widths

        widths = Widths.of(teacher.config)
    ratios = split_ratios(counts, args.target, 0.2, 0.5, "hybrid", args.structured, widths)
    cfg = TrainConfig(rounds=1, steps_per_round=1, final_steps=0, batch_size=args.batch_size, eval_batch_size=64)
    return compress_model(teacher, prepared.train, prepared.dev, task, ratios, cfg).student, ratios


def time_mode(student, teacher, prepared, task, args, mode: str, cache_dir: Path | None) -> float:
    import copy

    from ladasearch.compress import get_pruning_score
    from ladasearch.config import TrainConfig
    from ladasearch.train.features import train_batches
    from ladasearch.train.ladabert import LoopHooks, TrainingPhase, train_steps
    from ladasearch.train.teacher_outputs import TeacherCache

    cfg = TrainConfig(batch_size=args.batch_size, distill=mode != "fine-tune")
    outputs = TeacherCache(cache_dir).bind(teacher) if mode.startswith("cache") else None
    phase = TrainingPhase(copy.deepcopy(student), teacher, cfg, task, LoopHooks(), get_pruning_score("magnitude"),
                          outputs)
    batches = train_batches(prepared.train, cfg.batch_size, cfg.seed)
    started = time.perf_counter()
    train_steps(phase, batches, args.steps, 0)
    seconds = time.perf_counter() - started
    if outputs is not None:
        expected = (0, args.steps) if mode == "cache (writing)" else (args.steps, 0)
        assert (outputs.hits, outputs.misses) == expected, (mode, outputs.hits, outputs.misses)
    return args.steps * args.batch_size / seconds


def run(args) -> dict:
    C.set_threads(args)
    teacher_dir, _ = C.teacher_folder(args)
    prepared, teacher = C.load_job(args, teacher_dir)
    task = prepared.data.task
    student, ratios = student_of(teacher.model, prepared, task, args)
    modes = ("fine-tune", "distill (teacher recomputed)", "cache (writing)", "cache (reading)")
    rates: dict[str, list[float]] = {m: [] for m in modes}
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as scratch:  # each repeat writes its cache afresh, then reads it
            for mode in modes:
                rate = time_mode(student, teacher.model.eval(), prepared, task, args, mode, Path(scratch))
                rates[mode].append(rate)
                C.log(f"repeat {repeat + 1}: {mode}: {rate:.1f} samples/s")
    medians = {m: statistics.median(v) for m, v in rates.items()}
    return {"rates": rates, "median": medians,
            "vs_fine_tune": {m: v / medians["fine-tune"] for m, v in medians.items()},
            "student": {"target": args.target, "structured": args.structured, "ratios": str(ratios)},
            "steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
            "machine": C.machine(), "command": C.command_line()}


def report(result: dict) -> str:
    rows = [[m, f"{result['median'][m]:.1f}", f"{result['vs_fine_tune'][m]:.2f}x",
             " / ".join(f"{r:.1f}" for r in result["rates"][m])] for m in result["median"]]
    return (f"# Distillation throughput with the teacher cache\n\n`{result['command']}`\n\n"
            f"Student: the teacher at {result['student']['target']:g}x (hybrid, {result['student']['structured']:g} "
            f"of heads and neurons kept); {result['steps']} steps of batch {result['batch_size']}, length "
            f"{result['max_length']}, one thread; median of the repeats.\n\n"
            + C.md_table(["mode", "samples/s", "vs fine-tuning", "each repeat"], rows) + "\n")


def main(argv=None):
    args = parse_args(argv)
    result = run(args)
    C.write_result(f"teacher_cache-{args.task}", result, report(result), args.out_dir)
    return result


if __name__ == "__main__":
    main()
