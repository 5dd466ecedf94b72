"""The frontier against the int8 teacher: the pipeline as a user runs it (search + final budget), each student
measured in every runtime beside the dense teacher in torch and in onnxruntime int8.

Two steps, so that parts run side by side (one thread each) and are all timed in one process afterwards:

    python benchmarks/frontier.py search --task sst2 --target 5 --space structured --seed 0 --work W
        runs `ladasearch run ... --final-budget N` (the CLI, as a user types it) in W/<label>/, and writes
        W/<label>.json: the command, its wall time, the search's summary of the shipped model (val and dev
        after the final budget, the trial's own dev score, the final curve)
    python benchmarks/frontier.py final --task sst2 --work W --part 5x-structured-seed0 --seed 1 [--final-budget N]
        distils the configuration that part's search chose again, from the same trial checkpoint, with another
        seed (batch order and dropout) and/or another budget, as the search's final stage does; writes
        W/<part>-final<budget>-seed<S>.json beside the parts (measure scores it with them)
    python benchmarks/frontier.py measure --task sst2 --work W
        exports every part's best model (hf, onnx, onnx-int8 through `export-model`) and the teacher (torch,
        onnx, onnx-int8), times them (batch 1 and 32, length 128, one thread, interleaved in this process),
        scores them on the dev rows, and writes results/frontier-<task>.{json,md,png}

The aim (issue): on SST-2 a student at least 2.5x faster than the int8 teacher at batch 32 and within 0.5 dev
point of it; on MNLI-m at least 2x faster and within 1.0 point.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import _common as C
import _deployment as D

AIMS = {"sst2": (2.5, 0.5), "mnli": (2.0, 1.0)}   # (speed-up over the int8 teacher at batch 32, dev points lost)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="step", required=True)
    s = sub.add_parser("search", help="one part: the pipeline at one target and space")
    s.add_argument("--task", required=True)
    s.add_argument("--target", type=float, required=True)
    s.add_argument("--space", default="structured", help="structured (heads and neurons removed) or ratios")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--work", required=True)
    s.add_argument("--final-budget", default="1000")
    s.add_argument("--extra", default="", help="more `ladasearch run` options, space-separated")
    f = sub.add_parser("final", help="the final distillation of a finished part again: another seed or budget")
    f.add_argument("--task", required=True)
    f.add_argument("--work", required=True)
    f.add_argument("--part", required=True, help="a finished search part's label, e.g. 10x-structured-seed0")
    f.add_argument("--seed", type=int, required=True)
    f.add_argument("--final-budget", default="1000")
    m = sub.add_parser("measure", help="time and score every part beside the teacher")
    m.add_argument("--task", required=True)
    m.add_argument("--work", required=True)
    m.add_argument("--runs", type=int, default=10)
    m.add_argument("--out-dir", default=None)
    m.add_argument("--reuse", action="store_true",
                   help="keep the teacher's and every part's rows from the last results JSON; measure new parts only")
    for q in (s, f, m):
        q.add_argument("--data-dir", default=os.environ.get("LADASEARCH_DATA_DIR"))
        q.add_argument("--max-train", type=int, default=20000)
        q.add_argument("--max-length", type=int, default=64)
        q.add_argument("--teacher-steps", type=int, default=600)
        q.add_argument("--teacher-lr", type=float, default=1e-4)
    args = p.parse_args(argv)
    if not args.data_dir:
        p.error("give --data-dir or set LADASEARCH_DATA_DIR (the GLUE folder)")
    return args


def label_of(target: float, space: str, seed: int) -> str:
    return f"{target:g}x-{Path(space).stem}-seed{seed}"  # a space given as a YAML file is named by its stem


def search_part(args, label: str | None = None) -> dict:
    """`ladasearch run` as a user types it (``args.extra`` appended: click keeps an option's last value); its
    shipped model's summary."""
    from ladasearch.serialize import saved_summary

    label = label or label_of(args.target, args.space, args.seed)
    folder = Path(args.work).resolve() / label
    folder.mkdir(parents=True, exist_ok=True)
    plugins = ["--factorizer", "activation", "--prune-score", "taylor"]
    command = [sys.executable, "-m", "ladasearch.cli", "run", "--task", args.task, "--target", f"{args.target:g}x",
               "--data-dir", args.data_dir, "--max-train", str(args.max_train), "--max-length", str(args.max_length),
               "--teacher-steps", str(args.teacher_steps), "--teacher-lr", str(args.teacher_lr),
               "--space", args.space, *plugins, "--trials", "4", "--concurrency", "1", "--cpus-per-trial", "1",
               "--threads", "1", "--rounds", "2", "--steps-per-round", "20", "--final-steps", "20",
               "--final-budget", args.final_budget, "--seed", str(args.seed), "--name", label,
               "--storage", str(folder / "runs"), "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}",
               *args.extra.split()]
    C.log(" ".join(command))
    started = time.perf_counter()
    with open(folder / "run.log", "w") as out:
        done = subprocess.run(command, cwd=folder, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - started
    text = (folder / "run.log").read_text()
    if done.returncode != 0:
        raise SystemExit(f"{label}: ladasearch run exited {done.returncode}; see {folder / 'run.log'}")
    best = next(line.split("best model: ", 1)[1].strip() for line in text.splitlines()
                if line.startswith("best model: "))
    summary = saved_summary(best)
    # with --final-budget 0 there is no final stage: the shipped model is the trial's own checkpoint
    done_line = next((line for line in text.splitlines() if line.startswith("final distillation done: ")), "")
    if not done_line:
        trial_dev = summary.dev_score
    else:
        trial_dev = float(done_line.split(", dev ", 1)[1].split(" ", 1)[0]) if ", dev " in done_line else None
    part = {"trial_dev": trial_dev, "label": label, "target": args.target, "space": args.space, "seed": args.seed,
            "command": " ".join(command), "seconds": seconds, "best_model": best, "summary": summary.to_json()}
    (Path(args.work) / f"{label}.json").write_text(json.dumps(part, indent=2, default=C._jsonable) + "\n")
    C.log(f"{label}: dev {summary.dev_score}, val {summary.score_at_target}, {C.fmt_time(seconds)}")
    return part


def chosen_checkpoint(search_folder: Path, config: dict) -> Path:
    """The trial checkpoint the search's final stage started from: the trial whose sampled config it shipped."""
    from ladasearch.serialize import saved_summary

    found = [c for c in sorted(search_folder.glob("run_trial_*/checkpoint_*"))
             if (s := saved_summary(c)) is not None and s.config == config]
    if not found:
        raise SystemExit(f"no trial checkpoint in {search_folder} has the shipped configuration {config}")
    return found[-1]


def final_part(args) -> dict:
    """The search's final stage once more on the chosen configuration: same checkpoint, teacher, rows, budget rule
    and schedule (``FinalStage``), another seed and/or budget."""
    from dataclasses import replace

    from ladasearch.config import FinalBudget
    from ladasearch.data import main_score
    from ladasearch.train.evaluate import evaluate
    from ladasearch.jobs.final import distill_final
    from ladasearch.models import load_classifier
    from ladasearch.jobs.pipeline import prepare
    from ladasearch.search.final_stage import final_train_rows
    from ladasearch.search.settings import SavedSearch, spec_path
    from ladasearch.serialize import load_compressed, saved_summary

    work = Path(args.work).resolve()
    source = json.loads((work / f"{args.part}.json").read_text())
    storage = work / args.part / "runs"
    settings = SavedSearch.read(spec_path(storage, args.part)).settings
    budget = FinalBudget.parse(args.final_budget)
    settings = replace(settings, final=replace(settings.final, amount=budget.amount, unit=budget.unit))
    start = chosen_checkpoint(storage / args.part, source["summary"]["config"])
    trial = saved_summary(start)
    teacher_dir = teacher_dir_of(source)
    prepared = prepare(settings.data, settings.model, teacher_dir)
    task = prepared.data.task
    teacher = load_classifier(teacher_dir, task.num_labels, task.is_regression)
    train_cfg = replace(settings.space.train_config(settings.train, trial.config), seed=args.seed)
    label = f"{args.part}-final{args.final_budget}-seed{args.seed}"
    C.log(f"{label}: from {start}, {budget.describe()}, seed {args.seed}")
    started = time.perf_counter()
    train = final_train_rows(settings, prepared.train, C.log)
    result = distill_final(start, trial, teacher, train, prepared.val, task, train_cfg, settings.final,
                           work / label, "cpu", C.log)
    seconds = time.perf_counter() - started
    dev_metrics = evaluate(load_compressed(result.folder), prepared.dev, task, train_cfg.eval_batch_size)
    dev = main_score(task, dev_metrics)
    summary = result.summary.with_(dev_score=dev, dev_metrics=dev_metrics)
    part = {"trial_dev": source["trial_dev"], "label": label, "target": source["target"], "space": source["space"],
            "seed": args.seed, "of_part": args.part, "final_budget": args.final_budget,
            "command": C.command_line(), "seconds": seconds, "best_model": str(result.folder),
            "summary": summary.to_json()}
    (work / f"{label}.json").write_text(json.dumps(part, indent=2, default=C._jsonable) + "\n")
    C.log(f"{label}: dev {dev:.4f}, val {summary.score:.4f}, {C.fmt_time(seconds)}")
    return part


def teacher_dir_of(part: dict) -> str:
    return part["summary"]["teacher"]


def measure(args) -> dict:
    from transformers import AutoTokenizer

    from ladasearch.runtime.export import DevData
    from ladasearch.runtime.formats import Timed
    from ladasearch.runtime.scoring import load_dev

    work = Path(args.work).resolve()
    every = [json.loads(p.read_text()) for p in sorted(work.glob("*.json"))]
    parts = [p for p in every if "of_part" not in p]   # searches: exported and timed in every runtime
    if not parts:
        raise SystemExit(f"no finished part in {work}")
    teachers = {teacher_dir_of(p) for p in parts}
    if len(teachers) != 1:
        raise SystemExit(f"the parts distilled different teachers: {sorted(teachers)}")
    teacher_dir = teachers.pop()
    timed = Timed(batches=(1, 32), seq_len=128, runs=args.runs, threads=1)
    dev_data = DevData(data_dir=args.data_dir, max_length=args.max_length, max_dev=None)  # every dev row, as the search scores
    earlier = {}
    if args.reuse:  # rows measured before (their parts unchanged): the teacher and the parts already timed
        saved = json.loads((Path(args.out_dir or C.RESULTS) / f"frontier-{args.task}.json").read_text())
        earlier = {m["label"]: m["rows"] for m in saved["models"]}
    dev = load_dev(dev_data.for_task(args.task), AutoTokenizer.from_pretrained(teacher_dir))
    C.log(f"teacher {teacher_dir}, dev {dev.rows} rows")
    teacher = earlier.get("teacher (dense)") or D.teacher_rows(teacher_dir, work / "deploy", dev, timed, C.log)[0]
    models = [{"label": "teacher (dense)", "rows": teacher}]
    for part in parts:
        if part["label"] in earlier:
            models.append({"label": part["label"], "part": part, "rows": earlier[part["label"]]})
            continue
        C.log(f"student {part['label']}")
        rows, _ = D.student_rows(Path(part["best_model"]), work / "deploy" / part["label"], dev_data, timed, C.log)
        models.append({"label": part["label"], "part": part, "rows": rows})
    reruns = [p for p in every if "of_part" in p]
    for part in reruns:   # another seed or budget of a search's choice: the same architecture, so its timing
        if part["label"] in earlier:
            models.append({"label": part["label"], "part": part, "rows": earlier[part["label"]]})
            continue
        source = next(m for m in models if m["label"] == part["of_part"])
        int8 = next(r for r in source["rows"] if r["runtime"] == "onnx-int8")
        row = {"runtime": "onnx-int8", "timed_as": source["label"], "file_bytes": int8["file_bytes"],
               "latency_ms": int8["latency_ms"], "score": None}
        if final_steps(part) == final_steps(source["part"]):   # another seed: scored in int8 too
            row["score"] = int8_score(Path(part["best_model"]), work / "deploy" / part["label"], dev_data)
        models.append({"label": part["label"], "part": part, "rows": [row]})
    return {"task": args.task, "dev_rows": dev.rows, "timed": {"batches": [1, 32], "seq_len": 128, "runs": args.runs,
                                                              "threads": 1},
            "models": models, "machine": C.machine(), "command": C.command_line()}


def final_steps(part: dict) -> int | None:
    return (part["summary"].get("final") or {}).get("steps")


def int8_score(source: Path, out: Path, dev_data) -> float:
    """The dev score of ``source``'s int8 ONNX file (``export-model``'s gate scores it)."""
    import math

    from ladasearch.runtime.export import ExportSettings, export_model

    settings = ExportSettings(max_drop=math.inf, dev=dev_data, measure=False, overwrite=True)
    return export_model(source, "onnx-int8", out / "onnx-int8", settings, log=lambda m: C.log("  " + m)).written.gate.after


def fastest(rows, batch: str = "32") -> dict:
    return min(rows, key=lambda r: r["latency_ms"][batch]["median_ms"])


def _mean_std(values: list[float]) -> str:
    import statistics

    if not values:
        return ""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * std:.1f}"


def report(result: dict) -> str:
    import statistics

    task = result["task"]
    speed_aim, drop_aim = AIMS.get(task, (2.0, 1.0))
    teacher = result["models"][0]
    int8 = next(r for r in teacher["rows"] if r["runtime"] == "onnx-int8")
    torch_teacher = next(r for r in teacher["rows"] if r["runtime"] == "torch")
    students = [m for m in result["models"][1:] if any(r.get("score") is not None for r in m["rows"])]
    searches = [m for m in result["models"][1:] if "of_part" not in m["part"]]

    def ms(r, b):
        return r["latency_ms"][b]["median_ms"]

    headers = ["model", "runtime", "dev", "vs int8 teacher (points)", "b1 ms", "b32 ms", "b32 speed-up vs int8",
               "file MiB", "trial dev (before final)", "final val (start -> best)", "time"]
    table = []
    for r in teacher["rows"]:
        table.append(["teacher (dense)", r["runtime"], C.pct(r["score"]), f"{100 * (r['score'] - int8['score']):+.1f}",
                      f"{ms(r, '1'):.1f}", f"{ms(r, '32'):.0f}", f"{ms(int8, '32') / ms(r, '32'):.2f}x",
                      f"{r['file_bytes'] / 2**20:.1f}", "", "", ""])
    for m in students:
        s, part = m["part"]["summary"], m["part"]
        final = s.get("final") or {}
        r = fastest([x for x in m["rows"] if x.get("score") is not None])
        speed, lost = ms(int8, "32") / ms(r, "32"), 100 * (int8["score"] - r["score"])
        timed = f" (timed as {r['timed_as']})" if r.get("timed_as") else ""
        table.append([m["label"], r["runtime"] + timed, C.pct(r["score"]), f"{-lost:+.1f}", f"{ms(r, '1'):.1f}",
                      f"{ms(r, '32'):.0f}", f"{speed:.2f}x", f"{r['file_bytes'] / 2**20:.1f}",
                      C.pct(part.get("trial_dev")), f"{C.pct(final.get('start_score'))} -> {C.pct(s.get('score'))} "
                      f"(step {final.get('best_step')}/{final.get('steps')})", C.fmt_time(part["seconds"])])
    # seeds of the final distillation, per configuration a search chose; the aim is judged on their mean
    seeds, verdict = [], []
    for m in searches:
        group = [m] + [x for x in students if x["part"].get("of_part") == m["label"]
                       and final_steps(x["part"]) == final_steps(m["part"])]
        runtime = fastest([x for x in m["rows"] if x.get("score") is not None])
        torch_scores = [g["part"]["summary"]["dev_score"] for g in group]
        # another seed is scored in int8 only; where the configuration's fastest runtime is torch or ONNX fp32
        # (the same logits as torch), its torch dev score is its score there
        fast_scores = [runtime["score"]] + [fastest([x for x in g["rows"] if x.get("score") is not None])["score"]
                                            if runtime["runtime"] == "onnx-int8" else g["part"]["summary"]["dev_score"]
                                            for g in group[1:]]
        speed = ms(int8, "32") / ms(runtime, "32")
        lost = 100 * (int8["score"] - statistics.mean(fast_scores))
        ok = speed >= speed_aim and lost <= drop_aim
        seeds.append([m["label"].removesuffix("-seed0"), str(len(group)), _mean_std(torch_scores),
                      f"{runtime['runtime']}: {_mean_std(fast_scores)}", f"{-lost:+.1f}", f"{speed:.2f}x",
                      "REACHED" if ok else "not reached"])
        verdict.append(f"- {m['label'].removesuffix('-seed0')}: {speed:.2f}x the int8 teacher's batch-32 speed, "
                       f"{abs(lost):.1f} points {'below' if lost > 0 else 'above'} it on the mean of {len(group)} "
                       f"seed(s): aim ({speed_aim:g}x, within {drop_aim:g} point) {'REACHED' if ok else 'not reached'}")
    curves, budgets = [], []
    for m in searches:
        s = m["part"]["summary"]
        final = s.get("final") or {}
        teacher_dev = s.get("teacher_score")
        paper = C.paper_retention(task, m["part"]["target"])
        curves.append([m["label"], " / ".join(f"{p['step']}: {C.pct(p['score'])}" for p in final.get("curve", [])),
                       C.pct(s.get("dev_score")), C.pct(teacher_dev),
                       f"{100 * s['dev_score'] / teacher_dev:.1f}%" if s.get("dev_score") and teacher_dev else "",
                       f"{100 * paper:.1f}%" if paper else ""])
        runs = [x["part"] for x in result["models"][1:] if x["part"].get("of_part") == m["label"]
                and x["part"]["seed"] == m["part"]["seed"]] + [m["part"]]
        if len(runs) > 1:
            for run in sorted(runs, key=final_steps):
                dev = run["summary"]["dev_score"]
                budgets.append([m["label"], str(final_steps(run)), C.pct(run["summary"]["score"]), C.pct(dev),
                                f"{100 * dev / teacher_dev:.1f}%", f"{100 * paper:.1f}%" if paper else "",
                                C.fmt_time(run["summary"]["final"]["curve"][-1]["seconds"])])
    return (f"# Frontier against the int8 teacher: {task}\n\n`{result['command']}`\n\n"
            f"Dev score on {result['dev_rows']} dev rows; each student in its fastest runtime at batch 32 (every "
            f"runtime is in the JSON); latency = median of {result['timed']['runs']} runs, length 128, 1 thread, "
            f"teacher and students timed in one process (another seed of a configuration has its architecture, "
            f"so its latency is that configuration's). Torch teacher b32: {ms(torch_teacher, '32'):.0f} ms.\n\n"
            + C.md_table(headers, table) + "\n\n"
            "Seeds of the final distillation of each configuration a search chose (batch order and dropout; the "
            "same trial checkpoint, rows and budget), dev score mean ± std:\n\n"
            + C.md_table(["configuration", "seeds", "dev (torch)", "dev (fastest runtime)", "vs int8 teacher",
                          "b32 speed-up vs int8", "aim"], seeds) + "\n\n" + "\n".join(verdict) + "\n\n"
            "Validation score at every scored step of one final distillation (warm-up + decay over its whole "
            "budget, so an intermediate point is not what a shorter budget would reach); the shipped model's dev "
            "score (torch) and its retention of the teacher's, beside the paper's at that target (BERT-base, full "
            "training).\n\n"
            + C.md_table(["student", "val by final step", "shipped dev", "teacher dev", "retention",
                          "paper retention"], curves) + "\n"
            + ("\nBudget curve: the same configuration and seed, each budget its own final distillation (its own "
               "warm-up and decay), the best checkpoint on validation shipped:\n\n"
               + C.md_table(["configuration", "final steps", "val (best)", "dev (torch)", "retention",
                             "paper retention", "final distillation time"], budgets) + "\n" if budgets else ""))


def plot(result: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    markers = {"torch": "o", "onnx": "s", "onnx-int8": "^", "onnx-fused": "D"}
    for color, m in enumerate(result["models"]):
        for r in m["rows"]:
            if r.get("score") is not None:
                ax.scatter(r["latency_ms"]["32"]["median_ms"], 100 * r["score"], color=f"C{color}",
                           marker=markers.get(r["runtime"], "x"), s=45,
                           label=f"{m['label'].removesuffix('-seed0')} {r['runtime']}")
    ax.set_xscale("log")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_xlabel("batch-32 latency, ms (length 128, 1 thread)")
    ax.set_ylabel(f"dev score ({result['task']})")
    ax.set_title(f"{result['task']}: dev score vs latency, students after the final budget and the teacher")
    ax.grid(alpha=0.3)
    C.save_png(fig, path)
    return path


def main(argv=None):
    args = parse_args(argv)
    if args.step == "search":
        return search_part(args)
    if args.step == "final":
        return final_part(args)
    result = measure(args)
    name = f"frontier-{args.task}"
    C.write_result(name, result, report(result), args.out_dir)
    plot(result, Path(args.out_dir or C.RESULTS) / f"{name}.png")
    return result


if __name__ == "__main__":
    main()
