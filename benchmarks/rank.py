"""How well each cheap rung predicts the score the pipeline ships: Spearman over many configurations.

The pipeline a user runs screens configurations untrained (rung 0, ``--screen``), trains a few as trials
(rounds of compression + distillation, scored on validation after every round), and gives the best one the
final budget.  For the screen and ASHA to be worth their cost, the cheap scores must rank configurations
as the expensive one does.  This measures that, per configuration of one space at one target:

    rung 0      the configuration compressed in one shot from the calibration statistics, val score (``screen``)
    round r     the trial's val score after round r (cumulative training steps)
    final@k     the val score at step k of the final distillation (warm-up + decay over the whole budget)
    target      the dev score of the final distillation's best checkpoint (chosen on val): what a user ships

and reports Spearman's rho (and Kendall's tau) of every cheap score against the target, over the configurations.

Shards, so the configurations are screened and trained side by side (one thread each); each shard samples its
own configurations at random (the search's seed + 1000 x shard):

    python benchmarks/rank.py train  --task sst2 --target 10 --configs 20 --work /tmp/rank/sst2 --shard 0/2  # and 1/2
    python benchmarks/rank.py report --task sst2 --target 10 --configs 20 --work /tmp/rank/sst2

``train`` skips configurations whose result file exists, so a killed shard continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import _common as C

PLUGINS = {"factorizer": "activation", "prune_score": "taylor"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=("train", "report"))
    C.add_data_args(p, max_train=20000, threads=1)
    C.add_train_args(p, rounds=2, steps_per_round=20, final_steps=20)
    p.add_argument("--target", type=float, default=10.0)
    p.add_argument("--space", default="structured")
    p.add_argument("--configs", type=int, default=20, help="configurations screened and trained")
    p.add_argument("--final-budget", type=int, default=200, help="steps of each configuration's final distillation")
    p.add_argument("--final-eval-every", type=int, default=50)
    p.add_argument("--shard", default="0/1", help="k/n: this process screens and trains its share (configurations k, k+n, ...)")
    p.add_argument("--work", required=True)
    p.add_argument("--out-dir", default=None)
    args = p.parse_args(argv)
    args.teacher_steps, args.teacher_lr = 600, 1e-4  # the frontier's teacher (cached)
    return args


def settings_of(args):
    from ladasearch.config import CompressionConfig, FinalBudget
    from ladasearch.search import SearchConfig, SearchSettings, SearchSpace

    space = SearchSpace.load(args.space)
    space = replace(space, compression=space.compression.fixed(**PLUGINS))
    cfg = SearchConfig(name="rank", target=args.target, num_samples=1, max_concurrent=1, cpus_per_trial=1,
                       seed=args.seed, screen=args.configs, storage=str(Path(args.work) / "runs"))
    return SearchSettings(data=C.data_config(args), model=args.model, search=cfg, space=space,
                          teacher=C.teacher_config(args), train=C.train_config(args),
                          compression=CompressionConfig(**PLUGINS), teacher_path=args.teacher_path,
                          cache_dir=args.cache_dir,
                          final=FinalBudget(amount=args.final_budget, unit="steps",
                                            eval_every=args.final_eval_every))


def build(args):
    from ladasearch.search.driver import _build

    settings = settings_of(args)
    return settings, _build(settings, C.log)


def screen_shard(args, built, k: int, n: int) -> dict:
    """This shard's share of the configurations, sampled at random and screened untrained (rung 0); kept in
    ``screen-<k>.json`` so a killed shard does not screen again."""
    import optuna

    from ladasearch.search.samplers import search_seed
    from ladasearch.search.screen import screen

    path = Path(args.work) / f"screen-{k}.json"
    if path.is_file():
        return json.loads(path.read_text())
    count = len(range(k, args.configs, n))
    started = time.perf_counter()
    points = screen(built.payload, count, search_seed(args.seed, args.task, args.target) + 1000 * k, "cpu", C.log)
    record = {"seconds": time.perf_counter() - started, "teacher_score": built.teacher_score,
              "teacher": built.payload.context.teacher,
              # the space's fixed values, which a trial's config also holds
              "constants": built.payload.space.define_by_run(optuna.create_study().ask()),
              "points": [p.to_json() for p in points]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    C.log(f"shard {k}: screened {len(points)} configurations in {C.fmt_time(record['seconds'])}")
    return record


def train_one(settings, built, label: str, point: dict, constants: dict, work: Path) -> dict:
    """The pipeline on one configuration: its trial (rounds scored on val), then the final budget; dev once."""
    from ladasearch.compress import make_plan
    from ladasearch.jobs.final import distill_final
    from ladasearch.train.ladabert import compress_model
    from ladasearch.search.calibration import trial_statistics
    from ladasearch.search.dev_eval import score_on_dev
    from ladasearch.search.final_stage import final_train_rows
    from ladasearch.search.worker import trained_steps
    from ladasearch.serialize import save_compressed

    payload = built.payload
    config = {**point["params"], **constants}
    ratios = payload.space.ratios(config, payload.counts, payload.context.target, payload.widths)
    compression = payload.space.compression.config(payload.compression, config)
    train_cfg = payload.space.train_config(payload.train_cfg, config)
    teacher = payload.teacher()
    stats = trial_statistics(payload.stats, compression, make_plan(teacher, ratios))
    started = time.perf_counter()
    result = compress_model(teacher, payload.train, payload.val, payload.task, ratios, train_cfg, "cpu",
                            compression=compression, stats=stats, eval_split="val")
    trial_seconds = time.perf_counter() - started
    summary = result.summary(config=dict(config), **asdict(payload.context))
    folder = work / f"config-{label}"
    save_compressed(result.student, folder / "trial", summary)
    rounds = [{"round": r.round, "final": r.final, "steps": trained_steps(r, train_cfg), "score": r.score,
               "factor": r.achieved_factor} for r in result.history]
    train = final_train_rows(settings, payload.train, C.log)
    started = time.perf_counter()
    final = distill_final(folder / "trial", summary, teacher, train, payload.val, payload.task, train_cfg,
                          settings.final, folder / "final", "cpu", C.log)
    final_seconds = time.perf_counter() - started
    scored = score_on_dev(final.folder, final.summary, built.dev.features, payload.task)
    return {"label": label, "params": point["params"], "rung0": point["score"], "rounds": rounds,
            "final_curve": [p.to_json() for p in final.curve], "final_best_step": final.best.step,
            "dev": scored.dev_score, "achieved_factor": rounds[-1]["factor"], "trial_seconds": trial_seconds,
            "final_seconds": final_seconds}


def train_phase(args) -> None:
    """Shard k of n: screen its configurations, then run each through the pipeline (skipping finished ones)."""
    work = Path(args.work)
    k, n = (int(x) for x in args.shard.split("/"))
    C.set_threads(args)
    settings, built = build(args)
    screened = screen_shard(args, built, k, n)
    todo = [(f"{k}-{i:02d}", p) for i, p in enumerate(screened["points"]) if p["score"] is not None]
    todo = [(label, p) for label, p in todo if not (work / f"config-{label}.json").is_file()]
    C.log(f"shard {k}/{n}: {len(todo)} configurations to train")
    for done, (label, point) in enumerate(todo, 1):
        C.log(f"config {label} ({done}/{len(todo)} of this shard): rung 0 val {point['score']:.4f}")
        row = train_one(settings, built, label, point, screened["constants"], work)
        (work / f"config-{label}.json").write_text(json.dumps(row, indent=2, default=C._jsonable) + "\n")
        C.log(f"config {label}: dev {row['dev']:.4f} (trial {C.fmt_time(row['trial_seconds'])}, "
              f"final {C.fmt_time(row['final_seconds'])})")


# ---- report -------------------------------------------------------------------------------------

def ranks(values: list[float]) -> list[float]:
    """Average ranks (ties share the mean of their positions)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for m in range(i, j + 1):
            out[order[m]] = (i + j) / 2 + 1
        i = j + 1
    return out


def pearson(x: list[float], y: list[float]) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def spearman(x: list[float], y: list[float]) -> float:
    return pearson(ranks(x), ranks(y))


def kendall(x: list[float], y: list[float]) -> float:
    concordant = discordant = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            s = (x[i] - x[j]) * (y[i] - y[j])
            concordant += s > 0
            discordant += s < 0
    pairs = len(x) * (len(x) - 1) / 2
    return (concordant - discordant) / pairs if pairs else math.nan


def top_hit(x: list[float], y: list[float], k: int) -> float:
    """The target score of the best of the top-k by ``x``, minus the best target: what choosing by x loses."""
    chosen = sorted(range(len(x)), key=lambda i: -x[i])[:k]
    return max(y[i] for i in chosen) - max(y)


def round_steps(entry: dict, args) -> int:
    """The steps trained at a trial record (``worker.trained_steps``'s rule; rows written before the rule was
    fixed counted the final record's round number as a training round)."""
    final = entry.get("final", entry["round"] > args.rounds)
    return min(entry["round"], args.rounds) * args.steps_per_round + (args.final_steps if final else 0)


def cheap_scores(rows: list[dict], args) -> dict[str, tuple[float, list[float]]]:
    """Every cheap score, with the training steps it costs, per configuration (only those every row has)."""
    scores: dict[str, tuple[float, list[float]]] = {"rung 0 (untrained)": (0, [r["rung0"] for r in rows])}
    for i, first in enumerate(rows[0]["rounds"]):
        if all(len(r["rounds"]) > i for r in rows):
            final = first.get("final", first["round"] > args.rounds)
            label = "trial, its final steps" if final else f"trial round {first['round']}"
            scores[label] = (round_steps(first, args), [r["rounds"][i]["score"] for r in rows])
    trial_steps = round_steps(rows[0]["rounds"][-1], args)
    for j, point in enumerate(rows[0]["final_curve"][1:], 1):
        scores[f"final val @ {point['step']}"] = (trial_steps + point["step"],
                                                   [r["final_curve"][j]["score"] for r in rows])
    return scores


def report(args) -> dict:
    work = Path(args.work)
    screens = [json.loads(p.read_text()) for p in sorted(work.glob("screen-*.json"))]
    rows = [json.loads(p.read_text()) for p in sorted(work.glob("config-*.json"))]
    if len(rows) < 3:
        raise SystemExit(f"{len(rows)} configurations trained in {work}; need at least 3")
    target = [r["dev"] for r in rows]
    table = []
    for label, (steps, values) in cheap_scores(rows, args).items():
        table.append({"score": label, "train_steps": steps, "spearman": spearman(values, target),
                      "kendall": kendall(values, target), "top1_loss": top_hit(values, target, 1),
                      "top3_loss": top_hit(values, target, 3)})
    screened = sum(len(s["points"]) for s in screens)
    seconds = {"screen_per_config": sum(s["seconds"] for s in screens) / max(screened, 1),
               "trial_mean": sum(r["trial_seconds"] for r in rows) / len(rows),
               "final_mean": sum(r["final_seconds"] for r in rows) / len(rows)}
    return {"task": args.task, "target": args.target, "space": args.space, "configs": len(rows),
            "screened": screened, "teacher_score": screens[0]["teacher_score"],
            "final_budget": args.final_budget, "rows": rows, "table": table, "seconds": seconds,
            "command": C.command_line(), "machine": C.machine()}


def markdown(result: dict) -> str:
    dev = [r["dev"] for r in result["rows"]]
    s = result["seconds"]
    lines = [f"# Rank correlation of the cheap rungs: {result['task']} {result['target']:g}x {result['space']}",
             "", f"`{result['command']}`", "",
             f"{result['configs']} configurations (of {result['screened']} screened, sampled at random by the "
             f"screen), each run through the pipeline: its trial, then a {result['final_budget']}-step final "
             f"distillation; the target is the dev score of the final's best checkpoint (chosen on val). "
             f"Teacher dev {100 * result['teacher_score']:.1f}; the configurations' target dev "
             f"{100 * min(dev):.1f}-{100 * max(dev):.1f} (mean {100 * sum(dev) / len(dev):.1f}). "
             f"Cost per configuration: screen {s['screen_per_config']:.0f} s, trial {s['trial_mean']:.0f} s, "
             f"final {s['final_mean']:.0f} s (one thread each, two processes side by side).", "",
             "top-k loss: the target dev of the best of the top k by the cheap score, minus the best target dev "
             "(points; 0 = the cheap score finds the best).", ""]
    lines.append(C.md_table(["cheap score", "train steps", "Spearman rho", "Kendall tau", "top-1 loss", "top-3 loss"],
                            [[t["score"], t["train_steps"], f"{t['spearman']:.2f}", f"{t['kendall']:.2f}",
                              f"{100 * t['top1_loss']:+.1f}", f"{100 * t['top3_loss']:+.1f}"]
                             for t in result["table"]], "lrrrrr"))
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path, args) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    scores = cheap_scores(rows, args)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    dev = [100 * r["dev"] for r in rows]
    for label in ("rung 0 (untrained)", next(k for k in scores if k.startswith("trial round")),
                  list(scores)[-1]):
        axes[0].scatter([100 * v for v in scores[label][1]], dev, label=label, s=18)
    axes[0].set_xlabel("cheap score (val)")
    axes[0].set_ylabel("target: dev after the final budget")
    axes[0].legend(fontsize=7)
    table = result["table"]
    axes[1].plot([t["train_steps"] for t in table], [t["spearman"] for t in table], "o-")
    axes[1].set_xlabel("training steps the cheap score costs")
    axes[1].set_ylabel("Spearman rho vs target")
    axes[1].axhline(0, color="grey", lw=0.5)
    fig.suptitle(f"{result['task']} {result['target']:g}x {result['space']}: {len(rows)} configurations")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    args = parse_args(argv)
    if args.phase == "train":
        train_phase(args)
    else:
        result = report(args)
        name = f"rank-{args.task}-{args.target:g}x"
        path = C.write_result(name, result, markdown(result), args.out_dir)
        plot(result, path.with_suffix(".png"), args)
        print(markdown(result))


if __name__ == "__main__":
    sys.exit(main())
