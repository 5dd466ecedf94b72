"""Accuracy against the paper: searched ratios, the paper's Table-2 ratios and three ablations, per target.

For each target (default 2.5x, 5x, 7.5x, 10x), on one teacher fine-tuned once (and cached):
    searched   ``run_search`` with the ``ratios`` space (embedding ratio + SVD-vs-pruning split), k trials,
               Optuna TPE, every trial at the same training budget; the best trial by dev score
    paper      the paper's Table-2 embedding and SVD ratios (pruning solved for this model), or
               "infeasible: <reason>" when this model cannot meet the target with them
    ablations  at the best searched embedding ratio and the same training budget:
               prune only (magnitude pruning of every matrix), SVD only (factorization of every matrix),
               hybrid without distillation (the best searched ratios, trained on gold labels)
Each row reports the raw dev score, score / teacher score, and the paper's retention at that target
(BERT-base, e.g. SST-2 2.5x: 92.8 / 93.5).  Note: the search picks its best trial on the same dev set
it reports (as the paper's dev-set numbers do), so "searched" has a selection advantage over the
single-run rows when k > 1.

    python benchmarks/accuracy.py --data-dir ../shared/data/glue               # SST-2, CPU defaults
    python benchmarks/accuracy.py --task mnli --max-dev 2000                      # MNLI-m (train.sample)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

VARIANTS = ("searched", "paper", "prune_only", "svd_only", "no_distill")
LABELS = {"searched": "searched (hybrid, best of k)", "paper": "paper Table-2 ratios",
          "prune_only": "pruning only", "svd_only": "SVD only", "no_distill": "hybrid, no distillation"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_data_args(p, threads=1)
    C.add_train_args(p, steps_per_round=20, final_steps=20)
    g = p.add_argument_group("this benchmark")
    g.add_argument("--targets", default="2.5,5,7.5,10", help="comma-separated reduction factors")
    g.add_argument("--trials", type=int, default=3, help="search trials per target (k)")
    g.add_argument("--sampler", default="tpe")
    g.add_argument("--scheduler", default="fifo", choices=("fifo", "asha"),
                   help="fifo: every trial trains to the end (default); asha: early stopping")
    g.add_argument("--space", default="ratios", help="search space for the searched rows")
    g.add_argument("--concurrency", type=int, default=2, help="search trials running at once")
    g.add_argument("--workers", type=int, default=2,
                   help="worker processes for the single runs (paper ratios, ablations); they overlap the searches")
    g.add_argument("--cpus-per-trial", type=float, default=None, help="Ray CPUs (= torch threads) per trial "
                   "(default: --threads)")
    g.add_argument("--gpus-per-trial", type=float, default=None, help="default: 1 / concurrency when CUDA is there")
    g.add_argument("--skip", default="", help="comma-separated variants to leave out: " + ", ".join(VARIANTS[1:]))
    g.add_argument("--work-dir", default=None,
                   help="Ray Tune state and the MLflow store (default: a new folder under /tmp; never mlruns/)")
    g.add_argument("--tracking-uri", default=None, help="MLflow store (default sqlite:///<work-dir>/mlflow.db)")
    g.add_argument("--name", default=None, help="result file name (default accuracy-<task>)")
    g.add_argument("--out-dir", default=None, help="results folder (default benchmarks/results)")
    return p.parse_args(argv)


def ratio_dict(r) -> dict:
    return {"method": r.method, "embedding": r.embedding, "svd": r.svd, "weight": r.weight, "encoder": r.encoder}



def run_variant(label: str, teacher, prepared, ratios, cfg, device) -> dict:
    from ladasearch.jobs.compress import round_line
    from ladasearch.train.ladabert import LoopHooks, TrialFailed, compress_model

    task = prepared.data.task
    C.log(f"{label}: start - embedding {ratios.embedding:.4f}, svd {ratios.svd:.4f}, weight {ratios.weight:.4f} "
          f"({ratios.method}, distill={cfg.distill})")
    started = time.perf_counter()
    try:
        hooks = LoopHooks(after_eval=lambda record: C.log(f"{label}: " + round_line(record, cfg.rounds,
                                                                                     task.main_metric)))
        result = compress_model(teacher.model, prepared.train, prepared.dev, task, ratios, cfg, device, hooks=hooks)
    except TrialFailed as exc:
        return {"status": "failed", "error": str(exc), "ratios": ratio_dict(ratios)}
    return {"status": "done", "ratios": ratio_dict(ratios), "score": result.score, "metrics": result.metrics,
            "achieved_factor": result.achieved_factor, "params": result.student_params.total,
            "seconds": time.perf_counter() - started, "distill": cfg.distill,
            "history": [record.to_json() for record in result.history]}


# ---- the single runs (paper ratios, ablations) go to a pool of worker processes, so they overlap the searches

_WORKER: dict = {}


def _init_worker(args_dict: dict, teacher_dir: str, threads: int) -> None:
    import torch

    from ladasearch.models import pick_device

    torch.set_num_threads(threads)
    args = argparse.Namespace(**args_dict)
    prepared, teacher = C.load_job(args, teacher_dir)
    _WORKER.update(args=args, prepared=prepared, teacher=teacher, device=pick_device(args.device))


def _run_in_worker(label: str, ratios: dict, distill: bool) -> dict:
    from ladasearch.compress import Ratios

    r = Ratios(embedding=ratios["embedding"], svd=ratios["svd"], weight=ratios["weight"], method=ratios["method"])
    cfg = C.train_config(_WORKER["args"], distill=distill)
    return run_variant(label, _WORKER["teacher"], _WORKER["prepared"], r, cfg, _WORKER["device"])


def paper_run(target: float, counts) -> tuple[dict | None, dict | None]:
    """(ratios to run, None) or (None, infeasible result) for the paper's Table-2 ratios."""
    from ladasearch.compress import paper_ratios
    from ladasearch.errors import LadaError

    try:
        return ratio_dict(paper_ratios(counts, target)), None
    except LadaError as exc:
        return None, {"status": "infeasible", "error": str(exc)}


def ablation_runs(target: float, counts, best, skip: set) -> tuple[dict, dict]:
    """({variant: (ratios dict, distill)} to run, {variant: result} needing no run) at the best embedding ratio."""
    from ladasearch.compress import solve
    from ladasearch.errors import LadaError

    todo, done = {}, {}
    for variant in ("prune_only", "svd_only", "no_distill"):
        if variant in skip:
            continue
        if best is None:
            done[variant] = {"status": "skipped", "error": "no searched ratios to start from"}
            continue
        try:
            if variant == "prune_only":
                todo[variant] = (ratio_dict(solve(counts, target, method="prune", embedding=best.embedding)), True)
            elif variant == "svd_only":
                todo[variant] = (ratio_dict(solve(counts, target, method="svd", embedding=best.embedding)), True)
            else:
                todo[variant] = (ratio_dict(best), False)
        except LadaError as exc:
            done[variant] = {"status": "infeasible", "error": str(exc)}
    return todo, done


def run_search_for(target: float, args, teacher_dir, prepared, device, work: Path, tracking: str):
    """The searched row of one target: (result dict, best Ratios or None)."""
    from ladasearch.compress import Ratios
    from ladasearch.errors import LadaError
    from ladasearch.search import SearchConfig, SearchSettings, SearchSpace, run_search

    cfg = C.train_config(args)
    C.log(f"{target:g}x: search, {args.trials} trials ({args.sampler}, {args.scheduler}), space {args.space}")
    cpus = args.cpus_per_trial or float(args.threads or os.cpu_count() or 1)
    gpus = args.gpus_per_trial if args.gpus_per_trial is not None else (
        1.0 / args.concurrency if device.type == "cuda" else 0.0)
    name = f"acc-{prepared.data.task.name}-{target:g}x-{time.strftime('%Y%m%d-%H%M%S')}"
    scfg = SearchConfig(name=name, target=target, num_samples=args.trials, max_concurrent=args.concurrency,
                        cpus_per_trial=cpus, gpus_per_trial=gpus, sampler=args.sampler, scheduler=args.scheduler,
                        seed=args.seed, storage=str(work / "ray"), tracking_uri=tracking,
                        experiment="benchmarks-accuracy")
    t0 = time.perf_counter()
    best_ratios = None
    try:
        settings = SearchSettings(C.data_config(args), args.model, scfg, SearchSpace.load(args.space),
                                  C.teacher_config(args), cfg, teacher_path=teacher_dir, device=args.device)
        outcome = run_search(settings, log=C.log)
        trials = [{k: r.to_json()[k] for k in ("trial_id", "status", "score", "achieved_factor", "config")}
                  for r in outcome.trials]
        best = outcome.best.to_json() if outcome.best is not None else None
        search = {"status": "done" if best else "no trial finished", "name": name,
                  "seconds": time.perf_counter() - t0, "trials": trials, "parent_run_id": outcome.parent_run_id}
        if best:
            r = best["ratios"]
            best_ratios = Ratios(embedding=r["embedding"], svd=r["svd"], weight=r["weight"], method=r["method"])
            # chosen on validation rows; the dev score (the table's number) is measured for the chosen model only
            search.update({"ratios": r, "score": best["dev_score"], "metrics": best["dev_metrics"],
                           "val_score": best["score"],
                           "achieved_factor": best["achieved_factor"],
                           "params": best["student_params"]["total"], "history": best["history"],
                           "config": best.get("config"), "teacher_score_in_search": best.get("teacher_score")})
    except LadaError as exc:
        search = {"status": "infeasible", "error": str(exc), "seconds": time.perf_counter() - t0}
    C.log(f"{target:g}x: search {search['status']} in {C.fmt_time(search['seconds'])}"
          + (f", best {search['score']:.4f}" if "score" in search else f": {search.get('error', '')}"))
    return search, best_ratios


def render(payload: dict) -> tuple[str, str]:
    """(full table, headline table) as markdown."""
    task, teacher = payload["task"], payload["teacher_score"]
    metric = payload["main_metric"]
    rows, head = [], []
    for t in payload["targets"]:
        target = t["target"]
        paper = C.paper_retention(task, target)
        paper_txt = (f"{C.PAPER[task][target]:.1f}/{C.PAPER[task]['teacher']:.1f} = {C.pct(paper)}%"
                     if paper else "")
        cells = {}
        for v in VARIANTS:
            r = t["variants"].get(v)
            if r is None:
                continue
            if r.get("score") is None:
                why = r.get("error") or r.get("status")
                short = f"{r['status']}: {why}" if r["status"] in ("infeasible", "failed") else r["status"]
                rows.append([f"{target:g}x", LABELS[v], "", "", "", "", short, "", ""])
                cells[v] = r["status"]
                continue
            ratio = r["ratios"]
            rows.append([f"{target:g}x", LABELS[v], f"{1 / ratio['embedding']:.2f}x", f"{1 / ratio['svd']:.2f}x",
                         f"{1 / ratio['weight']:.2f}x", f"{r['achieved_factor']:.2f}x", f"{100 * r['score']:.1f}",
                         f"{C.pct(r['score'] / teacher)}%", paper_txt if v == "searched" else ""])
            cells[v] = f"{100 * r['score']:.1f} ({C.pct(r['score'] / teacher)}%)"
        head.append([f"{target:g}x", *[cells.get(v, "") for v in VARIANTS], f"{C.pct(paper)}%" if paper else ""])
    full = C.md_table(["Target", "Variant", "Embedding", "Matrix fact.", "Weight pruning", "Achieved",
                       f"Dev {metric} %", "Score/teacher", "Paper (BERT-base) retention"], rows, align="llrrrrlrr")
    headline = C.md_table(["Target", "Searched", "Paper ratios", "Prune only", "SVD only", "No distillation",
                           "Paper retention"], head, align="lllllll")
    return full, headline


def plot(payload: dict, path: Path) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    teacher, task = payload["teacher_score"], payload["task"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v, marker in zip(VARIANTS, "o^sDv"):
        pts = [(t["target"], t["variants"][v]["score"] / teacher) for t in payload["targets"]
               if t["variants"].get(v, {}).get("score") is not None]
        if pts:
            ax.plot(*zip(*pts), marker=marker, label=LABELS[v])
    paper = [(t, C.paper_retention(task, t)) for t in (2.5, 5.0, 7.5, 10.0) if C.paper_retention(task, t)]
    if paper:
        ax.plot(*zip(*paper), "k--", marker="x", label="paper (BERT-base)")
    ax.set_xlabel("target reduction factor")
    ax.set_ylabel("dev score / teacher score")
    ax.set_title(f"{task}: {payload['model']} teacher {100 * teacher:.1f}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return C.save_png(fig, path)

def main(argv=None) -> dict:
    args = parse_args(argv)
    threads = C.set_threads(args)
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from ladasearch.compress import count_parameters
    from ladasearch.models import pick_device
    from ladasearch.search import init_ray

    started = time.perf_counter()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="ladasearch-bench-accuracy-"))
    work.mkdir(parents=True, exist_ok=True)
    tracking = args.tracking_uri or f"sqlite:///{work.resolve() / 'mlflow.db'}"
    C.log(f"work dir {work} (Ray state, MLflow store {tracking})")
    teacher_dir, _ = C.teacher_folder(args)
    prepared, teacher = C.load_job(args, teacher_dir)
    device = pick_device(args.device)
    counts = count_parameters(teacher.model)
    task = prepared.data.task
    name = args.name or f"accuracy-{task.name}"
    out_dir = Path(args.out_dir) if args.out_dir else C.RESULTS
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    targets = [float(t) for t in args.targets.split(",")]
    payload = {"benchmark": "accuracy", "command": C.command_line(), "args": vars(args), "machine": C.machine(),
               "task": task.name, "main_metric": task.main_metric, "model": args.model,
               "train_rows": len(prepared.train), "dev_rows": len(prepared.dev), "teacher": teacher_dir,
               "teacher_score": teacher.score, "teacher_params": counts.to_json(),
               "train_config": {k: v for k, v in vars(C.train_config(args)).items() if k != "loss_weights"},
               "work_dir": str(work), "tracking_uri": tracking, "complete": False,
               "targets": [{"target": t, "variants": {}} for t in targets]}
    by_target = {t["target"]: t for t in payload["targets"]}
    C.log(f"teacher {teacher_dir}: dev {task.main_metric} {teacher.score:.4f} on {len(prepared.dev)} rows; "
          f"{counts.total:,} params; {threads} torch thread(s) per process, {args.workers} worker process(es), "
          f"{args.concurrency} search trial(s) at a time")
    futures = {}

    def save() -> None:
        payload["wall_s"] = time.perf_counter() - started
        for t in payload["targets"]:
            t["variants"] = {v: t["variants"][v] for v in VARIANTS if v in t["variants"]}
        full, headline = render(payload)
        C.write_result(name, payload, full + "\n\n" + headline, out_dir)  # partial results as they come

    def harvest(wait: bool = False) -> None:
        from concurrent.futures import FIRST_COMPLETED
        from concurrent.futures import wait as wait_for

        while futures:
            if wait:
                wait_for(list(futures.values()), return_when=FIRST_COMPLETED)
            ready = [key for key, future in futures.items() if future.done()]
            if not ready:
                return
            for key in ready:
                target, variant = key
                try:
                    by_target[target]["variants"][variant] = futures.pop(key).result()
                except Exception as exc:  # a crashed worker: keep the other results
                    by_target[target]["variants"][variant] = {"status": "failed", "error": repr(exc)}
            save()

    def submit(target: float, variant: str, ratios: dict, distill: bool) -> None:
        futures[(target, variant)] = pool.submit(_run_in_worker, f"{target:g}x {variant}", ratios, distill)

    pool = ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("spawn"), initializer=_init_worker,
                               initargs=(vars(args), teacher_dir, threads))
    init_ray(None)  # one local Ray for all searches (run_search leaves a running Ray alone)
    try:
        if "paper" not in skip:  # the paper's ratios do not depend on the search: queue them first
            for target in targets:
                ratios, result = paper_run(target, counts)
                if ratios is None:
                    by_target[target]["variants"]["paper"] = result
                    C.log(f"{target:g}x paper: {result['status']}: {result['error']}")
                else:
                    submit(target, "paper", ratios, True)
        for target in targets:
            search, best = run_search_for(target, args, teacher_dir, prepared, device, work, tracking)
            by_target[target]["variants"]["searched"] = search
            todo, done = ablation_runs(target, counts, best, skip)
            by_target[target]["variants"].update(done)
            for variant, (ratios, distill) in todo.items():
                submit(target, variant, ratios, distill)
            save()
            harvest()
        harvest(wait=True)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        import ray
        ray.shutdown()
    payload["complete"] = True
    save()
    full, headline = render(payload)
    png = plot(payload, out_dir / f"{name}.png")
    text = (f"{task.name}: {args.model} teacher dev {task.main_metric} {100 * teacher.score:.1f} "
            f"({len(prepared.train)} train rows, {len(prepared.dev)} dev rows, max_length {args.max_length}); "
            f"each trial {args.rounds} rounds x {args.steps_per_round} steps + {args.final_steps} final steps, "
            f"batch {args.batch_size}, lr {args.lr:g}; search: {args.trials} {args.sampler} trials per target. "
            f"Wall time {C.fmt_time(payload['wall_s'])}.\n\n{full}\n\nHeadline (dev {task.main_metric} %, "
            f"in brackets score/teacher):\n\n{headline}\n")
    print(text)
    C.write_result(name, payload, text, out_dir)
    if png:
        C.log(f"plot {png}")
    return payload


if __name__ == "__main__":
    main()
