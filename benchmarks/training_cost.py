"""What one LadaBERT trial costs: distillation vs plain fine-tuning throughput, and time to 99% of the final score.

1. One trial (``ladasearch.train.ladabert.compress_model``, unchanged) at a fixed target and fixed ratios, observed
   through its ``LoopHooks``:
     - ``after_compress`` hands over the student the trial trains, ``before_compress``/``after_compress``
                         time the compression steps,
     - ``after_step``    evaluates that student on dev every ``--eval-every`` optimizer steps (between two
                         steps, in eval mode, under no_grad; evaluation draws no random numbers, so the
                         training run itself is the same as without it),
     - ``after_eval``    times the trial's own evaluations (from the end of the round's last step),
   so the curve's clock counts training time only (compression and all evaluations are timed apart).
   Time to 99%: the training time until the first evaluation at the final (target) size that scores
   >= 99% of the trial's final score (and, for reference, the first at any size).
2. Throughput of the trained student, measured in one run, alternating blocks: LadaBERT distillation
   (teacher forward + student forward/backward with hidden states and attentions, the trial's
   ``train_steps`` with distill=True) vs plain fine-tuning of the same compressed student on gold labels
   (distill=False) vs plain fine-tuning of the dense teacher; same batches for all.

    python benchmarks/training_cost.py --data-dir ../shared/data/glue
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_data_args(p, threads=1)
    C.add_train_args(p)
    g = p.add_argument_group("this benchmark")
    g.add_argument("--target", type=float, default=5.0)
    g.add_argument("--method", default="hybrid", choices=("hybrid", "svd", "prune"))
    g.add_argument("--embedding-ratio", type=float, default=0.2, help="share of the word embedding kept")
    g.add_argument("--svd-split", type=float, default=0.5,
                   help="hybrid: share (in log terms) of the encoder's reduction done by SVD")
    g.add_argument("--eval-every", type=int, default=10, help="evaluate on dev every N optimizer steps")
    g.add_argument("--blocks", type=int, default=4, help="throughput: alternating blocks per mode")
    g.add_argument("--block-steps", type=int, default=10, help="throughput: optimizer steps per block")
    g.add_argument("--name", default=None, help="result file name (default training_cost-<task>)")
    g.add_argument("--out-dir", default=None, help="results folder (default benchmarks/results)")
    return p.parse_args(argv)


def solve_ratios(counts, target: float, method: str, embedding: float, split: float):
    from ladasearch.compress import get_method

    method_ = get_method(method)
    return C.hybrid_ratios(counts, target, embedding, split if method_.free_split else method_.default_split, method)


def instrumented_trial(teacher, prepared, ratios, cfg, device, eval_every: int):
    """Run compress_model with evaluation every ``eval_every`` steps; returns (result, curve, timings)."""
    from ladasearch.compress import count_parameters
    from ladasearch.data import main_score
    from ladasearch.train.evaluate import evaluate
    from ladasearch.train.ladabert import LoopHooks, compress_model

    task = prepared.data.task
    state = {"student": None, "steps": 0, "eval_s": 0.0, "compress_s": 0.0, "compressions": 0,
             "t0": None, "round_eval_s": 0.0, "mark": None}
    curve: list[dict] = []
    # the last step of each training phase: the trial evaluates there itself
    phase_ends = {r * cfg.steps_per_round for r in range(1, cfg.rounds + 1)} | {
        cfg.rounds * cfg.steps_per_round + cfg.final_steps}

    def sync():
        if device.type == "cuda":
            import torch
            torch.cuda.synchronize()

    def train_clock() -> float:
        sync()
        return time.perf_counter() - state["t0"] - state["eval_s"] - state["compress_s"]

    def point(kind: str, metrics: dict | None = None):
        clock = train_clock()
        started = time.perf_counter()
        if metrics is None:
            metrics = evaluate(state["student"], prepared.dev, task, cfg.eval_batch_size, device)
            state["eval_s"] += time.perf_counter() - started
        params = count_parameters(state["student"]).total
        curve.append({"step": state["steps"], "samples": state["steps"] * cfg.batch_size, "kind": kind,
                      "round": state["compressions"], "at_target": state["compressions"] == cfg.rounds,
                      "params": params, "score": main_score(task, metrics), "train_s": clock})

    def before_compress(number, student):
        sync()
        state["mark"] = time.perf_counter()

    def after_compress(number, student):
        sync()
        state["compress_s"] += time.perf_counter() - state["mark"]
        state["student"], state["compressions"] = student, number
        if state["steps"] % eval_every == 0:
            point("after compression step")
        state["mark"] = time.perf_counter()

    def after_step(step, losses):
        state["steps"] = step
        if step % eval_every == 0 and step not in phase_ends:
            point("during training")
        sync()
        state["mark"] = time.perf_counter()

    def after_eval(record):  # the trial's own round-end evaluation, since the end of its last step
        sync()
        own = time.perf_counter() - state["mark"]
        state["eval_s"] += own
        state["round_eval_s"] += own
        point("end of round" if record.round <= cfg.rounds else "end of final steps", record.metrics)

    hooks = LoopHooks(before_compress=before_compress, after_compress=after_compress, after_step=after_step,
                      after_eval=after_eval)
    state["t0"] = time.perf_counter()
    result = compress_model(teacher, prepared.train, prepared.dev, task, ratios, cfg, device, hooks=hooks)
    wall = time.perf_counter() - state["t0"]
    timings = {"wall_s": wall, "compress_s": state["compress_s"], "eval_s_all": state["eval_s"],
               "eval_s_trial_own": state["round_eval_s"], "extra_evals_s": state["eval_s"] - state["round_eval_s"],
               "train_s": wall - state["eval_s"] - state["compress_s"], "steps": state["steps"]}
    timings["wall_s_without_extra_evals"] = wall - timings["extra_evals_s"]
    return result, curve, timings


def throughput(student, teacher, prepared, cfg, device, blocks: int, block_steps: int) -> dict:
    """Samples/s of distillation, fine-tuning of the student, fine-tuning of the dense teacher, interleaved."""
    from ladasearch.compress import MagnitudeScore
    from ladasearch.train.features import train_batches
    from ladasearch.train.ladabert import LoopHooks, TrainingPhase, train_steps

    task = prepared.data.task
    modes = {
        "distillation (student, LadaBERT loss)": (copy.deepcopy(student), replace(cfg, distill=True)),
        "fine-tuning (same student, gold labels)": (copy.deepcopy(student), replace(cfg, distill=False)),
        "fine-tuning (dense teacher, gold labels)": (copy.deepcopy(teacher), replace(cfg, distill=False)),
    }
    batches = {name: train_batches(prepared.train, cfg.batch_size, cfg.seed + 1, device) for name in modes}
    phases = {name: TrainingPhase(model, teacher, mcfg, task, LoopHooks(), MagnitudeScore())
              for name, (model, mcfg) in modes.items()}
    for name, phase in phases.items():  # warm-up: one step each
        train_steps(phase, batches[name], 1, 0)
    times = {name: [] for name in modes}
    for _ in range(blocks):
        for name, phase in phases.items():
            started = time.perf_counter()
            train_steps(phase, batches[name], block_steps, 0)
            if device.type == "cuda":
                import torch
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - started)
    out = {}
    for name, t in times.items():
        rates = [block_steps * cfg.batch_size / s for s in t]
        out[name] = {"samples_per_s_median": statistics.median(rates), "samples_per_s_blocks": rates,
                     "seconds_per_step_median": statistics.median(t) / block_steps}
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    threads = C.set_threads(args)
    from ladasearch.compress import count_parameters
    from ladasearch.models import pick_device

    started = time.perf_counter()
    teacher_dir, _ = C.teacher_folder(args)
    prepared, teacher = C.load_job(args, teacher_dir)
    device = pick_device(args.device)
    counts = count_parameters(teacher.model)
    ratios = solve_ratios(counts, args.target, args.method, args.embedding_ratio, args.svd_split)
    cfg = C.train_config(args)
    task = prepared.data.task
    C.log(f"trial: {args.target:g}x {ratios}, {cfg.rounds} rounds x {cfg.steps_per_round} + {cfg.final_steps} "
          f"steps, batch {cfg.batch_size}, eval every {args.eval_every} steps on {len(prepared.dev)} dev rows")
    result, curve, timings = instrumented_trial(teacher.model, prepared, ratios, cfg, device, args.eval_every)
    final = result.score
    at_target = [p for p in curve if p["at_target"]]
    hit = next((p for p in at_target if p["score"] >= 0.99 * final), None)
    hit_any = next((p for p in curve if p["kind"] != "after compression step" and p["score"] >= 0.99 * final), None)
    last_target_start = at_target[0] if at_target else None
    C.log(f"trial done: score {final:.4f} at {result.achieved_factor:.2f}x; {timings}")

    C.log(f"throughput: {args.blocks} alternating blocks of {args.block_steps} steps per mode")
    rates = throughput(result.student, teacher.model, prepared, cfg, device, args.blocks, args.block_steps)
    ft = rates["fine-tuning (same student, gold labels)"]["samples_per_s_median"]

    # ---- tables
    rate_rows = [[name, f"{r['samples_per_s_median']:.1f}", f"{1000 * r['seconds_per_step_median']:.0f}",
                  f"{r['samples_per_s_median'] / ft:.2f}x"] for name, r in rates.items()]
    md = [f"Training cost, {task.name} ({len(prepared.train)} train rows, max_length {args.max_length}, "
          f"batch {cfg.batch_size}), {args.model}, target {args.target:g}x ({ratios.method}: embedding "
          f"{ratios.embedding:.3f}, svd {ratios.svd:.3f}, weight {ratios.weight:.3f}); device {device}, "
          f"{threads} torch threads.", "",
          "Throughput (median over alternating blocks):", "",
          C.md_table(["mode", "samples/s", "ms/step", "vs fine-tuning the student"], rate_rows), "",
          f"One trial ({cfg.rounds} rounds x {cfg.steps_per_round} steps + {cfg.final_steps} final steps = "
          f"{timings['steps']} steps): training {timings['train_s']:.0f} s, compression steps "
          f"{timings['compress_s']:.1f} s, the trial's own {cfg.rounds + (1 if cfg.final_steps else 0)} dev "
          f"evaluations {timings['eval_s_trial_own']:.0f} s (wall without this benchmark's extra evaluations "
          f"{timings['wall_s_without_extra_evals']:.0f} s). Final dev {task.main_metric} {final:.4f} "
          f"(teacher {teacher.score:.4f}).", ""]
    if hit:
        md.append(f"Time to 99% of the final score at the target size: {hit['train_s']:.0f} s of training "
                  f"(step {hit['step']}, {hit['samples']} samples; the target size is reached at step "
                  f"{last_target_start['step'] if last_target_start else '?'}, {last_target_start['train_s']:.0f} s)"
                  f"; at any size: {hit_any['train_s']:.0f} s (step {hit_any['step']}).")
    md += ["", "Dev curve (evaluations every %d steps; train_s excludes compression and evaluation):" % args.eval_every,
           "", C.md_table(["step", "phase", "round", "params", task.main_metric, "train_s"],
                          [[p["step"], p["kind"], p["round"], f"{p['params']:,}", f"{p['score']:.4f}",
                            f"{p['train_s']:.1f}"] for p in curve], align="rlrrrr")]
    text = "\n".join(md)
    print(text)
    payload = {"benchmark": "training_cost", "command": C.command_line(), "args": vars(args), "machine": C.machine(),
               "task": task.name, "train_rows": len(prepared.train), "dev_rows": len(prepared.dev),
               "teacher": teacher_dir, "teacher_score": teacher.score, "target": args.target,
               "ratios": result.summary().ratios.to_json(), "achieved_factor": result.achieved_factor,
               "train_config": {k: v for k, v in vars(cfg).items() if k != "loss_weights"},
               "final_score": final, "trial_timings": timings, "curve": curve,
               "time_to_99pct_at_target": hit, "time_to_99pct_any_size": hit_any, "throughput": rates,
               "history": [record.to_json() for record in result.history], "wall_s": time.perf_counter() - started}
    C.write_result(args.name or f"training_cost-{task.name}", payload, text, args.out_dir)
    C.log(f"total wall time {C.fmt_time(payload['wall_s'])}")
    return payload


if __name__ == "__main__":
    main()
