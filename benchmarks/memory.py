"""Memory of a search's trial workers: what each Ray trial holds beyond what the object store shares.

Runs `ladasearch run` (the CLI, as a user types it; the data-aware plug-ins, so that calibration statistics exist)
for MiniLM and a random BERT-base-sized model, at `--concurrency` 1 and 2, and samples the driver and every Ray
trial worker under it every 0.25 s: peak RSS, peak USS (the pages that process alone holds) and peak PSS (shared
pages split between their users).  The object store's shared memory is counted in RSS by every process that maps
it, in USS by none, so USS is what a trial adds.

    python benchmarks/memory.py --label after --out-dir D                   # this checkout
    python benchmarks/memory.py --label before --checkout OTHER --out-dir D # another checkout's package, same runs

Each call adds its row to results/memory.{json,md}, so a before/after pair is two calls on one quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _common as C
import psutil

MIB = 1 << 20


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--label", required=True, help="the rows' name, e.g. before / after")
    p.add_argument("--checkout", default=str(C.HERE.parent), help="the repository whose ladasearch package runs")
    p.add_argument("--data-dir", default=os.environ.get("LADASEARCH_DATA_DIR") or C.DEFAULT_DATA)
    p.add_argument("--models", default="minilm,bert-base",
                   help="minilm, and/or bert-base (a random BERT-base-sized model built from a config, no download)")
    p.add_argument("--concurrency", default="1,2", help="trials side by side, one run each")
    p.add_argument("--extra", default="", help="more `ladasearch run` options, space-separated (e.g. "
                   "'--teacher-cache-gb 0'); name the rows with --label")
    p.add_argument("--out-dir", default=None)
    return p.parse_args(argv)


def bert_base_folder(folder: Path) -> str:
    """A random BERT-base-sized classifier (BertConfig's defaults: 12 layers, 768 wide, 110M parameters) with
    MiniLM's tokenizer (the same uncased vocabulary)."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from ladasearch.models import resolve_model

    BertForSequenceClassification(BertConfig(num_labels=2)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(resolve_model("minilm")).save_pretrained(folder)
    return str(folder)


class Sampler(threading.Thread):
    """Peak RSS/USS/PSS of ``root`` (the driver) and of every Ray worker under it (process title ``ray::...``),
    sampled until stopped."""

    def __init__(self, root: int, interval: float = 0.25):
        super().__init__(daemon=True)
        self.root, self.interval, self.done = root, interval, threading.Event()
        self.peaks: dict[int, dict] = {}

    def run(self) -> None:
        while not self.done.is_set():
            try:
                root = psutil.Process(self.root)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for proc in procs:
                try:
                    title = "driver" if proc.pid == self.root else " ".join(proc.cmdline())[:80]
                    if title != "driver" and (not title.startswith("ray::") or title.startswith("ray::IDLE")):
                        continue
                    info = proc.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                peak = self.peaks.setdefault(proc.pid, {"title": title, "rss": 0, "uss": 0, "pss": 0,
                                                        "started": proc.create_time()})
                peak["title"] = title if "ImplicitFunc" in title else peak["title"]
                for key in ("rss", "uss", "pss"):
                    peak[key] = max(peak[key], getattr(info, key))
            self.done.wait(self.interval)


def measure(args, model: str, concurrency: int, work: Path) -> dict:
    """One `ladasearch run`: the driver's and every trial worker's peak memory."""
    command = [sys.executable, "-m", "ladasearch.cli", "run", "--task", "sst2", "--target", "5x",
               "--data-dir", args.data_dir, "--model", model, "--max-train", "256", "--max-length", "64",
               "--teacher-steps", "10", "--factorizer", "activation", "--prune-score", "taylor",
               "--trials", "2", "--concurrency", str(concurrency), "--cpus-per-trial", "1",
               "--threads", "1", "--rounds", "1", "--steps-per-round", "2", "--final-steps", "2",
               "--final-budget", "0", "--val-size", "64", "--max-dev", "64", "--calibration-batches", "8",
               "--name", f"memory-c{concurrency}", "--storage", f"{work}/runs",
               "--tracking-uri", f"sqlite:///{work}/mlflow.db", "--cache-dir", f"{work}/cache",
               *args.extra.split()]
    env = {**os.environ, "PYTHONPATH": str(Path(args.checkout).resolve()), "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1"}
    C.log(f"{args.label}: {' '.join(command)} (package from {args.checkout})")
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = Sampler(proc.pid)
    sampler.start()
    output = proc.communicate()[0]
    sampler.done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"ladasearch run exited {proc.returncode}:\n{output[-3000:]}")
    stats_mib = next((float(line.split("(", 1)[1].split(" MiB", 1)[0]) for line in output.splitlines()
                      if line.startswith("calibration:") and " MiB" in line), None)
    ran = trial_configs(work / "runs" / f"memory-c{concurrency}")
    trials = sorted(({**p, **ran.get(pid, {})} for pid, p in sampler.peaks.items()
                     if pid != proc.pid and "ImplicitFunc" in p["title"]), key=lambda p: p["started"])
    if not trials:
        raise SystemExit(f"no trial worker seen; titles: {[p['title'] for p in sampler.peaks.values()]}")
    mib = lambda peak: {k: (v / MIB if k in ("rss", "uss", "pss") else v) for k, v in peak.items()}  # noqa: E731
    return {"label": args.label, "checkout": str(Path(args.checkout).resolve()), "commit": _commit(args.checkout),
            "model": model.split("/")[-1], "concurrency": concurrency, "calibration_mib": stats_mib,
            "seconds": time.perf_counter() - started, "driver": mib(sampler.peaks[proc.pid]),
            "trials": [mib(p) for p in trials]}


def trial_configs(folder: Path) -> dict[int, dict]:
    """Which trial each worker process ran (Tune writes the worker's pid into every result), and its method:
    the per-trial peaks are then read against what the trial did."""
    found = {}
    for result in folder.glob("*/result.json"):
        lines = result.read_text().splitlines()
        if lines:
            last = json.loads(lines[-1])
            ratios = json.loads(last.get("summary_json") or "{}").get("ratios", {})  # a space may fix the method
            found[last["pid"]] = {"trial": last.get("trial_id"), "method": ratios.get("method"),
                                  "embedding_ratio": ratios.get("embedding")}
    return found


def _commit(checkout: str) -> str | None:
    done = subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or None


def report(rows: list[dict]) -> str:
    lines = ["# Memory of a search: the driver and each trial worker", "",
             "`ladasearch run` on SST-2 (256 train rows, length 64), activation + taylor (calibration statistics "
             "gathered), 2 trials, one thread each, `--concurrency` 1 or 2; the driver and every Ray trial worker "
             "sampled every 0.25 s. RSS counts every page a process maps, the object store's shared ones included; "
             "USS only the pages it holds alone (what each further trial adds); PSS splits shared pages between "
             "the processes that map them. bert-base: a random BERT-base-sized model built from a config.", ""]
    table = []
    for row in rows:
        trials = row["trials"]
        table.append([row["model"], row["concurrency"], row["label"], row["commit"], row["calibration_mib"],
                      f"{row['driver']['rss']:.0f}", f"{row['driver']['uss']:.0f}",
                      " / ".join(f"{t['rss']:.0f}" for t in trials), " / ".join(f"{t['uss']:.0f}" for t in trials),
                      " / ".join(f"{t['pss']:.0f}" for t in trials),
                      # rows written before the workers' start times were kept list the larger trial first
                      " / ".join(str(t.get("method") or "?") for t in trials) if "started" in trials[0]
                      else "(larger first)"])
    table.sort(key=lambda r: (r[0], r[1], r[2]))
    lines.append(C.md_table(["model", "concurrency", "run", "commit", "statistics MiB", "driver peak RSS MiB",
                             "driver peak USS MiB", "trial peak RSS MiB", "trial peak USS MiB",
                             "trial peak PSS MiB", "trials in start order"], table))
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    path = Path(args.out_dir or C.RESULTS) / "memory.json"
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model = bert_base_folder(Path(tmp) / "bert-base") if name == "bert-base" else name
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                work = Path(tmp) / f"{name}-c{concurrency}"
                work.mkdir()
                row = measure(args, model, concurrency, work)
                saved = json.loads(path.read_text()) if path.is_file() else {"runs": []}
                key = (row["label"], row["model"], row["concurrency"])
                runs = [r for r in saved["runs"] if (r["label"], r["model"], r["concurrency"]) != key]
                runs.append({**row, "machine": C.machine(), "command": C.command_line()})
                C.write_result("memory", {"runs": runs}, report(runs), args.out_dir)


if __name__ == "__main__":
    main()
