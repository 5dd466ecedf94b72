"""Search efficiency: best dev score after k trials, Optuna TPE vs random search, same budget and seeds.

Both samplers run through ``ladasearch.search.run_search`` (Ray Tune + Optuna) with the same space
(default ``ratios``: embedding ratio + SVD-vs-pruning split), target, trial budget, training budget, seed
and the FIFO scheduler (every trial trains to the end, so "after k trials" means k finished trials).
Trials run one at a time by default so TPE sees every earlier result before it samples.

Note: ladasearch's TPE sampler is ``optuna.samplers.TPESampler(seed=seed, multivariate=True)`` with Optuna's
default ``n_startup_trials=10``: its first 10 trials are random draws, so TPE can only differ from random
search from trial 11 on (with the same seed the first 10 configurations may even coincide).

    python benchmarks/search_efficiency.py --data-dir ../shared/data/glue
    python benchmarks/search_efficiency.py --trials 40 --seeds 0,1,2 --max-dev 0 --rounds 3 \
        --steps-per-round 100 --final-steps 100 --batch-size 32          # a GPU-sized run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_data_args(p, max_dev=200, threads=1)
    C.add_train_args(p, rounds=2, steps_per_round=8, final_steps=8, batch_size=16, lr=2e-4)
    g = p.add_argument_group("this benchmark")
    g.add_argument("--target", type=float, default=5.0)
    g.add_argument("--trials", type=int, default=16, help="trials per sampler and seed (k)")
    g.add_argument("--samplers", default="tpe,random")
    g.add_argument("--seeds", default="0", help="comma-separated search seeds (the sampler's seed)")
    g.add_argument("--space", default="ratios")
    g.add_argument("--concurrency", type=int, default=1)
    g.add_argument("--cpus-per-trial", type=float, default=None,
                   help="Ray CPUs (= torch threads) per trial (default: --threads)")
    g.add_argument("--work-dir", default=None, help="Ray state + MLflow store (default: new folder under /tmp)")
    g.add_argument("--tracking-uri", default=None)
    g.add_argument("--name", default=None, help="result file name (default search_efficiency-<task>)")
    g.add_argument("--out-dir", default=None)
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    C.set_threads(args)
    import torch

    from ladasearch.search import SearchConfig, SearchSettings, SearchSpace, init_ray, run_search

    started = time.perf_counter()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="ladasearch-bench-search-"))
    tracking = args.tracking_uri or f"sqlite:///{work.resolve() / 'mlflow.db'}"
    teacher_dir, _ = C.teacher_folder(args)
    prepared, teacher = C.load_job(args, teacher_dir)
    task = prepared.data.task
    cfg = C.train_config(args)
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    cpus = args.cpus_per_trial or float(args.threads or os.cpu_count() or 1)
    gpus = 1.0 / args.concurrency if torch.cuda.is_available() and args.device != "cpu" else 0.0
    runs = []
    init_ray(None)
    try:
        for seed in seeds:
            for sampler in samplers:
                name = f"eff-{task.name}-{sampler}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
                C.log(f"search {name}: {args.trials} trials, {args.target:g}x, space {args.space}")
                scfg = SearchConfig(name=name, target=args.target, num_samples=args.trials,
                                    max_concurrent=args.concurrency, cpus_per_trial=cpus, gpus_per_trial=gpus,
                                    sampler=sampler, scheduler="fifo", seed=seed, storage=str(work / "ray"),
                                    tracking_uri=tracking, experiment="benchmarks-search-efficiency")
                t0 = time.perf_counter()
                settings = SearchSettings(C.data_config(args), args.model, scfg, SearchSpace.load(args.space),
                                          C.teacher_config(args), cfg, teacher_path=teacher_dir, device=args.device)
                outcome = run_search(settings, log=C.log)
                trials = sorted((r.to_json() for r in outcome.trials), key=lambda r: C.trial_order(r["trial_id"]))
                # validation scores at the target size: what the search itself ranks (dev is scored for the best only)
                scores = [r["score_at_target"] if r["status"] == "completed" else None for r in trials]
                runs.append({"sampler": sampler, "seed": seed, "name": name, "seconds": time.perf_counter() - t0,
                             "trials": [{"trial_id": r["trial_id"], "status": r["status"],
                                         "score": r["score_at_target"],
                                         "embedding_ratio": (r.get("config") or {}).get("embedding_ratio"),
                                         "svd_split": (r.get("config") or {}).get("svd_split")} for r in trials],
                             "best_so_far": C.best_so_far(scores)})
                C.log(f"  done in {C.fmt_time(runs[-1]['seconds'])}: best {runs[-1]['best_so_far'][-1]}")
    finally:
        import ray
        ray.shutdown()

    # ---- table: best-so-far per k, per sampler (mean over seeds when several)
    k_max = max(len(r["best_so_far"]) for r in runs)
    headers, rows = ["k"], []
    for sampler in samplers:
        for seed in seeds:
            headers.append(f"{sampler} seed {seed}")
        if len(seeds) > 1:
            headers.append(f"{sampler} mean")
    for k in range(k_max):
        row = [k + 1]
        for sampler in samplers:
            vals = []
            for seed in seeds:
                run = next(r for r in runs if r["sampler"] == sampler and r["seed"] == seed)
                v = run["best_so_far"][k] if k < len(run["best_so_far"]) else None
                vals.append(v)
                row.append("" if v is None else f"{100 * v:.1f}")
            if len(seeds) > 1:
                ok = [v for v in vals if v is not None]
                row.append(f"{100 * statistics.mean(ok):.1f}" if ok else "")
        rows.append(row)
    trial_rows = []
    for r in runs:
        for i, t in enumerate(r["trials"]):
            trial_rows.append([r["sampler"], r["seed"], i + 1,
                               "" if t["embedding_ratio"] is None else f"{t['embedding_ratio']:.4f}",
                               "" if t["svd_split"] is None else f"{t['svd_split']:.3f}",
                               "" if t["score"] is None else f"{100 * t['score']:.1f}", t["status"]])
    wall = time.perf_counter() - started
    text = (f"Search efficiency, {task.name} at {args.target:g}x, space {args.space}, {args.model} teacher dev "
            f"{task.main_metric} {100 * teacher.score:.1f} on {len(prepared.dev)} dev rows; each trial "
            f"{cfg.rounds} rounds x {cfg.steps_per_round} + {cfg.final_steps} steps at batch {cfg.batch_size}, "
            f"lr {cfg.learning_rate:g}; FIFO, {args.concurrency} trial(s) at a time. Wall time {C.fmt_time(wall)}."
            f"\n\nBest val {task.main_metric} % (at the target size) after k trials:\n\n"
            + C.md_table(headers, rows) + "\n\nTrials in order:\n\n"
            + C.md_table(["sampler", "seed", "#", "embedding ratio", "svd split", "score %", "status"], trial_rows,
                         align="lrrrrrl") + "\n")
    print(text)
    payload = {"benchmark": "search_efficiency", "command": C.command_line(), "args": vars(args),
               "machine": C.machine(), "task": task.name, "teacher": teacher_dir, "teacher_score": teacher.score,
               "dev_rows": len(prepared.dev), "train_rows": len(prepared.train), "target": args.target,
               "train_config": {k: v for k, v in vars(cfg).items() if k != "loss_weights"},
               "work_dir": str(work), "tracking_uri": tracking, "runs": runs, "wall_s": wall}
    C.write_result(args.name or f"search_efficiency-{task.name}", payload, text, args.out_dir)
    return payload


if __name__ == "__main__":
    main()
