"""Inference cost of compressed MiniLM models vs the teacher: latency (batch 1 and 32, seq 128), memory, file size,
in PyTorch and as deployed (HF folder, ONNX fp32, ONNX int8) with the dev score of each, and a profile split.

Students: by default made here by ``compress_model``, one compression round and NO training (latency,
memory and file size depend on the structure - ranks and kept-entry counts - not on the trained values; a
multi-round trial ends in the same structure), so their dev scores are not meaningful and the tables say
so; ``--train`` distills them with the training options instead, and ``--students DIR,...`` measures
existing ``ladasearch compress --out`` folders (or a search's best model folder).  Default students: the
hybrid method at ``--targets`` (2.5x, 5x, 7.5x, 10x), plus pruning only and SVD only at 5x (same embedding
ratio), and at 5x and 10x the hybrid with each ``--structures`` share < 1 of attention heads and FFN neurons
kept ("hybrid 10x + structure 0.5": whole units removed, so the attention and the FFN get narrower too);
``--student-specs`` and ``--ratios-from`` (an ``accuracy.py`` result) choose other ratios.

Sections (``--sections``, all by default):
    fast     ``ladasearch.runtime.measure.compare`` per student, teacher interleaved: weights-file bytes, RSS
             after loading in a fresh subprocess, latency of the model as loaded (``plain``: PyTorch eager, masks
             folded into dense zeros) and of ladasearch's fast path (``fast``: per layer dense/factored/sparse,
             SDPA attention); speed-ups against the teacher's fast path (the same SDPA attention)
    deploy   teacher and students in torch (SDPA), ONNX fp32 (traced; fused attention where it applies) and ONNX
             int8 (``_deployment``): file size, peak RSS of a fresh serving process (batch 32 x seq), latency at
             each batch size, dev score and the int8 drop; then each model in its fastest runtime
    profile  ``torch.profiler`` split of one forward pass (matmul / attention / other) of the teacher and the
             students at the largest target (weight-only and structured), as deployed in torch (SDPA)

    python benchmarks/inference.py --data-dir ../shared/data/glue
    python benchmarks/inference.py --students compressed/sst2-10x,compressed/sst2-5x --sections deploy,profile
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _deployment as D  # noqa: E402



@dataclass(frozen=True)
class Spec:
    """A student made here: its ratios' inputs (``split``: the svd split of a hybrid, or an accuracy result's
    exact ratios as a dict)."""

    label: str
    target: float
    method: str
    embedding: float
    split: float | dict
    structure: float = 1.0


DEFAULT_STUDENTS = [
    Spec("hybrid 2.5x", 2.5, "hybrid", 0.5, 0.5),
    Spec("hybrid 5x", 5.0, "hybrid", 0.2, 0.5),
    Spec("hybrid 7.5x", 7.5, "hybrid", 0.12, 0.5),
    Spec("hybrid 10x", 10.0, "hybrid", 0.08, 0.5),
    Spec("prune only 5x", 5.0, "prune", 0.2, 0.0),
    Spec("SVD only 5x", 5.0, "svd", 0.2, 1.0),
]
STRUCTURED_TARGETS = (5.0, 10.0)  # the hybrid targets that also get a student per --structures share < 1
SECTIONS = ("fast", "deploy", "profile")
MIB = 1024 ** 2


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    C.add_data_args(p, max_dev=0, threads=1)
    C.add_train_args(p)
    g = p.add_argument_group("this benchmark")
    g.add_argument("--students", default=None, help="comma-separated existing ladasearch model folders (`compress "
                   "--out`, a search's best model) to measure instead of compressing students here")
    g.add_argument("--targets", default="2.5,5,7.5,10", help="targets of the students made here")
    g.add_argument("--factorizer", default="svd", help="factorizer of the students made here (e.g. activation)")
    g.add_argument("--prune-score", default="magnitude", help="pruning score of the students made here (e.g. taylor)")
    g.add_argument("--structure-score", default="taylor", help="how the structured students rank heads and neurons")
    g.add_argument("--train", action="store_true", help="distill the students made here (the training options) "
                   "instead of compressing them untrained; without it their dev scores are not meaningful")
    g.add_argument("--structures", default="1,0.5", help="shares of attention heads and FFN neurons kept: each "
                   "share < 1 adds a structured hybrid student at 5x and 10x (where those are --targets)")
    g.add_argument("--student-specs", default=None, help="semicolon-separated "
                   "'label:target:method:embedding_ratio:svd_split[:structure]' (default: the built-in set at "
                   "--targets and --structures)")
    g.add_argument("--ratios-from", default=None, help="an accuracy.py result JSON: measure its best searched "
                   "ratios per target (and its prune/SVD-only ablations) instead of the default students")
    g.add_argument("--sections", default=",".join(SECTIONS), help=f"any of {', '.join(SECTIONS)}")
    g.add_argument("--seq-len", type=int, default=128)
    g.add_argument("--batch-sizes", default="1,32")
    g.add_argument("--runs", type=int, default=None, help="timed runs at every batch size and in every section "
                   "(default: --runs-b1 / --runs-large, and 10 in the deploy section)")
    g.add_argument("--runs-b1", type=int, default=30, help="fast section: timed runs at batch 1")
    g.add_argument("--runs-large", type=int, default=7, help="fast section: timed runs at larger batches")
    g.add_argument("--fast-mode", default="measure", choices=("measure", "macs"))
    g.add_argument("--keep-dir", default=None, help="keep the student and export folders here (default: a temp "
                   "folder)")
    g.add_argument("--name", default=None)
    g.add_argument("--out-dir", default=None)
    args = p.parse_args(argv)
    bad = {s for s in args.sections.split(",") if s} - set(SECTIONS)  # "" = make the students only
    if bad:
        p.error(f"--sections: unknown {', '.join(sorted(bad))}; allowed: {', '.join(SECTIONS)}")
    try:
        args.structure_shares = tuple(float(x) for x in args.structures.split(",") if x.strip())
    except ValueError:
        args.structure_shares = ()
    if not args.structure_shares or not all(0 < x <= 1 for x in args.structure_shares):
        p.error(f"--structures {args.structures!r}: shares in (0, 1] separated by commas, e.g. 1,0.5")
    return args


def students_from(args) -> list[Spec]:
    if args.student_specs:
        out = []
        for item in args.student_specs.split(";"):
            label, target, method, emb, split, *structure = item.split(":")
            out.append(Spec(label, float(target), method, float(emb), float(split),
                            float(structure[0]) if structure else 1.0))
        return out
    if args.ratios_from:
        data = json.loads(Path(args.ratios_from).read_text())
        out = []
        for t in data["targets"]:
            for variant, label in (("searched", "searched"), ("prune_only", "prune only"), ("svd_only", "SVD only")):
                r = t["variants"].get(variant, {}).get("ratios")
                if r:
                    out.append(Spec(f"{label} {t['target']:g}x", t["target"], r["method"], r["embedding"], r,
                                    r.get("structure", 1.0)))
        return out
    targets = {float(t) for t in args.targets.split(",")}
    out = []
    for spec in (s for s in DEFAULT_STUDENTS if s.target in targets):
        out.append(spec)
        if spec.method == "hybrid" and spec.target in STRUCTURED_TARGETS:
            out += [replace(spec, label=f"{spec.label} + structure {share:g}", structure=share)
                    for share in args.structure_shares if share < 1]
    return out


def make_ratios(counts, spec: Spec, widths):
    from ladasearch.compress import Ratios, solve
    from ladasearch.compress.budget import split_ratios

    if isinstance(spec.split, dict):  # exact ratios from an accuracy result
        r = spec.split
        return Ratios(embedding=r["embedding"], svd=r["svd"], weight=r["weight"], method=r["method"],
                      structure=r.get("structure", 1.0))
    if spec.method != "hybrid":
        return solve(counts, spec.target, method=spec.method, embedding=spec.embedding, structure=spec.structure,
                     widths=widths)
    return split_ratios(counts, spec.target, spec.embedding, spec.split, spec.method, spec.structure, widths)


def make_students(args, keep: Path, teacher_dir: str) -> list[tuple[str, Path, dict]]:
    """(label, folder, info) of every student: the given folders, or compressed here."""
    if args.students:
        from ladasearch.serialize import saved_summary

        out = []
        for d in args.students.split(","):
            folder = Path(d.strip())
            summary = saved_summary(folder)
            if summary is None:
                raise SystemExit(f"--students: {folder} has no compression record (a `compress --out` folder?)")
            out.append((folder.name, folder, {"target": summary.target, "achieved_factor": summary.achieved_factor,
                                              "ratios": summary.ratios.to_json(), "trained": True, "given": True}))
        return out
    from ladasearch.compress import count_parameters
    from ladasearch.compress.structure import Widths
    from ladasearch.config import CompressionConfig, TrainConfig
    from ladasearch.train.ladabert import compress_model
    from ladasearch.serialize import save_compressed

    prepared, teacher = C.load_job(args, teacher_dir)
    counts, widths = count_parameters(teacher.model), Widths.of(teacher.model.config)
    cfg = C.train_config(args) if args.train else TrainConfig(rounds=1, steps_per_round=0, final_steps=0)
    out = []
    for spec in students_from(args):
        ratios = make_ratios(counts, spec, widths)
        compression = CompressionConfig(factorizer=args.factorizer, prune_score=args.prune_score,
                                        structure_score=args.structure_score)
        result = compress_model(teacher.model, prepared.train, prepared.dev, prepared.data.task, ratios, cfg,
                                compression=compression)
        folder = keep / "students" / spec.label.replace(" ", "_").replace("+", "")
        summary = result.summary(target=spec.target, teacher=teacher_dir, teacher_score=teacher.score)
        save_compressed(result.student, folder, summary, prepared.tokenizer)
        out.append((spec.label, folder, {"target": spec.target, "ratios": summary.ratios.to_json(),
                                         "achieved_factor": result.achieved_factor, "trained": args.train}))
        C.log(f"{spec.label}: {result.achieved_factor:.2f}x ({'distilled' if args.train else 'untrained'}), "
              f"from {ratios}; saved {folder}")
    return out


# ---- section: fast (the model as loaded vs ladasearch's fast path, teacher interleaved) ----------------------

def fast_section(args, teacher_dir, students, batch_sizes, threads) -> tuple[list[dict], str]:
    from ladasearch.runtime.measure import compare

    runs = {b: args.runs or (args.runs_b1 if b == 1 else args.runs_large) for b in batch_sizes}
    measured = []
    for label, folder, info in students:
        C.log(f"fast: {label} against the teacher ({threads} threads)")
        res = compare(teacher_dir, folder, seq_len=args.seq_len, batch_sizes=batch_sizes, runs=runs,
                      threads=threads, fast_mode=args.fast_mode, write=False, log=lambda m: C.log("  " + m))
        measured.append({"label": label, "folder": str(folder), **info, "result": res})

    def lat(side, variant, b):
        return side["latency_ms"][variant][str(b)]["median_ms"]

    t_rows = [m["result"]["teacher"] for m in measured]
    teacher = {"params": t_rows[0]["params"], "file": t_rows[0]["file_bytes"],
               "rss_plain": statistics.median(t["rss"]["plain"]["rss_bytes"] for t in t_rows),
               "rss_fast": statistics.median(t["rss"]["fast"]["rss_bytes"] for t in t_rows),
               **{f"{v}_b{b}": statistics.median(lat(t, v, b) for t in t_rows) for v in ("plain", "fast")
                  for b in batch_sizes}}
    headers = ["model", "params", "weights MiB", "RSS MiB (plain / fast)"]
    for b in batch_sizes:
        headers += [f"b{b} ms plain", f"b{b} ms fast", f"b{b} speed-up*"]
    rows = [["teacher (dense)", f"{teacher['params']:,}", f"{teacher['file'] / MIB:.1f}",
             f"{teacher['rss_plain'] / MIB:.0f} / {teacher['rss_fast'] / MIB:.0f}"]
            + sum(([f"{teacher[f'plain_b{b}']:.1f}", f"{teacher[f'fast_b{b}']:.1f}",
                    f"{teacher[f'plain_b{b}'] / teacher[f'fast_b{b}']:.2f}x"] for b in batch_sizes), [])]
    for m in measured:
        s, t = m["result"]["student"], m["result"]["teacher"]
        row = [m["label"], f"{s['params']:,}", f"{s['file_bytes'] / MIB:.1f}",
               f"{s['rss']['plain']['rss_bytes'] / MIB:.0f} / {s['rss']['fast']['rss_bytes'] / MIB:.0f}"]
        for b in batch_sizes:
            row += [f"{lat(s, 'plain', b):.1f}", f"{lat(s, 'fast', b):.1f}",
                    f"{lat(t, 'fast', b) / lat(s, 'fast', b):.2f}x"]
        rows.append(row)
    counts = [[m["label"], *(m["result"]["student"]["fast_path"]["counts"].get(k, 0) for k in ("factored", "dense",
                                                                                              "sparse")),
               f"{m['result']['loadavg_before'][0]:.1f} / {m['result']['loadavg_after'][0]:.1f}"] for m in measured]
    text = (f"Latency = median of {', '.join(f'{n} timed runs at batch {b}' for b, n in runs.items())} after warm-up, "
            f"teacher and student interleaved in each measurement (teacher columns: median over the {len(measured)} "
            f"measurements). *speed-up = the teacher's fast path (SDPA attention, as the students') / this model's "
            f"fast path, in the same measurement; on the teacher's row: its plain (eager attention) / its fast "
            f"path.\n\n"
            + C.md_table(headers, rows) + "\n\nFast path of each student (layers kept factored / merged dense / "
            "sparse) and the 1-min load average before / after its measurement:\n\n"
            + C.md_table(["model", "factored", "dense", "sparse", "load avg"], counts) + "\n")
    return measured, text


# ---- section: deploy (torch / ONNX fp32 / ONNX int8 folders) ---------------------------------------------------

def deploy_section(args, teacher_dir, students, batch_sizes, threads, keep, task) -> tuple[dict, str]:
    from transformers import AutoTokenizer

    from ladasearch.runtime.export import DevData
    from ladasearch.runtime.formats import Timed
    from ladasearch.runtime.scoring import load_dev

    timed = Timed(batches=batch_sizes, seq_len=args.seq_len, runs=args.runs or 10, threads=threads)
    dev_data = DevData(data_dir=args.data_dir, dev_split=args.dev_split, max_dev=args.max_dev or None,
                       max_length=args.max_length, seed=args.seed)
    dev = load_dev(dev_data.for_task(task), AutoTokenizer.from_pretrained(teacher_dir))
    C.log(f"deploy: teacher, dev {dev.rows} rows from {dev.source}")
    teacher, fusion = D.teacher_rows(teacher_dir, keep / "deploy", dev, timed, C.log)
    models = [{"label": "teacher (dense)", "trained": True, "achieved_factor": 1.0, "target": 1.0, "rows": teacher,
               "fusion": fusion}]
    for label, folder, info in students:
        C.log(f"deploy: {label}")
        rows, fusion = D.student_rows(folder, keep / "deploy" / folder.name, dev_data, timed, C.log)
        models.append({"label": label, **info, "source": str(folder), "rows": rows, "fusion": fusion})
    base = teacher[0]  # the dense teacher in PyTorch: what every speed-up and file ratio is against
    headers = ["model", "runtime", "file MiB", "file vs teacher", "peak RSS MiB", "over runtime MiB"]
    headers += [f"b{b} ms" for b in batch_sizes] + [f"b{b} speed-up" for b in batch_sizes]
    headers += ["dev score", "int8 drop (points)"]
    table = []
    for m in models:
        for r in m["rows"]:
            meaningful = m["trained"]
            score = f"{100 * r['score']:.1f}" if meaningful else "n/a (untrained)"
            drop = f"{r['int8_drop_points']:.2f}" if "int8_drop_points" in r and meaningful else ""
            table.append([m["label"], r["runtime"], f"{r['file_bytes'] / MIB:.1f}",
                          f"1/{base['file_bytes'] / r['file_bytes']:.1f}", f"{r['peak_rss_bytes'] / MIB:.0f}",
                          f"{r['model_rss_bytes'] / MIB:.0f}"]
                         + [f"{r['latency_ms'][str(b)]['median_ms']:.1f}" for b in batch_sizes]
                         + [f"{base['latency_ms'][str(b)]['median_ms'] / r['latency_ms'][str(b)]['median_ms']:.2f}x"
                            for b in batch_sizes] + [score, drop])
    aim = _aim(models, base, max(batch_sizes))
    best = _best_runtimes(models, batch_sizes)
    text = (f"Dev score on {dev.rows} dev rows ({dev.source}, length {args.max_length}); latency = median of "
            f"{timed.runs} timed runs after 2 warm-up runs, sequence length {args.seq_len}, {threads} thread(s) "
            f"(torch and onnxruntime); peak RSS of a fresh process that loads the folder and classifies one batch of "
            f"{max(batch_sizes)} x {args.seq_len} (plain transformers / onnxruntime, no ladasearch import; 'over "
            f"runtime' = that peak minus the process's RSS once the runtime is imported: weights plus the batch's "
            f"activations, which dominate at this batch size). Speed-up "
            f"and file ratio against the dense teacher in PyTorch. int8 drop = dev score of the fp32 graph minus "
            f"the int8 graph's (the export's accuracy gate); int8 is quantized from the traced fp32 graph. "
            f"{D.FUSED}: the fp32 graph with onnxruntime's fused Attention, only where it applies (dense query/key/"
            f"value projections) and its logits match.\n\n" + C.md_table(headers, table) + "\n\n" + best + "\n\n"
            + aim + "\n")
    return {"dev_rows": dev.rows, "dev_source": dev.source, "timed": asdict(timed), "models": models, "aim": aim}, text


def _best_runtimes(models, batch_sizes) -> str:
    """Each model in its fastest runtime per batch size, against the teacher in PyTorch and in its fastest."""
    def ms(row, b):
        return row["latency_ms"][str(b)]["median_ms"]

    teacher_torch = models[0]["rows"][0]
    headers = ["model", "ONNX fp32 attention"]
    for b in batch_sizes:
        headers += [f"b{b} fastest", f"b{b} ms", f"b{b} vs teacher torch", f"b{b} vs teacher's fastest"]
    table = []
    for m in models:
        row = [m["label"], m["fusion"]["graph"]]
        for b in batch_sizes:
            fastest = min(m["rows"], key=lambda r: ms(r, b))
            teacher_best = min(ms(r, b) for r in models[0]["rows"])
            row += [fastest["runtime"], f"{ms(fastest, b):.1f}", f"{ms(teacher_torch, b) / ms(fastest, b):.2f}x",
                    f"{teacher_best / ms(fastest, b):.2f}x"]
        table.append(row)
    return ("Each model in its fastest runtime (int8 rows are the fastest where the accuracy gate would let "
            "them through; check the int8 drop):\n\n" + C.md_table(headers, table))


def _aim(models, base, batch) -> str:
    """The issue's aim for the students at the largest target (weight-only and structured): >= 3x faster than the
    teacher in PyTorch at the largest batch in their fastest runtime, <= 1 point dev drop (that runtime vs the
    student in torch), file <= 1/10."""
    if len(models) < 2:
        return ""
    top = max(_target(m) for m in models[1:])
    return "\n\n".join(_aim_line(m, base, batch) for m in models[1:] if _target(m) == top)


def _target(info: dict) -> float:
    """The target a student was made for (a given folder without one: its achieved factor)."""
    return info.get("target") or info["achieved_factor"]


def _aim_line(m, base, batch) -> str:
    best = min(m["rows"], key=lambda r: r["latency_ms"][str(batch)]["median_ms"])
    speed = base["latency_ms"][str(batch)]["median_ms"] / best["latency_ms"][str(batch)]["median_ms"]
    ratio = base["file_bytes"] / best["file_bytes"]
    torch_row = next(r for r in m["rows"] if r["runtime"] == "torch")
    drop = 100 * (torch_row["score"] - best["score"])
    drop_text = f"{drop:.2f} points vs the student in torch" if m["trained"] else "not meaningful (untrained student)"
    return (f"Aim ({m['label']}, {m['achieved_factor']:.2f}x, fastest runtime at batch "
            f"{batch}: {best['runtime']}): {speed:.2f}x faster than the teacher in PyTorch (aim >= 3x: "
            f"{'met' if speed >= 3 else 'not met'}); file 1/{ratio:.1f} of the teacher's (aim <= 1/10: "
            f"{'met' if ratio >= 10 else 'not met'}); dev drop {drop_text}"
            + ("" if not m["trained"] else f" (aim <= 1: {'met' if drop <= 1 else 'not met'})") + ".")


# ---- section: profile ------------------------------------------------------------------------------------------

def profile_section(args, teacher_dir, students, batch_sizes, threads, keep) -> tuple[list[dict], str]:
    import torch
    from transformers import AutoModelForSequenceClassification

    from ladasearch.runtime.export import ExportSettings, export_model
    from ladasearch.runtime.hf import load_hf_folder

    torch.set_num_threads(threads)
    # the teacher with the students' attention (SDPA), and every student at the largest target
    models = [("teacher (dense)", AutoModelForSequenceClassification.from_pretrained(
        teacher_dir, attn_implementation="sdpa").eval())]
    top = max(_target(info) for _, _, info in students)
    for label, folder, info in students:
        if _target(info) != top:
            continue
        hf = keep / "deploy" / folder.name / "torch"
        if not (hf / "config.json").is_file():  # the deploy section did not run
            export_model(folder, "hf", hf, ExportSettings(measure=False, overwrite=True), log=lambda m: None)
        models.append((f"{label} ({info['achieved_factor']:.2f}x)", load_hf_folder(hf)))
    runs = min(args.runs or 3, 10)
    out, table = [], []
    for name, model in models:
        for b in batch_sizes:
            C.log(f"profile: {name}, batch {b}")
            split = D.profile_split(model, b, args.seq_len, runs)
            out.append({"model": name, **split})
            shares = [f"{split[f'{k}_ms']:.1f} ({100 * split[f'{k}_share']:.0f}%)"
                      for k in ("matmul", "attention", "other")]
            table.append([name, b, f"{split['total_ms']:.1f}", *shares])
    text = (f"torch.profiler, self CPU time per forward pass (mean of {runs} after a warm-up; profiler overhead "
            f"included), as deployed in torch (SDPA attention): matmul = linear layers (factorized ones: two "
            f"matmuls), attention = scaled_dot_product_attention, other = embeddings, LayerNorm, GELU, adds, "
            f"copies.\n\n" + C.md_table(["model", "batch", "total ms", "matmul ms", "attention ms", "other ms"], table)
            + "\n")
    return out, text


def main(argv=None) -> dict:
    args = parse_args(argv)
    threads = C.set_threads(args)
    sections = args.sections.split(",")
    started = time.perf_counter()
    teacher_dir, _ = C.teacher_folder(args)
    keep = Path(args.keep_dir) if args.keep_dir else Path(tempfile.mkdtemp(prefix="ladasearch-bench-inference-"))
    batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    students = make_students(args, keep, teacher_dir)
    from ladasearch.serialize import saved_summary

    task = saved_summary(students[0][1]).task
    payload = {"benchmark": "inference", "command": C.command_line(), "args": vars(args), "machine": C.machine(),
               "teacher": teacher_dir, "students": [{"label": s[0], "folder": str(s[1]), **s[2]} for s in students]}
    untrained = [s[0] for s in students if not s[2]["trained"]]
    parts = [f"Inference, {args.model} ({task} head), sequence length {args.seq_len}, {threads} thread(s), CPU: "
             f"{C.machine()['cpu']}." + (f" Students compressed without training ({', '.join(untrained)}): their "
                                         f"latency, memory and size are those of a trained student of the same "
                                         f"structure; their dev scores are not meaningful." if untrained else "")]
    if "fast" in sections:
        payload["fast"], text = fast_section(args, teacher_dir, students, batch_sizes, threads)
        parts.append("### PyTorch: as loaded vs fast path\n\n" + text)
    if "deploy" in sections:
        payload["deploy"], text = deploy_section(args, teacher_dir, students, batch_sizes, threads, keep, task)
        parts.append("### Deployed: torch, ONNX fp32, ONNX int8\n\n" + text)
    if "profile" in sections:
        payload["profile"], text = profile_section(args, teacher_dir, students, batch_sizes, threads, keep)
        parts.append("### Where the time goes (torch)\n\n" + text)
    payload["wall_s"] = time.perf_counter() - started
    text = "\n\n".join(parts) + f"\n\nWall time {C.fmt_time(payload['wall_s'])}; folders in {keep}.\n"
    print(text)
    C.write_result(args.name or "inference", payload, text, args.out_dir)
    if "deploy" in sections:
        D.plot_deploy(payload["deploy"], Path(args.out_dir or C.RESULTS) / f"{args.name or 'inference'}.png")
    return payload


if __name__ == "__main__":
    main()
