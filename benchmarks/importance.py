"""Data-aware compression: every factorizer x pruning score, then the best two against plain SVD + magnitude.

On one teacher, at each target (default 5x and 10x) with the same hybrid ratios for every arm (the
embedding ratio and SVD-vs-pruning split of the best searched SST-2 ratios in results/accuracy-sst2.json,
the encoder ratio solved from eq. 7 for this model):
    (a) right after compression, no training: every factorizer x every pruning score.  The loop runs its
        rounds with a learning rate of 1e-12, so the weights change only by compression while first-order
        scores (taylor, movement) still see the distillation gradients they accumulate over the round.
    (b) after the usual training (3 rounds x 20 steps + 20 final steps, as benchmarks/accuracy.py):
        plain svd + magnitude against the two best data-aware pairs, chosen by the mean (a)-score on a
        VALIDATION split carved from train (never on dev), several seeds, mean +- std on dev.
Calibration statistics (Gram matrices, Fisher rows) are gathered once from train batches and shared by all runs.

    python benchmarks/importance.py --task sst2 --threads 1
    python benchmarks/importance.py --task mnli --teacher /path/to/mnli-teacher --max-train 0 --max-dev 2000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

FACTORIZERS = ("svd", "fisher", "activation")
SCORES = ("magnitude", "taylor", "movement", "wanda")
BASELINE = ("svd", "magnitude")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_data_args(p, threads=1)
    C.add_train_args(p, steps_per_round=20, final_steps=20)
    g = p.add_argument_group("this benchmark")
    g.add_argument("--targets", default="5,10")
    g.add_argument("--seeds", default="0,1,2", help="seeds of part (b)")
    g.add_argument("--val-size", type=int, default=500, help="validation rows carved from train (choices only)")
    g.add_argument("--calibration-batches", type=int, default=16, help="train batches for the statistics")
    g.add_argument("--oneshot-steps", type=int, default=8, help="part (a): steps per round at lr 1e-12")
    g.add_argument("--ratios-from", default=str(C.RESULTS / "accuracy-sst2.json"))
    g.add_argument("--parts", default="a,b")
    g.add_argument("--trained-targets", default=None, help="targets of part (b) (default: all of --targets)")
    g.add_argument("--name", default=None, help="result file name (default importance-<task>)")
    g.add_argument("--out-dir", default=None)
    g.add_argument("--plot-only", default=None, metavar="JSON", help="redraw the PNG of a results file and stop")
    return p.parse_args(argv)


def split_train(features, val_size: int, seed: int):
    """(train, val): a seeded random ``val_size`` rows held out of the student's train rows."""
    import torch

    from ladasearch.train.features import Features

    order = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))
    pick = lambda idx: Features(*(t[idx] for t in (features.input_ids, features.attention_mask,  # noqa: E731
                                                    features.token_type_ids, features.labels)))
    return pick(order[val_size:]), pick(order[:val_size])


def target_ratios(path: str, counts, targets):
    """{target: Ratios}: the searched best's embedding ratio and split at each target, re-solved for this model."""
    import math

    from ladasearch.compress.budget import split_ratios

    found = {t["target"]: t["variants"]["searched"]["ratios"] for t in json.loads(Path(path).read_text())["targets"]
             if t["variants"].get("searched", {}).get("ratios")}
    out = {}
    for target in targets:
        r = found[target]
        split = math.log(r["svd"]) / math.log(r["svd"] * r["weight"])
        out[target] = split_ratios(counts, target, r["embedding"], split, "hybrid")
    return out


def build_job(args) -> tuple[dict, str, dict]:
    """(job, teacher folder, statistics info): teacher, train/val/dev, task, device and the calibration
    statistics every plug-in may read, gathered once from the train rows."""
    from ladasearch.compress.calibration import STATISTICS, collect_statistics
    from ladasearch.models import pick_device

    teacher_dir, _ = C.teacher_folder(args)
    prepared, teacher = C.load_job(args, teacher_dir)
    device, task = pick_device(args.device), prepared.data.task
    train, val = split_train(prepared.train, args.val_size, args.seed)
    t0 = time.perf_counter()
    stats = collect_statistics(teacher.model, train, frozenset(STATISTICS), batches=args.calibration_batches,
                               batch_size=args.batch_size, device=device, task=task)
    info = {"seconds": time.perf_counter() - t0, "bytes": stats.nbytes(),
            "examples": args.calibration_batches * args.batch_size}
    C.log(f"statistics: {info['examples']} examples, {info['bytes'] / 2**20:.1f} MiB, {info['seconds']:.1f}s")
    job = {"teacher": teacher, "train": train, "val": val, "dev": prepared.dev, "task": task, "device": device,
           "stats": stats}
    return job, teacher_dir, info


def run_one(job, ratios, cfg, factorizer: str, score: str) -> dict:
    from ladasearch import CompressionConfig, compress_model
    from ladasearch.data import main_score
    from ladasearch.train.evaluate import evaluate
    from ladasearch.train.ladabert import TrialFailed

    started = time.perf_counter()
    compression = CompressionConfig(factorizer=factorizer, prune_score=score)
    try:
        result = compress_model(job["teacher"].model, job["train"], job["val"], job["task"], ratios, cfg,
                                job["device"], compression=compression, stats=job["stats"])
    except TrialFailed as exc:
        return {"factorizer": factorizer, "score_name": score, "status": "failed", "error": str(exc)}
    dev = evaluate(result.student, job["dev"], job["task"], device=job["device"])
    row = {"factorizer": factorizer, "score_name": score, "status": "done", "seed": cfg.seed,
           "val": result.score, "dev": main_score(job["task"], dev), "achieved_factor": result.achieved_factor,
           "val_rounds": [r.score for r in result.history], "seconds": time.perf_counter() - started}
    C.log(f"  {factorizer}+{score} seed {cfg.seed}: val {row['val']:.4f} dev {row['dev']:.4f} "
          f"({row['achieved_factor']:.3f}x, {row['seconds']:.0f}s)")
    return row


def mean_std(values):
    return (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0) if values else (None, None)


def render(payload: dict) -> str:
    teacher, lines = payload["teacher_score"], []
    for t in payload["targets"]:
        lines.append(f"\n### {payload['task']} {t['target']:g}x, (a) right after compression, no training "
                     f"(dev %, val % in brackets)\n")
        cell = {(r["factorizer"], r["score_name"]): r for r in t.get("oneshot", [])}
        rows = [[f, *[f"{100 * cell[(f, s)]['dev']:.1f} ({100 * cell[(f, s)]['val']:.1f})"
                      if cell.get((f, s), {}).get("status") == "done" else cell.get((f, s), {}).get("status", "")
                      for s in SCORES]] for f in FACTORIZERS]
        lines.append(C.md_table(["factorizer \\ score", *SCORES], rows))
        if t.get("trained"):
            lines.append(f"\n### {payload['task']} {t['target']:g}x, (b) after training, "
                         f"{len(payload['seeds'])} seeds (dev %, mean +- std)\n")
            rows = []
            for arm in t["trained"]:
                m, s = mean_std([r["dev"] for r in arm["runs"] if r["status"] == "done"])
                vm, _ = mean_std([r["val"] for r in arm["runs"] if r["status"] == "done"])
                rows.append([arm["arm"], "" if m is None else f"{100 * m:.1f} +- {100 * s:.1f}",
                             "" if m is None else f"{C.pct(m / teacher)}%", "" if vm is None else f"{100 * vm:.1f}",
                             sum(r["status"] != "done" for r in arm["runs"])])
            lines.append(C.md_table(["arm", "dev", "score/teacher", "val (mean)", "failed"], rows))
    return "\n".join(lines)


def plot(payload: dict, path: Path) -> Path:
    """Part (a) as grouped bars (dev score per factorizer x score, per target) and part (b) with seed spread."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    teacher = payload["teacher_score"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / len(SCORES)
    for t in payload["targets"]:
        cell = {(r["factorizer"], r["score_name"]): r.get("dev") for r in t.get("oneshot", [])}
        for i, score in enumerate(SCORES):
            xs = [j + i * width + (0.02 if t["target"] < 10 else 0) for j in range(len(FACTORIZERS))]
            ys = [100 * (cell.get((f, score)) or 0) for f in FACTORIZERS]
            axes[0].bar(xs, ys, width * 0.9, label=f"{score} ({t['target']:g}x)", alpha=0.9 if t["target"] >= 10 else 0.45)
    axes[0].set_xticks([j + 0.4 - width / 2 for j in range(len(FACTORIZERS))], FACTORIZERS)
    axes[0].axhline(100 * teacher, color="black", linestyle="--", linewidth=0.8, label="teacher")
    axes[0].set_ylabel("dev %, right after compression")
    axes[0].set_title("(a) no training")
    axes[0].legend(fontsize=7, ncol=2)
    arms = [(t["target"], arm) for t in payload["targets"] for arm in t.get("trained", [])]
    for k, (target, arm) in enumerate(arms):
        devs = [100 * r["dev"] for r in arm["runs"] if r["status"] == "done"]
        m, sd = mean_std(devs)
        if m is not None:
            axes[1].bar(k, m, yerr=sd, capsize=4, color="tab:grey" if arm["arm"] == "+".join(BASELINE) else "tab:blue")
            axes[1].scatter([k] * len(devs), devs, color="black", s=10, zorder=3)
    axes[1].set_xticks(range(len(arms)), [f"{a['arm']}\n{t:g}x" for t, a in arms], fontsize=8)
    axes[1].axhline(100 * teacher, color="black", linestyle="--", linewidth=0.8)
    axes[1].set_ylabel("dev %, after training (mean +- std, seeds as dots)")
    axes[1].set_title(f"(b) {len(payload['seeds'])} seeds, arms chosen on validation")
    fig.suptitle(f"{payload['task']}: teacher {100 * teacher:.1f}")
    return C.save_png(fig, path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.plot_only:
        source = Path(args.plot_only)
        return {"plot": str(plot(json.loads(source.read_text()), source.with_suffix(".png")))}
    C.set_threads(args)
    from ladasearch.compress import count_parameters

    started = time.perf_counter()
    job, teacher_dir, stats_info = build_job(args)
    teacher, task, train, val = job["teacher"], job["task"], job["train"], job["val"]
    counts = count_parameters(teacher.model)
    targets = [float(t) for t in args.targets.split(",")]
    ratios = target_ratios(args.ratios_from, counts, targets)
    seeds = [int(s) for s in args.seeds.split(",")]
    base_cfg = C.train_config(args)
    payload = {"benchmark": "importance", "command": C.command_line(), "args": vars(args), "machine": C.machine(),
               "task": task.name, "main_metric": task.main_metric, "teacher": teacher_dir,
               "teacher_score": teacher.score, "train_rows": len(train), "val_rows": len(val),
               "dev_rows": len(job["dev"]), "statistics": stats_info, "seeds": seeds, "train_config":
               {k: v for k, v in vars(base_cfg).items() if k != "loss_weights"}, "targets": []}
    name = args.name or f"importance-{task.name}"
    parts = set(args.parts.split(","))
    for target in targets:
        r = ratios[target]
        entry = {"target": target, "ratios": {"embedding": r.embedding, "svd": r.svd, "weight": r.weight}}
        payload["targets"].append(entry)
        if "a" in parts:
            C.log(f"{target:g}x (a): every factorizer x score, no training")
            oneshot = replace(base_cfg, steps_per_round=args.oneshot_steps, final_steps=0, learning_rate=1e-12)
            entry["oneshot"] = [run_one(job, r, oneshot, f, s) for f in FACTORIZERS for s in SCORES]
            C.write_result(name, payload, render(payload), args.out_dir)
    if "b" in parts:
        # the two best data-aware pairs by mean validation score over the targets of part (a)
        pairs = {}
        for t in payload["targets"]:
            for row in t.get("oneshot", []):
                if row["status"] == "done" and (row["factorizer"], row["score_name"]) != BASELINE:
                    pairs.setdefault((row["factorizer"], row["score_name"]), []).append(row["val"])
        chosen = sorted(pairs, key=lambda p: -statistics.mean(pairs[p]))[:2]
        payload["chosen_on_val"] = [f"{f}+{s}" for f, s in chosen]
        C.log(f"(b): arms svd+magnitude and {', '.join(payload['chosen_on_val'])} (chosen on validation)")
        trained = {float(t) for t in args.trained_targets.split(",")} if args.trained_targets else set(targets)
        for entry in [t for t in payload["targets"] if t["target"] in trained]:
            r = ratios[entry["target"]]
            entry["trained"] = []
            for f, s in [BASELINE, *chosen]:
                runs = [run_one(job, r, replace(base_cfg, seed=seed), f, s) for seed in seeds]
                entry["trained"].append({"arm": f"{f}+{s}", "runs": runs})
                C.write_result(name, payload, render(payload), args.out_dir)
    return finish(payload, name, args, started, render, plot)


def finish(payload: dict, name: str, args, started: float, render, plot) -> dict:
    """Mark the results complete, write them (JSON, markdown, PNG) and print the markdown."""
    payload["seconds"] = time.perf_counter() - started
    payload["complete"] = True
    C.write_result(name, payload, render(payload), args.out_dir)
    plot(payload, Path(args.out_dir or C.RESULTS) / f"{name}.png")
    print(render(payload))
    return payload


if __name__ == "__main__":
    main()
