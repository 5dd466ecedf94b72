"""Pruned matrices stored packed: export file sizes and onnxruntime latency, packed against dense zeros.

A MiniLM classifier (the offline model, 3 labels; its scores do not matter here) is compressed in one shot
(no training) by pruning only and by SVD + pruning, at 2.5x and 5x.  For each student it writes the HF
folder's weights (dense zeros: ``save_pretrained``; packed: ``runtime.hf.save_weights``), the fp32 ONNX
graph and the int8 graph, each dense and packed, then checks that the packed file gives the same logits and
times both graphs in onnxruntime (batch 1 and 32, length 128, one thread, runs interleaved) and the time to
build the session (the packed graph is unpacked then, by constant folding).

    python benchmarks/packed.py --out-dir D
"""

from __future__ import annotations

import argparse
import copy
import shutil
import tempfile
import time
from pathlib import Path

import _common as C
import numpy as np
import torch

MIB = 1 << 20


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--targets", default="2.5,5")
    p.add_argument("--methods", default="prune,hybrid")
    p.add_argument("--runs", type=int, default=20, help="timed runs per graph and batch size")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", default=None)
    return p.parse_args(argv)


def student_of(teacher, method: str, target: float):
    from ladasearch.compress import compress_step, count_parameters, make_plan
    from ladasearch.nn.masks import fold_masks

    counts = count_parameters(teacher)
    ratios = C.hybrid_ratios(counts, target, embedding=1.0 / target, split=0.0 if method == "prune" else 0.5,
                             method=method)
    student = copy.deepcopy(teacher)
    compress_step(student, make_plan(student, ratios), 1.0)
    achieved = counts.total / count_parameters(student).total   # counted with the masks on: stored non-zeros
    return fold_masks(student).eval(), achieved


def timed(session, inputs, batch: int, runs: int) -> list[float]:
    from ladasearch.runtime.onnx_export import run_onnx

    feed = {k: v[:batch] for k, v in inputs.items()}
    run_onnx(session, feed)
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        run_onnx(session, feed)
        out.append((time.perf_counter() - start) * 1e3)
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForSequenceClassification

    from ladasearch.models import resolve_model
    from ladasearch.runtime.hf import deploy_model, save_weights
    from ladasearch.runtime.inputs import random_inputs
    from ladasearch.runtime.onnx import export_onnx, onnx_session
    from ladasearch.runtime.onnx_export import run_onnx
    from ladasearch.runtime.packing import pack_onnx
    from ladasearch.runtime.quantize import quantize_int8

    teacher = AutoModelForSequenceClassification.from_pretrained(resolve_model("minilm"), num_labels=3).eval()
    rows, records = [], []
    with tempfile.TemporaryDirectory(prefix="ladasearch-packed-") as scratch:
        for target in (float(t) for t in args.targets.split(",")):
            for method in args.methods.split(","):
                student, achieved = student_of(teacher, method, target)
                exported = deploy_model(student, _summary(teacher, student, method, target))
                root = Path(scratch) / f"{method}-{target:g}"
                hf_dense, hf_packed = root / "hf-dense", root / "hf-packed"
                exported.save_pretrained(hf_dense)
                save_weights(exported, hf_packed)
                record = {"method": method, "target": target, "achieved": achieved,
                          "hf": {"dense": (hf_dense / "model.safetensors").stat().st_size,
                                 "packed": (hf_packed / "model.safetensors").stat().st_size}}
                fp32 = export_onnx(exported, root / "fp32.onnx")
                int8 = quantize_int8(fp32, root / "int8.onnx")
                inputs = random_inputs(exported, 32, 128, seed=0, padded=True)
                for name, dense in (("onnx", fp32), ("onnx-int8", int8)):
                    packed = shutil.copyfile(dense, root / f"{name}-packed.onnx")
                    pack_onnx(packed)
                    entry = {"dense": dense.stat().st_size, "packed": Path(packed).stat().st_size}
                    sessions = {}
                    for kind, path in (("dense", dense), ("packed", packed)):
                        start = time.perf_counter()
                        sessions[kind] = onnx_session(path, args.threads)
                        entry[f"{kind}_load_s"] = time.perf_counter() - start
                    entry["max_abs_diff"] = float(np.abs(run_onnx(sessions["dense"], inputs)
                                                         - run_onnx(sessions["packed"], inputs)).max())
                    for batch in (1, 32):
                        times = {"dense": [], "packed": []}
                        for _ in range(max(1, args.runs // 5)):   # interleaved rounds: both see the same load
                            for kind in times:
                                times[kind] += timed(sessions[kind], inputs, batch, 5)
                        for kind, values in times.items():
                            entry[f"{kind}_b{batch}_ms"] = float(np.median(values))
                    record[name] = entry
                records.append(record)
                C.log(f"{method} {target:g}x: {record}")
                for name in ("hf", "onnx", "onnx-int8"):
                    e = record[name]
                    rows.append([method, f"{target:g}x ({achieved:.2f}x)", name, f"{e['dense'] / MIB:.1f}",
                                 f"{e['packed'] / MIB:.1f}", f"{e['dense'] / e['packed']:.2f}x",
                                 *((f"{e['dense_b1_ms']:.1f} / {e['packed_b1_ms']:.1f}",
                                    f"{e['dense_b32_ms']:.0f} / {e['packed_b32_ms']:.0f}",
                                    f"{e['dense_load_s']:.2f} / {e['packed_load_s']:.2f}",
                                    f"{e['max_abs_diff']:.1e}") if name != "hf" else ("", "", "", ""))])
    table = C.md_table(["method", "target (achieved)", "format", "dense zeros MiB", "packed MiB", "smaller",
                        "batch 1 ms dense / packed", "batch 32 ms dense / packed", "session build s",
                        "max logits diff"], rows)
    machine = C.machine()
    md = (f"# Pruned matrices stored packed\n\n`{C.command_line()}`\n\n"
          f"MiniLM (3 labels), compressed in one shot, no training; onnxruntime on {args.threads} thread(s), "
          f"length 128, median of {args.runs} runs per cell, dense and packed interleaved; machine "
          f"{machine.get('cpu')}, load {machine.get('loadavg')}.\n\n{table}\n")
    C.write_result("packed", {"records": records, "machine": machine, "command": C.command_line()}, md,
                   args.out_dir)
    print(md)


def _summary(teacher, student, method: str, target: float):
    from ladasearch.compress import count_parameters
    from ladasearch.summary import ParamRecord, RatioRecord, TrialSummary

    t, s = count_parameters(teacher), count_parameters(student)
    return TrialSummary(task="mnli", main_metric="accuracy", ratios=RatioRecord(method, 1.0, 1.0, 1.0),
                        achieved_factor=t.total / s.total, teacher_params=ParamRecord(t.embedding, t.encoder, t.dense),
                        student_params=ParamRecord(s.embedding, s.encoder, s.dense), matrices=(), score=None,
                        metrics={}, history=(), target=target, teacher_score=None, model="minilm")


if __name__ == "__main__":
    main()
