"""The MNLI teacher of benchmarks/importance.py: MiniLM fine-tuned on every row of MNLI's train.sample.tsv.

    python benchmarks/teacher_mnli.py --out teachers/mnli-full       # about 2 epochs (656 steps, batch 32)

The committed results used a teacher made by this recipe at commit 8ca6700, before the loader held out a
validation split: all 10,471 rows, 656 steps (2.0 epochs), lr 5e-5, length 64, seed 0, 2 torch threads;
49.8 min on the shared 2-core machine (load average 5-10); dev_matched accuracy 64.8 (9,815 rows).  Today's
loader always holds out validation rows, so this script holds out one (``val_size=1``: 10,470 rows train it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch

from ladasearch.config import DataConfig, TeacherConfig
from ladasearch.jobs.pipeline import prepare, prepare_teacher


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for the teacher (replaced)")
    beside = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"   # ../shared beside the checkout
    p.add_argument("--data-dir", default=os.environ.get("LADASEARCH_DATA_DIR", str(beside)))
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", default=None, help="ladasearch teacher cache (default: beside --out)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    cfg = DataConfig(task="mnli", data_dir=args.data_dir, max_length=64, val_size=1, seed=0)
    prepared = prepare(cfg, "minilm")
    steps = int(args.epochs * (len(prepared.train) // 32)) + 2   # at least --epochs at batch 32
    cache = Path(args.cache_dir or Path(args.out).parent / "cache")
    teacher = prepare_teacher(prepared, cfg, "minilm", TeacherConfig(steps=steps, learning_rate=5e-5, seed=0),
                              torch.device("cpu"), cache, None, lambda m: print(m, flush=True))
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(teacher.path, out)
    info = {"steps": steps, "batch_size": 32, "rows": len(prepared.train), "epochs": steps * 32 / len(prepared.train),
            "score": teacher.score, "seconds": time.time() - started, "threads": args.threads,
            "loadavg_end": list(os.getloadavg())}
    (out / "benchmark_teacher.json").write_text(json.dumps(info, indent=2))
    print(info, flush=True)


if __name__ == "__main__":
    main()
