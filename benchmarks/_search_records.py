"""search_vs_fixed's run records from elsewhere than a live run: parts written side by side (``merge``), and the
searches a stopped run finished, read back from its MLflow stores (``recover``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import _common as C

SAME = ("task", "teacher", "teacher_dev_score", "rows", "train_config")                      # parts agree on
SAME_ARGS = ("trials", "scheduler", "factorizer", "prune_score", "max_length", "precision")  # ... and these
NAME = re.compile(r"^svf-(?P<task>\w+)-(?P<arm>\w+)-(?P<target>[\d.]+)x-s(?P<seed>\d+)-")


def merge(paths: list[str]) -> tuple[dict, list[dict], float]:
    """(the first part's payload, every part's runs, the parts' wall seconds added up) of parts of one
    benchmark; SystemExit when they differ."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    first = parts[0]
    for path, part in zip(paths[1:], parts[1:]):
        differ = [k for k in SAME if part[k] != first[k]] + \
            [f"args.{k}" for k in SAME_ARGS if part["args"][k] != first["args"][k]]
        if differ:
            raise SystemExit(f"{path} is not a part of the same benchmark as {paths[0]}: {', '.join(differ)} differ")
    runs = [r for part in parts for r in part["runs"]]
    keys = [(r["arm"], r["target"], r["seed"]) for r in runs]
    if len(set(keys)) != len(keys):
        raise SystemExit("the parts repeat an arm at the same target and seed; merge each only once")
    return first, runs, sum(part["wall_s"] for part in parts)


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def recover(work: Path, arm_setup) -> list[dict]:
    """The run record of every search a run in ``work`` finished (its parent has a dev score), from the
    MLflow store of each arm and seed; trials in the order they started."""
    from ladasearch.tracking import Tracker

    records = []
    for store in sorted(work.glob("mlflow-*-s*.db")):
        tracker = Tracker.existing(f"sqlite:///{store}", "search-vs-fixed")   # the one door, and its tag codec
        for parent in (r for r in tracker.searches() if "dev_score" in r.metrics and r.best is not None):
            match = NAME.match(parent.name or "")
            if match is None:
                continue
            arm, target, seed = match["arm"], float(match["target"]), int(match["seed"])
            space, sampler, warm = arm_setup(arm, target)
            trials = [{"trial_id": c.trial.trial_id, "status": c.trial.outcome, "val": c.metrics.get("score_at_target"),
                       "config": {k.removeprefix("config."): _number(v) for k, v in c.params.items()
                                  if k.startswith("config.")}} for c in tracker.trial_runs(parent)]
            best, metrics = parent.best, parent.metrics
            val = [t["val"] if t["status"] == "completed" else None for t in trials]
            records.append({
                "arm": arm, "target": target, "seed": seed, "name": parent.name, "space": space.name,
                "sampler": sampler, "warm_start": warm, "recovered_from": str(store),
                "seconds": (parent.end_time - parent.start_time) / 1000, "trials": trials,
                "best_so_far_val": C.best_so_far(val),
                "chosen": {"val": metrics["val_score"], "dev": metrics["dev_score"],
                           "achieved_factor": metrics.get("best_achieved_factor"),
                           "ratios": {"method": best.method, "embedding": best.embedding_ratio,
                                      "svd": best.svd_ratio, "weight": best.weight_ratio,
                                      "structure": best.structured_ratio}}})
    return records
