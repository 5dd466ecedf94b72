"""Shared pieces of the benchmark scripts: options, the (cached) teacher, result files, tables.

Every script builds its data/teacher/training configs from the same options, so they share one
fine-tuned teacher (ladasearch's teacher cache, keyed on model + train subset + teacher settings).
The teacher is always made on the FULL dev split and then handed to the library as a folder
(``teacher_path``), so scripts that use a dev subset reuse it instead of fine-tuning another one
(ladasearch's cache key includes the dev subset).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

# Ray starts trial workers at nice 15; on a shared machine they then starve behind any normal-priority
# process (here the same 8-step round took 17 s on a quiet machine and 505 s next to other jobs).  Benchmarks
# run them at 0.
os.environ.setdefault("RAY_worker_niceness", "0")

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEFAULT_DATA = str(HERE.parent.parent / "shared" / "data" / "glue")   # ../shared beside the checkout
# The paper (LadaBERT, Table 3/4, BERT-base teacher): dev score of the teacher and at each target.
PAPER = {
    "sst2": {"teacher": 93.5, 2.5: 92.8, 5.0: 91.8, 7.5: 89.9, 10.0: 84.0},
    "mnli": {"teacher": 84.6, 2.5: 83.5, 5.0: 83.1, 7.5: 82.1, 10.0: 75.8},
}


def paper_retention(task: str, target: float) -> float | None:
    row = PAPER.get(task)
    return row[target] / row["teacher"] if row and target in row else None


# ---- options ------------------------------------------------------------------------------------

def add_data_args(p: argparse.ArgumentParser, *, max_train: int | None = 4000, max_dev: int | None = None,
                  threads: int | None = None) -> None:
    g = p.add_argument_group("data and teacher")
    g.add_argument("--task", default="sst2", help="GLUE task (sst2, mnli, ...)")
    g.add_argument("--data-dir", default=os.environ.get("LADASEARCH_DATA_DIR") or
                   (DEFAULT_DATA if Path(DEFAULT_DATA).is_dir() else None),
                   help="local GLUE folder (default $LADASEARCH_DATA_DIR, else %(default)s; none = the hub)")
    g.add_argument("--model", default="minilm", help="base model: 'minilm' (offline) or a hub id / folder")
    g.add_argument("--max-length", type=int, default=64)
    g.add_argument("--max-train", type=int, default=max_train, help="train subset (0 = all rows)")
    g.add_argument("--max-dev", type=int, default=max_dev, help="dev subset (0 = all rows)")
    g.add_argument("--dev-split", default=None, help="mnli: dev_matched (default) or dev_mismatched")
    g.add_argument("--teacher-steps", type=int, default=400)
    g.add_argument("--teacher-lr", type=float, default=5e-5)
    g.add_argument("--teacher", dest="teacher_path", default=None,
                   help="a fine-tuned teacher folder to use as is (skips teacher fine-tuning)")
    g.add_argument("--cache-dir", default=None, help="teacher cache (default $LADASEARCH_CACHE or ~/.cache/ladasearch)")
    g.add_argument("--device", default="auto")
    g.add_argument("--threads", type=int, default=threads,
                   help="torch threads per process (default: %(default)s; None = all cores). On a shared or "
                        "oversubscribed CPU use 1: two threads fighting for a core were 6x slower here")
    g.add_argument("--seed", type=int, default=0)


def add_train_args(p: argparse.ArgumentParser, *, rounds: int = 3, steps_per_round: int = 25,
                   final_steps: int = 25, lr: float = 1e-4, batch_size: int = 32) -> None:
    g = p.add_argument_group("student training (one trial)")
    g.add_argument("--rounds", type=int, default=rounds)
    g.add_argument("--steps-per-round", type=int, default=steps_per_round)
    g.add_argument("--final-steps", type=int, default=final_steps)
    g.add_argument("--lr", type=float, default=lr)
    g.add_argument("--batch-size", type=int, default=batch_size)
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--loss-weights", default=None, help="e.g. embedding=1,attention=1,hidden=1,logits=1")
    g.add_argument("--no-distill", action="store_true", help="train the student on gold labels only")
    g.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="forward passes of teacher fine-tuning and students (bf16 = autocast)")


# The configs come from the CLI's own builders (ladasearch.cli.common): the options above carry the CLI's names.

def _none_if_zero(value):
    return None if not value else value


def data_config(args, *, max_dev="args"):
    from ladasearch.cli.common import data_config as build

    return build({**vars(args), "max_train": _none_if_zero(args.max_train),
                  "max_dev": _none_if_zero(args.max_dev if max_dev == "args" else max_dev)})


def teacher_config(args):
    from ladasearch.cli.common import teacher_config as build

    return build(vars(args))


def train_config(args, **override):
    from ladasearch.cli.common import train_config as build

    return replace(build(vars(args)), **override)


def set_threads(args) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    return torch.get_num_threads()


# ---- teacher and data ---------------------------------------------------------------------------

def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def teacher_folder(args) -> tuple[str, float]:
    """The fine-tuned teacher folder (made once on the full dev split and cached) and its full-dev score."""
    if args.teacher_path:
        return args.teacher_path, float("nan")
    from ladasearch.models import pick_device
    from ladasearch.jobs.pipeline import prepare, prepare_teacher

    cfg = data_config(args, max_dev=None)
    prepared = prepare(cfg, args.model)
    teacher = prepare_teacher(prepared, cfg, args.model, teacher_config(args), pick_device(args.device),
                              Path(args.cache_dir) if args.cache_dir else None, None, log)
    return str(teacher.path), teacher.score


def load_job(args, teacher_dir: str, *, max_dev="args"):
    """(prepared data, Teacher) for this script's data config, the teacher taken from ``teacher_dir``."""
    from ladasearch.models import pick_device
    from ladasearch.jobs.pipeline import prepare, prepare_teacher

    cfg = data_config(args, max_dev=max_dev)
    prepared = prepare(cfg, args.model, teacher_dir)
    teacher = prepare_teacher(prepared, cfg, args.model, teacher_config(args), pick_device(args.device), None,
                              teacher_dir, log)
    return prepared, teacher


# ---- results ------------------------------------------------------------------------------------

def machine() -> dict:
    import torch

    from ladasearch.runtime.timing import machine_facts

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {**machine_facts(), "torch_threads": torch.get_num_threads(), "gpu": gpu, "torch": torch.__version__,
            "python": platform.python_version(), "time": datetime.datetime.now().isoformat(timespec="seconds")}


def write_result(name: str, payload: dict, markdown: str | None = None, out_dir: str | Path | None = None) -> Path:
    out = Path(out_dir) if out_dir else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    if markdown is not None:
        (out / f"{name}.md").write_text(markdown.rstrip() + "\n")
    log(f"wrote {path}" + (f" and {path.with_suffix('.md')}" if markdown is not None else ""))
    return path


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def md_table(headers: list[str], rows: list[list], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def pct(x: float | None, digits: int = 1) -> str:
    return "" if x is None else f"{100 * x:.{digits}f}"


def fmt_time(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def command_line() -> str:
    return " ".join(["python", *[a if " " not in a else repr(a) for a in sys.argv]])


def median(values):
    return statistics.median(values) if values else None


def hybrid_ratios(counts, target: float, embedding: float, split: float, method: str = "hybrid"):
    """A search space's point (encoder ratio from the budget, split between SVD and pruning) as Ratios."""
    from ladasearch.compress.budget import split_ratios

    return split_ratios(counts, target, embedding, split, method)


def trial_order(trial_id: str) -> int:
    """Tune trial ids end in a running number (``abc12_00003``): creation order."""
    try:
        return int(str(trial_id).rsplit("_", 1)[-1])
    except ValueError:
        return 0


def best_so_far(scores: list[float | None]) -> list[float | None]:
    out, best = [], None
    for s in scores:
        if s is not None and (best is None or s > best):
            best = s
        out.append(best)
    return out


def save_png(fig, path):
    """Write ``fig`` as the benchmark's PNG and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
