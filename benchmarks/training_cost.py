"""What one LadaBERT trial costs: distillation vs plain fine-tuning throughput, and time to 99% of the final score.

1. One trial (``ladasearch.trial.compress_model``, unchanged) at a fixed target and fixed ratios.  The benchmark
   wraps three of the trial's helpers in this process only (nothing in the package is edited):
     - ``make_plan``     to get hold of the student the trial trains,
     - ``train_batches`` to evaluate that student on dev every ``--eval-every`` optimizer steps (between two
                         steps, in eval mode, under no_grad; evaluation draws no random numbers, so the
                         training run itself is the same as without it),
     - ``evaluate`` / ``compress_step`` to time the trial's own evaluations and compression steps,
   so the curve's clock counts training time only (compression and all evaluations are timed apart).
   Time to 99%: the training time until the first evaluation at the final (target) size that scores
   >= 99% of the trial's final score (and, for reference, the first at any size).
2. Throughput of the trained student, measured in one run, alternating blocks: LadaBERT distillation
   (teacher forward + student forward/backward with hidden states and attentions, the trial's
   ``_train(distill=True)``) vs plain fine-tuning of the same compressed student on gold labels
   (``_train(distill=False)``) vs plain fine-tuning of the dense teacher; same batches for all.

    python benchmarks/training_cost.py --data-dir /work/shared/data/glue
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
    from ladasearch.compress import solve

    if method != "hybrid":
        return solve(counts, target, method=method, embedding=embedding)
    return C.hybrid_ratios(counts, target, embedding, split)


def instrumented_trial(teacher, prepared, ratios, cfg, device, eval_every: int):
    """Run compress_model with evaluation every ``eval_every`` steps; returns (result, curve, timings)."""
    from ladasearch import trial as T
    from ladasearch.compress import count_parameters
    from ladasearch.data import main_score

    task = prepared.data.task
    state = {"student": None, "steps": 0, "eval_s": 0.0, "compress_s": 0.0, "compressions": 0,
             "t0": None, "round_eval_s": 0.0}
    curve: list[dict] = []
    orig = {"make_plan": T.make_plan, "train_batches": T.train_batches, "evaluate": T.evaluate,
            "compress_step": T.compress_step}

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
            metrics = orig["evaluate"](state["student"], prepared.dev, task, cfg.eval_batch_size, device)
            state["eval_s"] += time.perf_counter() - started
        params = count_parameters(state["student"]).total
        curve.append({"step": state["steps"], "samples": state["steps"] * cfg.batch_size, "kind": kind,
                      "round": state["compressions"], "at_target": state["compressions"] == cfg.rounds,
                      "params": params, "score": main_score(task, metrics), "train_s": clock})

    def make_plan(model, r):
        state["student"] = model
        return orig["make_plan"](model, r)

    def train_batches(*a, **k):
        inner = orig["train_batches"](*a, **k)

        def wrapped():
            while True:
                s = state["steps"]
                same = curve and curve[-1]["step"] == s and curve[-1]["round"] == state["compressions"]
                if s % eval_every == 0 and not same:
                    point("after compression step" if s % max(cfg.steps_per_round, 1) == 0 and
                          s < cfg.rounds * cfg.steps_per_round else "during training")
                batch = next(inner)
                state["steps"] += 1
                yield batch
        return wrapped()

    def evaluate(model, features, task_, batch_size=64, device_="cpu"):  # the trial's round-end evaluation
        started = time.perf_counter()
        metrics = orig["evaluate"](model, features, task_, batch_size, device_)
        state["eval_s"] += time.perf_counter() - started
        state["round_eval_s"] += time.perf_counter() - started
        # record it as a curve point (replacing a point of ours at the same step)
        if curve and curve[-1]["step"] == state["steps"] and curve[-1]["round"] == state["compressions"]:
            curve.pop()
        point("end of round" if state["steps"] <= cfg.rounds * cfg.steps_per_round else "end of final steps",
              metrics)
        return metrics

    def compress_step(model, plans, fraction):
        sync()
        started = time.perf_counter()
        orig["compress_step"](model, plans, fraction)
        sync()
        state["compress_s"] += time.perf_counter() - started
        state["compressions"] += 1

    T.make_plan, T.train_batches, T.evaluate, T.compress_step = make_plan, train_batches, evaluate, compress_step
    try:
        state["t0"] = time.perf_counter()
        wall0 = time.perf_counter()
        result = T.compress_model(teacher, prepared.train, prepared.dev, task, ratios, cfg, device)
        wall = time.perf_counter() - wall0
    finally:
        T.make_plan, T.train_batches, T.evaluate, T.compress_step = (orig["make_plan"], orig["train_batches"],
                                                                      orig["evaluate"], orig["compress_step"])
    timings = {"wall_s": wall, "compress_s": state["compress_s"], "eval_s_all": state["eval_s"],
               "eval_s_trial_own": state["round_eval_s"], "extra_evals_s": state["eval_s"] - state["round_eval_s"],
               "train_s": wall - state["eval_s"] - state["compress_s"], "steps": state["steps"]}
    timings["wall_s_without_extra_evals"] = wall - timings["extra_evals_s"]
    return result, curve, timings


def throughput(student, teacher, prepared, cfg, device, blocks: int, block_steps: int) -> dict:
    """Samples/s of distillation, fine-tuning of the student, fine-tuning of the dense teacher, interleaved."""
    from ladasearch.features import train_batches
    from ladasearch.trial import _train

    task = prepared.data.task
    modes = {
        "distillation (student, LadaBERT loss)": (copy.deepcopy(student), replace(cfg, distill=True)),
        "fine-tuning (same student, gold labels)": (copy.deepcopy(student), replace(cfg, distill=False)),
        "fine-tuning (dense teacher, gold labels)": (copy.deepcopy(teacher), replace(cfg, distill=False)),
    }
    batches = {name: train_batches(prepared.train, cfg.batch_size, cfg.seed + 1, device) for name in modes}
    for name, (model, mcfg) in modes.items():  # warm-up: one step each
        _train(model, teacher, batches[name], 1, mcfg, task)
    times = {name: [] for name in modes}
    for _ in range(blocks):
        for name, (model, mcfg) in modes.items():
            started = time.perf_counter()
            _train(model, teacher, batches[name], block_steps, mcfg, task)
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
               "ratios": result.summary()["ratios"], "achieved_factor": result.achieved_factor,
               "train_config": {k: v for k, v in vars(cfg).items() if k != "loss_weights"},
               "final_score": final, "trial_timings": timings, "curve": curve,
               "time_to_99pct_at_target": hit, "time_to_99pct_any_size": hit_any, "throughput": rates,
               "history": result.history, "wall_s": time.perf_counter() - started}
    C.write_result(args.name or f"training_cost-{task.name}", payload, text, args.out_dir)
    C.log(f"total wall time {C.fmt_time(payload['wall_s'])}")
    return payload


if __name__ == "__main__":
    main()
