"""Inference cost of compressed MiniLM models vs the teacher: latency (batch 1 and 32, seq 128), memory, file size.

Students are made by ``compress_model`` with one compression round and no training (latency, memory
and file size depend on the structure - ranks and kept-entry counts - not on the trained values; a
multi-round trial ends in the same structure).  Default students: the hybrid method at 2.5x, 5x,
7.5x and 10x, plus pruning only and SVD only at 5x (same embedding ratio), so the table shows which
kind of compression turns into speed on a CPU.  ``--ratios-from`` takes the best searched ratios per
target from an ``accuracy.py`` result instead of the default ratios.

Each student is measured with ``ladasearch.export.measure.compare`` in one run with the teacher:
weights-file bytes; RSS increase after loading in a fresh subprocess; CPU latency as the median of
``--runs`` runs after warm-up at a fixed thread count, teacher and student runs interleaved; for the
model as loaded (``plain``: PyTorch eager, pruning masks folded into dense zeros) and for ladasearch's
fast path (``fast``: per layer dense/factored/sparse, chosen by timing, plus SDPA attention).

    python benchmarks/inference.py --data-dir /work/shared/data/glue
    python benchmarks/inference.py --ratios-from benchmarks/results/accuracy-sst2.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

# (label, target, method, embedding ratio, svd split) - the split only matters for hybrid
DEFAULT_STUDENTS = [
    ("hybrid 2.5x", 2.5, "hybrid", 0.5, 0.5),
    ("hybrid 5x", 5.0, "hybrid", 0.2, 0.5),
    ("hybrid 7.5x", 7.5, "hybrid", 0.12, 0.5),
    ("hybrid 10x", 10.0, "hybrid", 0.08, 0.5),
    ("prune only 5x", 5.0, "prune", 0.2, 0.0),
    ("SVD only 5x", 5.0, "svd", 0.2, 1.0),
]
MIB = 1024 ** 2


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_data_args(p, max_dev=64, threads=1)
    g = p.add_argument_group("this benchmark")
    g.add_argument("--students", default=None,
                   help="semicolon-separated 'label:target:method:embedding_ratio:svd_split' (default: the built-in set)")
    g.add_argument("--ratios-from", default=None, help="an accuracy.py result JSON: measure its best searched "
                   "ratios per target (and its prune/SVD-only ablations) instead of the default students")
    g.add_argument("--student-dirs", default=None, help="comma-separated existing ladasearch model folders to "
                   "measure as well (e.g. a search's best model)")
    g.add_argument("--seq-len", type=int, default=128)
    g.add_argument("--batch-sizes", default="1,32")
    g.add_argument("--runs-b1", type=int, default=30, help="timed runs at batch 1 (after 5 warm-up runs)")
    g.add_argument("--runs-large", type=int, default=7, help="timed runs at larger batches (after 2 warm-up runs)")
    g.add_argument("--fast-mode", default="measure", choices=("measure", "macs"))
    g.add_argument("--keep-dir", default=None, help="keep the student folders here (default: a temp folder)")
    g.add_argument("--name", default=None)
    g.add_argument("--out-dir", default=None)
    return p.parse_args(argv)


def students_from(args) -> list[tuple]:
    if args.students:
        out = []
        for item in args.students.split(";"):
            label, target, method, emb, split = item.split(":")
            out.append((label, float(target), method, float(emb), float(split)))
        return out
    if args.ratios_from:
        data = json.loads(Path(args.ratios_from).read_text())
        out = []
        for t in data["targets"]:
            for variant, label in (("searched", "searched"), ("prune_only", "prune only"), ("svd_only", "SVD only")):
                r = t["variants"].get(variant, {}).get("ratios")
                if r:
                    out.append((f"{label} {t['target']:g}x", t["target"], r["method"], r["embedding"], r))
        return out
    return DEFAULT_STUDENTS


def make_ratios(counts, target, method, emb, split):
    from ladasearch.compress import Ratios, solve

    if isinstance(split, dict):  # exact ratios from an accuracy result
        return Ratios(embedding=split["embedding"], svd=split["svd"], weight=split["weight"], method=split["method"])
    if method != "hybrid":
        return solve(counts, target, method=method, embedding=emb)
    return C.hybrid_ratios(counts, target, emb, split)


def main(argv=None) -> dict:
    args = parse_args(argv)
    threads = C.set_threads(args)
    from ladasearch.compress import count_parameters
    from ladasearch.config import TrainConfig
    from ladasearch.export.measure import compare
    from ladasearch.serialize import save_compressed
    from ladasearch.trial import compress_model

    started = time.perf_counter()
    teacher_dir, _ = C.teacher_folder(args)
    prepared, teacher = C.load_job(args, teacher_dir)
    task = prepared.data.task
    counts = count_parameters(teacher.model)
    keep = Path(args.keep_dir) if args.keep_dir else Path(tempfile.mkdtemp(prefix="ladasearch-bench-inference-"))
    batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    runs = {b: args.runs_b1 if b == 1 else args.runs_large for b in batch_sizes}
    cfg = TrainConfig(rounds=1, steps_per_round=0, final_steps=0)

    folders: list[tuple[str, Path, dict]] = []
    for label, target, method, emb, split in students_from(args):
        ratios = make_ratios(counts, target, method, emb, split)
        result = compress_model(teacher.model, prepared.train, prepared.dev, task, ratios, cfg)
        folder = keep / label.replace(" ", "_")
        save_compressed(result.student, folder, {**result.summary(), "target": target, "task": task.name},
                        prepared.tokenizer)
        info = {"target": target, "ratios": result.summary()["ratios"], "achieved_factor": result.achieved_factor}
        folders.append((label, folder, info))
        C.log(f"{label}: {result.achieved_factor:.2f}x, ranks/keeps from {ratios}; saved {folder}")
    for d in (args.student_dirs or "").split(","):
        if d.strip():
            folders.append((Path(d).name, Path(d.strip()), {}))

    measured = []
    for label, folder, info in folders:
        C.log(f"measuring {label} against the teacher ({threads} threads)")
        res = compare(teacher_dir, folder, seq_len=args.seq_len, batch_sizes=batch_sizes, runs=runs,
                      threads=threads, fast_mode=args.fast_mode, write=False, log=lambda m: C.log("  " + m))
        measured.append({"label": label, "folder": str(folder), **info, "result": res})

    # ---- table (teacher numbers: median over its measurements in every compare run)
    def lat(side, variant, b):
        return side["latency_ms"][variant][str(b)]["median_ms"]

    import statistics
    t_rows = [m["result"]["teacher"] for m in measured]
    teacher_row = {
        "params": t_rows[0]["params"], "file": t_rows[0]["file_bytes"],
        "rss_plain": statistics.median(t["rss"]["plain"]["rss_bytes"] for t in t_rows),
        "rss_fast": statistics.median(t["rss"]["fast"]["rss_bytes"] for t in t_rows),
        **{f"{v}_b{b}": statistics.median(lat(t, v, b) for t in t_rows) for v in ("plain", "fast")
           for b in batch_sizes}}
    headers = ["model", "params", "weights MiB", "RSS MiB (plain / fast)"]
    for b in batch_sizes:
        headers += [f"b{b} ms plain", f"b{b} ms fast", f"b{b} speed-up*"]
    rows = [["teacher (dense MiniLM)", f"{teacher_row['params']:,}", f"{teacher_row['file'] / MIB:.1f}",
             f"{teacher_row['rss_plain'] / MIB:.0f} / {teacher_row['rss_fast'] / MIB:.0f}"]
            + sum(([f"{teacher_row[f'plain_b{b}']:.1f}", f"{teacher_row[f'fast_b{b}']:.1f}",
                    f"{teacher_row[f'plain_b{b}'] / teacher_row[f'fast_b{b}']:.2f}x"]
                   for b in batch_sizes), [])]
    for m in measured:
        s, t = m["result"]["student"], m["result"]["teacher"]
        row = [m["label"], f"{s['params']:,}", f"{s['file_bytes'] / MIB:.1f}",
               f"{s['rss']['plain']['rss_bytes'] / MIB:.0f} / {s['rss']['fast']['rss_bytes'] / MIB:.0f}"]
        for b in batch_sizes:
            row += [f"{lat(s, 'plain', b):.1f}", f"{lat(s, 'fast', b):.1f}",
                    f"{lat(t, 'plain', b) / lat(s, 'fast', b):.2f}x"]
        rows.append(row)
    counts_rows = [[m["label"], m["result"]["student"]["fast_path"]["counts"].get("factored", 0),
                    m["result"]["student"]["fast_path"]["counts"].get("dense", 0),
                    m["result"]["student"]["fast_path"]["counts"].get("sparse", 0),
                    f"{m['result']['loadavg_before'][0]:.1f} / {m['result']['loadavg_after'][0]:.1f}"]
                   for m in measured]
    wall = time.perf_counter() - started
    text = (f"Inference, {args.model} ({task.name} head), sequence length {args.seq_len}, {threads} torch threads, "
            f"CPU: {C.machine()['cpu']}. Latency = median of "
            f"{', '.join(f'{n} timed runs at batch {b}' for b, n in runs.items())} after warm-up (teacher and student interleaved in "
            f"each measurement; teacher columns = median over the {len(measured)} measurements). "
            f"*speed-up = teacher plain / this model's fast path, in the same measurement (teacher row: its own fast path). Wall time {C.fmt_time(wall)}.\n\n"
            + C.md_table(headers, rows) + "\n\nFast path of each student (layers kept factored / merged dense / "
            "sparse) and the 1-min load average before / after its measurement:\n\n"
            + C.md_table(["model", "factored", "dense", "sparse", "load avg"], counts_rows) + "\n")
    print(text)
    payload = {"benchmark": "inference", "command": C.command_line(), "args": vars(args), "machine": C.machine(),
               "teacher": teacher_dir, "teacher_summary": teacher_row, "students": measured, "wall_s": wall}
    C.write_result(args.name or "inference", payload, text, args.out_dir)
    return payload


if __name__ == "__main__":
    main()
