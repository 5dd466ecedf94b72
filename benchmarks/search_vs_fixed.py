"""Search vs fixed recipes: is searching the split worth its compute?  Equal trial budgets per arm, chosen on
validation, reported on dev.

Arms, each a ``ladasearch.search.run_search`` of ``--trials`` trials (FIFO by default, so every trial trains
to the end and every arm spends the same compute) at each target and seed:

    tpe       space ``ratios`` (embedding ratio + SVD-vs-pruning split), TPE, warm starts ``all`` (corners, the
              paper's point where it fits, and the arm's own search at the previous target: transfer)
    random    space ``ratios``, random search, no warm start
    prune     pruning only (space ``prune_only``): the split fixed at 0, the embedding ratio searched
    svd       SVD only (space ``svd_only``): the split fixed at 1, the embedding ratio searched
    paper     the paper's split for the target (Table 2: svd_split = ln s / (ln s + ln w)), the embedding searched;
              only at the paper's targets

The fixed recipes get the same trial budget and the same sampler (TPE, warm-started at the uniform
embedding ratio), so the comparison is: does searching the split beat fixing it?  Every choice (the
sampler, the best trial) is made on ``--val-size`` rows held out of train (the teacher never saw them);
dev is scored once, for the chosen model of each search.  Each arm and seed has its own MLflow store, so
the history warm start only ever sees the same arm's earlier target.  Seeds change the sampler and the
students' training; the data (train subset, validation rows) and the teacher stay fixed, so the arms are
paired.

    python benchmarks/search_vs_fixed.py                                 # SST-2 at 2.5x and 10x, 3 seeds
    python benchmarks/search_vs_fixed.py --task mnli --targets 5 --max-dev 2000 --name search_vs_fixed-mnli
    python benchmarks/search_vs_fixed.py --trials 2 --seeds 0 --targets 2.5 --max-train 200 --val-size 64 \\
        --max-dev 64 --teacher-steps 5 --steps-per-round 2 --final-steps 2 --out-dir /tmp/svf   # a smoke run
    python benchmarks/search_vs_fixed.py --merge part-a.json part-b.json --name search_vs_fixed-sst2
                          # one table from parts run side by side (e.g. --arms or --seeds split over processes)
    python benchmarks/search_vs_fixed.py --recover --work-dir DIR --seeds 0 --name part-c ...
                          # the searches a stopped run finished (the same options as the run)
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from _search_records import SAME, SAME_ARGS, merge, recover  # noqa: E402

ARMS = ("tpe", "random", "prune", "svd", "paper")
FIXED = ("prune", "svd", "paper")


def _val_size(text: str) -> float | int:
    number = float(text)
    return int(number) if number >= 1 and number == int(number) else number


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_data_args(p, max_train=4000, max_dev=0, threads=1)
    p.add_argument("--val-size", type=_val_size, default=500, help="validation rows held out of train")
    C.add_train_args(p, rounds=2, steps_per_round=8, final_steps=8, batch_size=16, lr=2e-4)
    g = p.add_argument_group("this benchmark")
    g.add_argument("--targets", default="2.5,10", help="comma-separated reduction factors")
    g.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    g.add_argument("--factorizer", default="svd", help="every arm's factorizer (a registered name)")
    g.add_argument("--prune-score", default="magnitude", help="every arm's pruning score (a registered name)")
    g.add_argument("--trials", type=int, default=12, help="trials per search (every arm, target and seed)")
    g.add_argument("--seeds", default="0,1,2")
    g.add_argument("--scheduler", default="fifo", help="fifo (equal compute per trial) or asha")
    g.add_argument("--concurrency", type=int, default=1)
    g.add_argument("--cpus-per-trial", type=float, default=None, help="Ray CPUs (= torch threads) per trial")
    g.add_argument("--work-dir", default=None, help="Ray state + MLflow stores (default: new folder under /tmp)")
    g.add_argument("--name", default=None, help="result file name (default search_vs_fixed-<task>)")
    g.add_argument("--out-dir", default=None, help="default benchmarks/results")
    g.add_argument("--merge", nargs="+", default=None, metavar="PART",
                   help="result JSONs of parts of one benchmark (same settings): write their joint table, run nothing")
    g.add_argument("--recover", action="store_true",
                   help="run nothing: write the result of the searches a stopped run in --work-dir finished "
                        "(read from its MLflow stores; --arms and --seeds select)")
    return p.parse_args(argv)


def paper_split(target: float) -> float | None:
    """The paper's Table 2 split of the encoder's reduction between SVD and pruning (None: not in the table)."""
    from ladasearch.compress.budget import PAPER_TABLE2

    if target not in PAPER_TABLE2:
        return None
    _, svd, weight = PAPER_TABLE2[target]
    return math.log(svd) / (math.log(svd) + math.log(weight))


def arm_setup(arm: str, target: float):
    """(space, sampler, warm start) of an arm at ``target``; None when the arm does not apply there."""
    from ladasearch.search import SearchSpace

    if arm == "tpe":
        return SearchSpace.load("ratios"), "tpe", "all"
    if arm == "random":
        return SearchSpace.load("ratios"), "random", "none"
    if arm in ("prune", "svd"):
        return SearchSpace.load(f"{arm}_only"), "tpe", "corners"
    split = paper_split(target)
    if split is None:
        return None
    space = SearchSpace.from_dict({"name": f"paper_split_{target:g}x", "method": "hybrid",
                                   "ratios": {"embedding_ratio": {"low": 0.02, "high": 1.0, "log": True},
                                              "svd_split": round(split, 6)}})
    return space, "tpe", "corners"


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(ms: tuple[float | None, float | None]) -> str:
    m, s = ms
    return "" if m is None else f"{100 * m:.1f} ± {100 * s:.1f}"


def run_arm(args, arm: str, target: float, seed: int, teacher_dir: str, work: Path) -> dict | None:
    import torch

    from ladasearch.config import CompressionConfig
    from ladasearch.search import SearchConfig, SearchSettings, run_search

    setup = arm_setup(arm, target)
    if setup is None:
        return None
    space, sampler, warm = setup
    cpus = args.cpus_per_trial or float(args.threads or os.cpu_count() or 1)
    gpus = 1.0 / args.concurrency if torch.cuda.is_available() and args.device != "cpu" else 0.0
    name = f"svf-{args.task}-{arm}-{target:g}x-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = SearchConfig(name=name, target=target, num_samples=args.trials, max_concurrent=args.concurrency,
                       cpus_per_trial=cpus, gpus_per_trial=gpus, sampler=sampler, scheduler=args.scheduler,
                       seed=seed, storage=str(work / "ray"), warm_start=warm,
                       tracking_uri=f"sqlite:///{work / f'mlflow-{arm}-s{seed}.db'}", experiment="search-vs-fixed")
    settings = SearchSettings(C.data_config(args), args.model, cfg, space, C.teacher_config(args),
                              C.train_config(args, seed=seed), teacher_path=teacher_dir, device=args.device,
                              compression=CompressionConfig(factorizer=args.factorizer, prune_score=args.prune_score))
    C.log(f"{arm} at {target:g}x, seed {seed}: {args.trials} trials, space {space.name}, sampler {sampler}, "
          f"warm start {warm}")
    started = time.perf_counter()
    outcome = run_search(settings, log=lambda line: None)
    rows = sorted((r.to_json() for r in outcome.trials), key=lambda r: C.trial_order(r["trial_id"]))
    val = [r["score_at_target"] if r["status"] == "completed" else None for r in rows]
    best = outcome.best
    record = {"arm": arm, "target": target, "seed": seed, "name": name, "space": space.name, "sampler": sampler,
              "warm_start": warm, "seconds": time.perf_counter() - started,
              "trials": [{"trial_id": r["trial_id"], "status": r["status"], "val": r["score_at_target"],
                          "config": r["config"]} for r in rows],
              "best_so_far_val": C.best_so_far(val),
              "chosen": None if best is None else {
                  "val": best.score_at_target, "dev": best.dev_score, "achieved_factor": best.achieved_factor,
                  "ratios": best.ratios.to_json()}}
    chosen = record["chosen"]
    C.log(f"  {C.fmt_time(record['seconds'])}: " + ("no trial reached the target" if chosen is None else
          f"chosen val {chosen['val']:.4f}, dev {chosen['dev']:.4f}, ratios emb {chosen['ratios']['embedding']:.3f} "
          f"svd {chosen['ratios']['svd']:.3f} w {chosen['ratios']['weight']:.3f}"))
    return record


def trials_to_reach(tpe: dict, random: dict) -> int | None:
    """How many TPE trials reach random search's final best validation score (None: never)."""
    goal = random["best_so_far_val"][-1] if random["best_so_far_val"] else None
    if goal is None:
        return None
    return next((k + 1 for k, v in enumerate(tpe["best_so_far_val"]) if v is not None and v >= goal), None)


def summarize(task: str, runs: list[dict], targets: list[float], arms: list[str], metric: str) -> tuple[dict, str]:
    table, lines, aims = {}, [], []
    for target in targets:
        rows = []
        for arm in arms:
            done = [r for r in runs if r["arm"] == arm and r["target"] == target and r["chosen"]]
            if not done:
                continue
            dev, val = mean_std([r["chosen"]["dev"] for r in done]), mean_std([r["chosen"]["val"] for r in done])
            table[f"{target:g}x/{arm}"] = {"dev_mean": dev[0], "dev_std": dev[1], "val_mean": val[0],
                                           "val_std": val[1], "seeds": len(done)}
            splits = ", ".join(f"{r['chosen']['ratios']['method']} {r['chosen']['ratios']['embedding']:.2f}/"
                               f"{r['chosen']['ratios']['svd']:.2f}/{r['chosen']['ratios']['weight']:.2f}"
                               for r in done)
            rows.append([arm, fmt(dev), fmt(val), len(done), splits])
        lines += [f"### {task} at {target:g}x", "",
                  C.md_table(["arm", f"dev {metric} % (chosen)", f"val {metric} % (chosen on)", "seeds",
                              "chosen method emb/svd/weight ratios per seed"], rows, align="lrrrl"), ""]
        fixed = [table[f"{target:g}x/{a}"]["dev_mean"] for a in FIXED if f"{target:g}x/{a}" in table]
        searched = table.get(f"{target:g}x/tpe", {}).get("dev_mean")
        if fixed and searched is not None:
            aims.append(f"- {target:g}x: TPE search {100 * searched:.1f} vs best fixed recipe {100 * max(fixed):.1f} "
                        f"dev ({'at least as good' if searched >= max(fixed) else 'worse'})")
        for seed in sorted({r["seed"] for r in runs}):
            tpe = next((r for r in runs if r["arm"] == "tpe" and r["target"] == target and r["seed"] == seed), None)
            rnd = next((r for r in runs if r["arm"] == "random" and r["target"] == target and r["seed"] == seed), None)
            if tpe and rnd:
                k, n = trials_to_reach(tpe, rnd), len(rnd["trials"])
                within = "within" if k is not None and k <= n / 2 else "not within"
                aims.append(f"- {target:g}x seed {seed}: TPE reaches random's final best val after "
                            f"{k if k is not None else 'more than ' + str(len(tpe['trials']))} of {n} trials "
                            f"({within} half)")
    return table, "\n".join(lines + ["Aims:", ""] + aims)


def write(args, meta: dict, runs: list[dict], wall: float) -> dict:
    """The joint table, plot and result files of ``runs``."""
    from _search_plot import plot_search_vs_fixed

    targets = sorted({r["target"] for r in runs})
    arms = [a for a in ARMS if any(r["arm"] == a for r in runs)]
    cfg, task, rows = meta["train_config"], meta["task"], meta["rows"]
    metric = meta["metric"]
    table, body = summarize(task, runs, targets, arms, metric)
    text = (f"Search vs fixed recipes, {task}, {meta['model']} teacher dev {metric} "
            f"{100 * meta['teacher_dev_score']:.1f} ({rows['dev']} dev rows, {rows['val']} validation rows held out "
            f"of train, {rows['train']} train rows). {meta['trials']} trials per search ({meta['scheduler']}), each "
            f"{cfg['rounds']} rounds x {cfg['steps_per_round']} + {cfg['final_steps']} steps at batch "
            f"{cfg['batch_size']}, lr {cfg['learning_rate']:g}; {meta['factorizer']} factorizer, {meta['prune_score']} "
            f"pruning score; seeds {','.join(str(s) for s in sorted({r['seed'] for r in runs}))}. Chosen on "
            f"validation, reported on dev, mean ± std over seeds. Wall time {C.fmt_time(wall)}.\n\n" + body + "\n")
    print(text)
    payload = {"benchmark": "search_vs_fixed", "command": C.command_line(), "args": vars(args),
               "machine": C.machine(), **{k: meta[k] for k in SAME},
               "metric": metric, "trials": meta["trials"], "table": table, "runs": runs, "wall_s": wall,
               "parts": meta.get("parts")}
    name = args.name or f"search_vs_fixed-{task}"
    out = C.write_result(name, payload, text, args.out_dir)
    plot_search_vs_fixed(payload, out.with_suffix(".png"))
    return payload


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.merge:
        from ladasearch.data import TASKS

        first, runs, wall = merge(args.merge)
        meta = {**{k: first[k] for k in SAME}, "model": first["args"]["model"],
                "metric": TASKS[first["task"]].main_metric, **{k: first["args"][k] for k in SAME_ARGS},
                "parts": args.merge}
        return write(args, meta, runs, wall)
    C.set_threads(args)
    from ladasearch.search import init_ray

    started = time.perf_counter()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="ladasearch-bench-svf-"))
    work.mkdir(parents=True, exist_ok=True)
    targets = [float(t) for t in args.targets.split(",") if t.strip()]
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {', '.join(unknown)}; allowed: {', '.join(ARMS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    teacher_dir, _ = C.teacher_folder(args)
    prepared, teacher = C.load_job(args, teacher_dir)
    task = prepared.data.task
    meta = {"task": task.name, "teacher": teacher_dir, "teacher_dev_score": teacher.score, "model": args.model,
            "rows": {"train": len(prepared.train), "val": len(prepared.val), "dev": len(prepared.dev)},
            "train_config": {k: v for k, v in vars(C.train_config(args)).items() if k != "loss_weights"},
            "metric": task.main_metric, "work_dir": str(work), **{k: vars(args)[k] for k in SAME_ARGS}}
    if args.recover:
        runs = [r for r in recover(work, arm_setup) if r["arm"] in arms and r["seed"] in seeds
                and r["target"] in targets]
        return write(args, {**meta, "recovered": str(work)}, runs, sum(r["seconds"] for r in runs))
    runs, payload = [], None
    init_ray(None)
    try:
        for seed in seeds:
            for arm in arms:
                for target in sorted(targets):  # ascending: the TPE arm's history then transfers upwards
                    record = run_arm(args, arm, target, seed, teacher_dir, work)
                    if record is not None:
                        runs.append(record)  # written after every search: a stopped run keeps what it finished
                        payload = write(args, meta, runs, time.perf_counter() - started)
    finally:
        import ray

        ray.shutdown()
    return payload


if __name__ == "__main__":
    main()
