"""Structured share at a high target: weight-only hybrid vs the same hybrid after removing heads and FFN neurons.

On one teacher and target (default SST-2 10x) every arm uses the same embedding ratio and SVD-vs-pruning split
(the best searched SST-2 ratios in results/accuracy-sst2.json, as importance.py), the same plug-ins (by default
activation-whitened SVD + Taylor pruning, the best pair of importance.py at 10x) and the same training budget
(3 rounds x 20 steps + 20 final steps); only ``--structures`` differs (share of heads and FFN neurons kept,
1 = weight-only).  The encoder ratio of each arm is solved from eq. 7 for the matrices its removal leaves, so
every arm lands on the target.  Several seeds, mean +- std on dev; the arm a user would pick is chosen on a
validation split carved from train, never on dev.

    python benchmarks/structure.py --task sst2 --teacher TEACHER_DIR --threads 1 --val-size 256
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from importance import build_job, finish, mean_std, target_ratios  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_data_args(p, threads=1)
    C.add_train_args(p, steps_per_round=20, final_steps=20)
    g = p.add_argument_group("this benchmark")
    g.add_argument("--target", type=float, default=10.0)
    g.add_argument("--structures", default="1,0.75,0.5", help="shares of heads and FFN neurons kept, one arm each")
    g.add_argument("--seeds", default="0,1,2")
    g.add_argument("--factorizer", default="activation")
    g.add_argument("--prune-score", default="taylor")
    g.add_argument("--structure-score", default="taylor")
    g.add_argument("--val-size", type=int, default=256, help="validation rows carved from train (the choice)")
    g.add_argument("--calibration-batches", type=int, default=16)
    g.add_argument("--ratios-from", default=str(C.RESULTS / "accuracy-sst2.json"))
    g.add_argument("--name", default=None, help="result file name (default structure-<task>)")
    g.add_argument("--out-dir", default=None)
    return p.parse_args(argv)


def run_arm(job, ratios, cfg, args) -> dict:
    from ladasearch import CompressionConfig, compress_model
    from ladasearch.data import main_score
    from ladasearch.train.evaluate import evaluate
    from ladasearch.train.ladabert import TrialFailed

    started = time.perf_counter()
    compression = CompressionConfig(factorizer=args.factorizer, prune_score=args.prune_score,
                                    structure_score=args.structure_score)
    try:
        result = compress_model(job["teacher"].model, job["train"], job["val"], job["task"], ratios, cfg,
                                job["device"], compression=compression, stats=job["stats"])
    except TrialFailed as exc:
        return {"seed": cfg.seed, "status": "failed", "error": str(exc)}
    dev = evaluate(result.student, job["dev"], job["task"], device=job["device"])
    widths = getattr(result.student.config, "ladasearch_widths", None)
    row = {"seed": cfg.seed, "status": "done", "val": result.score, "dev": main_score(job["task"], dev),
           "achieved_factor": result.achieved_factor, "params": result.student_params.to_json(),
           "heads_per_layer": [len(h) for h in widths["heads"]] if widths else None,
           "neurons_per_layer": widths["intermediate"] if widths else None,
           "val_rounds": [r.score for r in result.history], "seconds": time.perf_counter() - started}
    C.log(f"  structure {ratios.structure:g} seed {cfg.seed}: val {row['val']:.4f} dev {row['dev']:.4f} "
          f"({row['achieved_factor']:.3f}x, {row['seconds']:.0f}s)")
    return row


def render(payload: dict) -> str:
    teacher = payload["teacher_score"]
    rows = []
    for arm in payload["arms"]:
        done = [r for r in arm["runs"] if r["status"] == "done"]
        m, s = mean_std([r["dev"] for r in done])
        vm, _ = mean_std([r["val"] for r in done])
        first = done[0] if done else {}
        rows.append([f"{arm['structure']:g}" + (" (chosen on val)" if arm["structure"] == payload.get("chosen") else ""),
                     f"{arm['ratios']['svd']:.3f} / {arm['ratios']['weight']:.3f}",
                     first.get("heads_per_layer", [None])[0] if first.get("heads_per_layer") else "all",
                     first.get("neurons_per_layer", [None])[0] if first.get("neurons_per_layer") else "all",
                     "" if m is None else f"{100 * m:.1f} +- {100 * s:.1f}",
                     "" if m is None else f"{C.pct(m / teacher)}%", "" if vm is None else f"{100 * vm:.1f}",
                     "" if not done else f"{min(r['achieved_factor'] for r in done):.3f}x",
                     len(arm["runs"]) - len(done)])
    head = (f"### {payload['task']} {payload['target']:g}x: weight-only vs structured share, "
            f"{payload['factorizer']}+{payload['prune_score']}, {len(payload['seeds'])} seeds "
            f"(teacher {100 * teacher:.1f})\n")
    return head + "\n" + C.md_table(["structure kept", "svd / weight ratio", "heads / layer", "FFN neurons / layer",
                                     "dev %", "score/teacher", "val % (mean)", "factor", "failed"], rows)


def plot(payload: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for k, arm in enumerate(payload["arms"]):
        devs = [100 * r["dev"] for r in arm["runs"] if r["status"] == "done"]
        m, sd = mean_std(devs)
        if m is not None:
            ax.bar(k, m, yerr=sd, capsize=4, color="tab:grey" if arm["structure"] == 1 else "tab:blue")
            ax.scatter([k] * len(devs), devs, color="black", s=10, zorder=3)
    ax.set_xticks(range(len(payload["arms"])), [f"structure {a['structure']:g}" for a in payload["arms"]])
    ax.axhline(100 * payload["teacher_score"], color="black", linestyle="--", linewidth=0.8, label="teacher")
    ax.set_ylabel("dev %, mean +- std (seeds as dots)")
    ax.set_title(f"{payload['task']} {payload['target']:g}x: weight-only (grey) vs structured share")
    ax.legend(fontsize=8)
    return C.save_png(fig, path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    C.set_threads(args)
    from ladasearch.compress import count_parameters
    from ladasearch.compress.budget import split_ratios
    from ladasearch.compress.structure import Widths

    started = time.perf_counter()
    job, teacher_dir, _ = build_job(args)
    teacher, task = job["teacher"], job["task"]
    counts, widths = count_parameters(teacher.model), Widths.of(teacher.model.config)
    base = target_ratios(args.ratios_from, counts, [args.target])[args.target]
    split = math.log(base.svd) / math.log(base.encoder)  # the searched best's split, as importance.py uses
    seeds = [int(s) for s in args.seeds.split(",")]
    cfg = C.train_config(args)
    payload = {"benchmark": "structure", "command": C.command_line(), "args": vars(args), "machine": C.machine(),
               "task": task.name, "main_metric": task.main_metric, "teacher": teacher_dir,
               "teacher_score": teacher.score, "target": args.target, "train_rows": len(job["train"]),
               "val_rows": len(job["val"]), "dev_rows": len(job["dev"]), "seeds": seeds, "factorizer": args.factorizer,
               "prune_score": args.prune_score, "structure_score": args.structure_score,
               "train_config": {k: v for k, v in vars(cfg).items() if k != "loss_weights"}, "arms": []}
    name = args.name or f"structure-{task.name}"
    for structure in [float(s) for s in args.structures.split(",")]:
        ratios = split_ratios(counts, args.target, base.embedding, split, "hybrid", structure=structure,
                              widths=widths)
        C.log(f"structure {structure:g}: embedding {ratios.embedding:.4f}, svd {ratios.svd:.4f}, "
              f"weight {ratios.weight:.4f}")
        arm = {"structure": structure, "ratios": {"embedding": ratios.embedding, "svd": ratios.svd,
                                                  "weight": ratios.weight}, "runs": []}
        payload["arms"].append(arm)
        for seed in seeds:
            arm["runs"].append(run_arm(job, ratios, replace(cfg, seed=seed), args))
            C.write_result(name, payload, render(payload), args.out_dir)
    vals = {a["structure"]: mean_std([r["val"] for r in a["runs"] if r["status"] == "done"])[0]
            for a in payload["arms"]}
    payload["chosen"] = max((s for s in vals if vals[s] is not None), key=lambda s: vals[s], default=None)
    return finish(payload, name, args, started, render, plot)


if __name__ == "__main__":
    main()
