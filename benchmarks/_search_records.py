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
    from mlflow.tracking import MlflowClient

    from ladasearch.tracking import BEST, ROLE, TRIAL_ID

    records = []
    for store in sorted(work.glob("mlflow-*-s*.db")):
        client = MlflowClient(f"sqlite:///{store}")
        experiment = client.get_experiment_by_name("search-vs-fixed")
        runs = client.search_runs([experiment.experiment_id], max_results=10_000) if experiment else []
        for parent in (r for r in runs if r.data.tags.get(ROLE) == "search" and "dev_score" in r.data.metrics):
            match = NAME.match(parent.info.run_name or "")
            if match is None:
                continue
            arm, target, seed = match["arm"], float(match["target"]), int(match["seed"])
            space, sampler, warm = arm_setup(arm, target)
            children = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
                               and r.data.tags.get(ROLE) == "trial"), key=lambda r: r.info.start_time)
            trials = [{"trial_id": c.data.tags.get(TRIAL_ID), "status": c.data.tags.get("ladasearch.outcome"),
                       "val": c.data.metrics.get("score_at_target"),
                       "config": {k.removeprefix("config."): _number(v) for k, v in c.data.params.items()
                                  if k.startswith("config.")}} for c in children]
            tags, metrics = parent.data.tags, parent.data.metrics
            val = [t["val"] if t["status"] == "completed" else None for t in trials]
            records.append({
                "arm": arm, "target": target, "seed": seed, "name": parent.info.run_name, "space": space.name,
                "sampler": sampler, "warm_start": warm, "recovered_from": str(store),
                "seconds": (parent.info.end_time - parent.info.start_time) / 1000, "trials": trials,
                "best_so_far_val": C.best_so_far(val),
                "chosen": {"val": metrics["val_score"], "dev": metrics["dev_score"],
                           "achieved_factor": metrics.get("best_achieved_factor"),
                           "ratios": {"method": tags[f"{BEST}method"],
                                      "embedding": float(tags[f"{BEST}embedding_ratio"]),
                                      "svd": float(tags[f"{BEST}svd_ratio"]),
                                      "weight": float(tags[f"{BEST}weight_ratio"]),
                                      "structure": float(tags.get(f"{BEST}structured_ratio", 1.0))}}})
    return records
