"""The pipeline vs today's search vs a fixed recipe, at equal training compute (issue 20).

Every arm is one `ladasearch run` (the CLI, through ``frontier.search_part``: same teacher, data, plug-ins,
target and trial length) that may spend ``--budget`` distillation steps in all (batch 32), counting trials and
the final budget; the arms differ only in where those steps go:

    pipeline  the `ratios` space (method + embedding ratio + split), 4 trials under ASHA (at most 4 x 60 steps),
              then ``budget - 4 x 60`` final steps on the chosen configuration (the product's default pipeline)
    reclaim   the pipeline with ``--final-reclaim``: the final budget also gets the trial steps ASHA's early stops
              left unspent, so the arm trains exactly ``budget`` steps
    search    the `ratios` space, ``budget / 60`` trials of 60 steps under FIFO and no final budget: the search
              as it shipped before the final stage (it hands back the best trial's own checkpoint)
    fixed     one configuration chosen without search: SVD only at the uniform ratio (the embedding and every
              encoder matrix kept alike; at 10x, the best fixed recipe of `search_vs_fixed.py`), one 60-step
              trial, then ``budget - 60`` final steps

The choice (best trial, best final checkpoint) is made on validation; dev is scored once on the shipped model.
Steps actually trained are read back from the trials' results and the final curve; wall time is measured.

    python benchmarks/equal_compute.py run --arm pipeline --seed 0 --work W [--budget 480 --target 10]
    python benchmarks/equal_compute.py table --work W [--out-dir D]   # -> results/equal_compute-<task>-<t>x.*
    python benchmarks/equal_compute.py table --work W --merge results/equal_compute-sst2-10x.json  # + earlier arms

The aim (issue): the pipeline ahead of the best fixed recipe by more than the seed std.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import _common as C
import _deployment as D
import frontier

ARMS = ("pipeline", "reclaim", "search", "fixed")
TRIAL_STEPS = 60          # frontier.search_part's trials: 2 rounds x 20 steps + 20 final steps
PIPELINE_TRIALS = 4


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="step", required=True)
    r = sub.add_parser("run", help="one arm at one seed")
    r.add_argument("--arm", required=True, choices=ARMS)
    r.add_argument("--seed", type=int, required=True)
    r.add_argument("--budget", type=int, default=480, help="distillation steps each arm may spend in all")
    r.add_argument("--target", type=float, default=10.0)
    t = sub.add_parser("table", help="the arms side by side")
    t.add_argument("--out-dir", default=None)
    t.add_argument("--merge", default=None,
                   help="an earlier table's JSON (results/equal_compute-*.json): its arms join the table where the work "
                        "folder has no run of the same label (the seed fixes the teacher, whose fine-tuning is "
                        "deterministic; the table refuses a seed whose teachers differ)")
    for q in (r, t):
        q.add_argument("--task", default="sst2")
        q.add_argument("--work", required=True)
        q.add_argument("--data-dir", default=os.environ.get("LADASEARCH_DATA_DIR"))
        q.add_argument("--max-train", type=int, default=20000)
        q.add_argument("--max-length", type=int, default=64)
        q.add_argument("--teacher-steps", type=int, default=600)
        q.add_argument("--teacher-lr", type=float, default=1e-4)
    args = p.parse_args(argv)
    if not args.data_dir:
        p.error("give --data-dir or set LADASEARCH_DATA_DIR (the GLUE folder)")
    if args.step == "run" and args.budget < PIPELINE_TRIALS * TRIAL_STEPS + 20:
        p.error(f"--budget {args.budget} leaves the pipeline no final steps; give at least "
                f"{PIPELINE_TRIALS * TRIAL_STEPS + 20}")
    return args


def fixed_space(work: Path, args) -> Path:
    """A one-point space: SVD only at the uniform ratio of the model (``minilm``, the CLI's default) at this
    target; the classifier head's size (labels) moves it by far less than the 4 decimals written."""
    from ladasearch.compress.accounting import count_parameters
    from ladasearch.compress.budget import Budget
    from ladasearch.data.tasks import get_task
    from ladasearch.models import load_classifier

    model = load_classifier("minilm", get_task(args.task).num_labels)
    uniform = Budget(count_parameters(model), args.target).uniform_ratio()
    path = work / f"svd_uniform_{args.target:g}x.yaml"
    path.write_text(f"# written by benchmarks/equal_compute.py: SVD only at the uniform ratio ({uniform:.4f})\n"
                    f"name: svd_uniform_{args.target:g}x\ndescription: SVD only, embedding ratio "
                    f"{uniform:.4f} (uniform), one point.\nmethod: svd\nratios:\n"
                    f"  embedding_ratio: {{choices: [{uniform:.4f}]}}\n")
    return path


def arm_options(arm: str, budget: int, work: Path, args) -> tuple[str, list[str]]:
    if arm in ("pipeline", "reclaim"):
        return "ratios", ["--trials", str(PIPELINE_TRIALS), "--final-budget",
                          str(budget - PIPELINE_TRIALS * TRIAL_STEPS)] + (["--final-reclaim"] if arm == "reclaim" else [])
    if arm == "search":
        return "ratios", ["--trials", str(budget // TRIAL_STEPS), "--scheduler", "fifo", "--final-budget", "0"]
    return str(fixed_space(work, args)), ["--trials", "1", "--final-budget", str(budget - TRIAL_STEPS)]


def steps_trained(folder: Path, label: str, summary: dict) -> dict:
    """Steps each trial trained (its last reported result) and the final budget's, as the run recorded them."""
    trials = []
    for result in sorted((folder / "runs" / label).glob("run_trial_*/result.json")):
        lines = result.read_text().splitlines()
        if lines:
            trials.append(int(json.loads(lines[-1]).get("steps", 0)))
    final = (summary.get("final") or {}).get("steps", 0)
    return {"trials": trials, "final": final, "total": sum(trials) + final}


def run_arm(args) -> dict:
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    space, extra = arm_options(args.arm, args.budget, work, args)
    label = f"{args.target:g}x-{args.arm}-seed{args.seed}"
    part_args = argparse.Namespace(task=args.task, target=args.target, space=space, seed=args.seed, work=str(work),
                                   final_budget="0", extra=" ".join(extra), data_dir=args.data_dir,
                                   max_train=args.max_train, max_length=args.max_length,
                                   teacher_steps=args.teacher_steps, teacher_lr=args.teacher_lr)
    part = frontier.search_part(part_args, label)
    part.update(arm=args.arm, budget=args.budget, steps=steps_trained(work / label, label, part["summary"]))
    (work / f"{label}.json").write_text(json.dumps(part, indent=2, default=C._jsonable) + "\n")
    C.log(f"{label}: {part['steps']['total']} steps trained (trials {part['steps']['trials']}, final "
          f"{part['steps']['final']}), dev {part['summary']['dev_score']:.4f}")
    return part


def int8_teacher(teacher_dir: str, work: Path, args) -> dict:
    """The seed's dense teacher exported to ONNX and quantized to int8 as a user would, scored on every dev row
    (kept in ``work`` beside the arms, so a second table does not repeat it)."""
    import hashlib

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ladasearch.runtime.export import DevData
    from ladasearch.runtime.scoring import load_dev

    folder = work / "int8-teachers" / hashlib.sha256(teacher_dir.encode()).hexdigest()[:12]
    if (folder / "score.json").is_file():
        return json.loads((folder / "score.json").read_text())
    C.log(f"int8 teacher: {teacher_dir}")
    # as frontier.py's teacher rows: the SDPA graph a user exports from the HF folder
    model = AutoModelForSequenceClassification.from_pretrained(teacher_dir, attn_implementation="sdpa").eval()
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    dev_data = DevData(data_dir=args.data_dir, max_length=args.max_length, max_dev=None)
    dev = load_dev(dev_data.for_task(args.task), tokenizer)
    _, _, gate = D.teacher_onnx(model, tokenizer, folder, dev, 1)
    score = {"teacher": teacher_dir, "onnx": gate.before, "onnx_int8": gate.after, "dev_rows": dev.rows}
    (folder / "score.json").write_text(json.dumps(score, indent=2) + "\n")
    return score


def collect(args) -> dict:
    work = Path(args.work).resolve()
    parts = [json.loads(p.read_text()) for p in sorted(work.glob("*.json"))]
    parts = [p for p in parts if p.get("arm") in ARMS]
    for p in parts:  # the first run on a new cache key fine-tunes the teacher too: its wall time is not the arm's
        p["teacher_trained"] = "teacher: fine-tuning" in (work / p["label"] / "run.log").read_text()
    earlier = json.loads(Path(args.merge).read_text()) if args.merge else {"parts": [], "seeds": {}}
    labels = {p["label"] for p in parts}
    parts += [dict(p, merged_from=args.merge) for p in earlier["parts"] if p["label"] not in labels]
    if not parts:
        raise SystemExit(f"no finished arm in {work}")
    seeds = {}
    for seed in sorted({p["seed"] for p in parts}):  # the seed also seeds the teacher and the validation split
        teachers = {p["summary"]["teacher"] for p in parts if p["seed"] == seed}
        if len(teachers) != 1:
            raise SystemExit(f"the arms of seed {seed} distilled different teachers: {sorted(teachers)}")
        teacher = teachers.pop()
        first = next(p for p in parts if p["seed"] == seed)
        scores = {p["summary"]["teacher_score"] for p in parts if p["seed"] == seed}
        if len(scores) != 1:  # the same cache key and dev rows: a teacher fine-tuned again must score the same
            raise SystemExit(f"the teachers of seed {seed} score {sorted(scores)} on dev: not the same teacher")
        recorded = earlier["seeds"].get(str(seed), {})
        int8 = recorded["int8"] if recorded.get("teacher") == teacher else int8_teacher(teacher, work, args)
        seeds[str(seed)] = {"teacher": teacher, "teacher_dev": first["summary"]["teacher_score"], "int8": int8}
    return {"task": args.task, "parts": parts, "seeds": seeds, "machine": C.machine(), "command": C.command_line()}


def _dev(part: dict) -> float:
    return part["summary"]["dev_score"]


def _int8_gap(part: dict, seeds: dict) -> float:
    return _dev(part) - seeds[str(part["seed"])]["int8"]["onnx_int8"]


def _paired(a: list[dict], b: list[dict]) -> list[float]:
    """Per seed (both arms ran it): a's dev minus b's; the seed fixes the teacher and the split for both."""
    other = {p["seed"]: _dev(p) for p in b}
    return [_dev(p) - other[p["seed"]] for p in a if p["seed"] in other]


def report(result: dict) -> str:
    by_arm = {arm: sorted((p for p in result["parts"] if p["arm"] == arm), key=lambda p: p["seed"]) for arm in ARMS}
    seeds = result["seeds"]
    rows, per_seed = [], []
    for arm, parts in by_arm.items():
        if not parts:
            continue
        timed = [p["seconds"] for p in parts if not p["teacher_trained"]]
        rows.append([arm, str(len(parts)), frontier._mean_std([_dev(p) for p in parts]),
                     frontier._mean_std([p["summary"]["score_at_target"] for p in parts]),
                     frontier._mean_std([_int8_gap(p, seeds) for p in parts]),
                     f"{statistics.mean(p['steps']['total'] for p in parts):.0f}",
                     C.fmt_time(statistics.mean(timed)) if timed else ""])
        for p in parts:
            r = p["summary"]["ratios"]
            per_seed.append([arm, str(p["seed"]), C.pct(_dev(p)), C.pct(p["summary"]["score_at_target"]),
                             f"{100 * _int8_gap(p, seeds):+.1f}",
                             f"{r['method']} emb {r['embedding']:.3f} svd {r['svd']:.3f} weight {r['weight']:.3f}",
                             " + ".join(map(str, p["steps"]["trials"])) + f" + final {p['steps']['final']}",
                             C.fmt_time(p["seconds"]) + (" (with the teacher's fine-tuning)"
                                                         if p["teacher_trained"] else "")
                             + (" (earlier run, merged)" if p.get("merged_from") else "")])
    teachers = [[seed, C.pct(s["teacher_dev"]), C.pct(s["int8"]["onnx_int8"]), s["teacher"]] for seed, s in seeds.items()]
    verdict = []
    for ours, other in (("pipeline", "fixed"), ("reclaim", "fixed"), ("pipeline", "search"), ("reclaim", "search"),
                        ("reclaim", "pipeline")):
        diffs = _paired(by_arm[ours], by_arm[other])
        if len(diffs) > 1:
            spread = max(statistics.stdev([_dev(p) for p in by_arm[arm]]) for arm in (ours, other))
            verdict.append(f"- {ours} - {other}: {frontier._mean_std(diffs)} dev points over {len(diffs)} paired "
                           f"seeds (per seed {', '.join(f'{100 * d:+.1f}' for d in diffs)}); the arms' seed std is up "
                           f"to {100 * spread:.1f}"
                           + (f": aim (ahead of the fixed recipe by more than the seed std) "
                              f"{'REACHED' if statistics.mean(diffs) > spread else 'not reached'}"
                              if other == "fixed" else ""))
    return (f"# Equal compute: the pipeline, today's search, a fixed recipe ({result['task']})\n\n"
            f"`{result['command']}`\n\nDev = the shipped model's score on every dev row, in torch; `vs int8 teacher` "
            "= against that seed's dense teacher quantized to int8 (the seed also seeds the teacher's fine-tuning "
            "and the validation split, so the arms of one seed share both).\n\n"
            + C.md_table(["arm", "seeds", "dev", "val (chosen on)", "dev vs int8 teacher", "steps trained",
                          "wall time (runs without teacher fine-tuning)"], rows) + "\n\n"
            + "\n".join(verdict) + "\n\n"
            + C.md_table(["arm", "seed", "dev", "val", "vs int8 teacher", "shipped configuration",
                          "steps (trials + final)", "wall time"], per_seed) + "\n\n"
            + C.md_table(["seed", "teacher dev", "its int8 file", "teacher"], teachers) + "\n")


def plot(result: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, arm in enumerate(ARMS):
        parts = [p for p in result["parts"] if p["arm"] == arm]
        ax.scatter([p["steps"]["total"] for p in parts], [100 * p["summary"]["dev_score"] for p in parts],
                   color=f"C{i}", label=arm, s=50)
    seeds = result["seeds"].values()
    ax.axhline(statistics.mean(100 * s["teacher_dev"] for s in seeds), color="k", ls="--", lw=1,
               label="teacher (torch), mean over seeds")
    ax.axhline(statistics.mean(100 * s["int8"]["onnx_int8"] for s in seeds), color="grey", ls=":", lw=1,
               label="teacher (onnx int8), mean over seeds")
    ax.set_xlabel("distillation steps trained in all (trials + final, batch 32)")
    ax.set_ylabel(f"dev score of the shipped model ({result['task']})")
    ax.set_title("Equal training steps: where the steps go")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    C.save_png(fig, path)
    return path


def main(argv=None):
    args = parse_args(argv)
    if args.step == "run":
        return run_arm(args)
    result = collect(args)
    target = result["parts"][0]["target"]
    name = f"equal_compute-{args.task}-{target:g}x"
    C.write_result(name, result, report(result), args.out_dir)
    plot(result, Path(args.out_dir or C.RESULTS) / f"{name}.png")
    return result


if __name__ == "__main__":
    main()
