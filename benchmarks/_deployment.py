"""Deployment measurements of ``inference.py``: the teacher and the students as a user deploys them.

Three runtimes per model, each written as its deployable folder and measured the same way:

    torch      the teacher's own folder / the student's ``export-model --format hf`` folder, loaded by plain
               transformers (SDPA attention), timed in PyTorch
    onnx       model.onnx (fp32): the student's ``--format onnx`` folder; the teacher through
               ``ladasearch.runtime.onnx.export_onnx``; timed in onnxruntime (CPU)
    onnx-int8  that graph dynamically quantized (``quantize_int8``): the baseline a user would pick for the
               teacher, and the student's ``--format onnx-int8`` folder

Per row: weights-file bytes, peak RSS of a fresh serving process (``deployment_memory``: load the folder,
tokenize and classify one batch), latency per batch size (``measure_latency``, the export's own timer), and
the dev score on the same dev rows (torch: the model's logits; ONNX: onnxruntime's; the int8 drop is the
fp32 graph's score minus the int8 graph's, as the export's accuracy gate measures it).

A fourth row, ``onnx-fused``, is the fp32 graph with onnxruntime's fused ``Attention``
(``ladasearch.runtime.onnx_fusion.fuse_attention``) where it applies (dense query/key/value projections:
the teacher; not factorized students) and passes its logits check; every model records which graph it got
(``fusion``).  The teacher in torch runs with SDPA attention, as the exported students do.

``profile_split`` times one forward pass under ``torch.profiler`` and splits the self CPU time into the weight
matmuls (linear layers, factorized ones included), attention (``scaled_dot_product_attention``) and the rest.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import torch

RUNTIMES = ("torch", "onnx", "onnx-int8")
FUSED = "onnx-fused"
FORMAT = {"torch": "hf", "onnx": "onnx", "onnx-int8": "onnx-int8"}
MATMUL_OPS = {"aten::linear", "aten::addmm", "aten::mm", "aten::matmul", "aten::bmm", "aten::baddbmm"}


def torch_score(model, dev, batch_size: int = 64) -> float:
    """The task's main metric of a torch classifier on ``dev`` (a ``ladasearch.runtime.scoring.DevSet``)."""
    from ladasearch.data import compute_metrics, main_score
    from ladasearch.train.features import eval_batches

    logits = []
    for batch in eval_batches(dev.features, batch_size):
        batch.pop("labels")
        with torch.no_grad():
            logits.append(model(**batch).logits.float().numpy())
    return main_score(dev.task, compute_metrics(dev.task, np.concatenate(logits), dev.features.labels.numpy()))


def _row(runtime: str, folder: Path, file_bytes: int, latency, memory, score: float | None) -> dict:
    return {"runtime": runtime, "folder": str(folder), "file_bytes": file_bytes,
            "latency_ms": {str(x.batch): x.timing.to_json() for x in latency},
            "peak_rss_bytes": memory.peak_bytes, "model_rss_bytes": memory.model_bytes, "score": score}


def fused_row(model, onnx_folder: Path, out: Path, dev, timed, log) -> tuple[dict, dict | None]:
    """(the fusion record, the ``onnx-fused`` row or None): ``onnx_folder``'s graph with fused attention, in a copy."""
    from ladasearch.runtime.latency import measure_latency, onnx_runner
    from ladasearch.runtime.memory import deployment_memory
    from ladasearch.runtime.onnx_export import ONNX_FILE, onnx_session
    from ladasearch.runtime.scoring import onnx_score
    from ladasearch.runtime.inputs import max_length
    from ladasearch.runtime.onnx_fusion import fuse_attention

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(onnx_folder, out)
    fusion = fuse_attention(model, out / ONNX_FILE)
    log(f"  {FUSED}: {fusion.graph} ({fusion.attention_layers}/{fusion.layers} layers)"
        + (f": {fusion.reason}" if fusion.reason else ""))
    if not fusion.applied:
        shutil.rmtree(out, ignore_errors=True)
        return fusion.to_json(), None
    session = onnx_session(out / ONNX_FILE, timed.threads)
    latency = measure_latency(model, onnx_runner(session), "onnxruntime", batches=timed.batches,
                              seq_len=timed.seq_len, runs=timed.runs, threads=timed.threads)
    memory = deployment_memory(out, "onnxruntime", model_file=ONNX_FILE, batch=max(timed.batches),
                               seq_len=max_length(model, timed.seq_len), threads=timed.threads)
    row = _row(FUSED, out, (out / ONNX_FILE).stat().st_size, latency, memory, onnx_score(session, dev))
    return fusion.to_json(), row


def teacher_rows(teacher_dir: str, out: Path, dev, timed, log) -> tuple[tuple[dict, ...], dict]:
    """The dense teacher in torch (its own folder, SDPA attention), ONNX fp32 (traced and fused) and ONNX int8
    (quantized from the traced graph, as the export does); and the fusion record."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ladasearch.runtime.latency import measure_latency, onnx_runner, torch_runner
    from ladasearch.runtime.memory import deployment_memory
    from ladasearch.runtime.onnx_export import ONNX_FILE, onnx_session
    from ladasearch.runtime.footprint import file_bytes
    from ladasearch.runtime.inputs import max_length

    def latency(model, runner, runtime):
        return measure_latency(model, runner, runtime, batches=timed.batches, seq_len=timed.seq_len, runs=timed.runs,
                               threads=timed.threads)

    def memory(folder, runtime):
        return deployment_memory(folder, runtime, model_file=None if runtime == "torch" else ONNX_FILE,
                                 batch=max(timed.batches), seq_len=max_length(model, timed.seq_len),
                                 threads=timed.threads)

    # the exported students run SDPA attention: the teacher is timed with the same kernel
    model = AutoModelForSequenceClassification.from_pretrained(teacher_dir, attn_implementation="sdpa").eval()
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    log(f"teacher in torch ({model.config._attn_implementation} attention)")
    rows = [_row("torch", Path(teacher_dir), file_bytes(teacher_dir), latency(model, torch_runner(model), "torch"),
                 memory(teacher_dir, "torch"), torch_score(model, dev))]
    log("teacher to ONNX fp32 and int8")
    fp32, int8, gate = teacher_onnx(model, tokenizer, out / "teacher", dev, timed.threads)
    for runtime, path, score in (("onnx", fp32, gate.before), ("onnx-int8", int8, gate.after)):
        session = onnx_session(path, timed.threads)
        rows.append(_row(runtime, path.parent, path.stat().st_size, latency(model, onnx_runner(session), "onnxruntime"),
                         memory(path.parent, "onnxruntime"), score))
    rows[-1].update(fp32_score=gate.before, int8_drop_points=gate.drop)
    fusion, fused = fused_row(model, fp32.parent, out / "teacher" / FUSED, dev, timed, log)
    return tuple(rows) + ((fused,) if fused else ()), fusion


def teacher_onnx(model, tokenizer, out: Path, dev, threads: int):
    """The dense teacher as a user deploys it: traced to ONNX fp32 in ``out/onnx``, quantized to dynamic int8 in
    ``out/onnx-int8`` (each folder with the tokenizer and config), both scored on ``dev`` by the int8 gate.
    Returns (fp32 path, int8 path, gate)."""
    from ladasearch.runtime.onnx import export_onnx
    from ladasearch.runtime.onnx_export import ONNX_FILE
    from ladasearch.runtime.quantize import accuracy_gate, quantize_int8

    folders = {name: out / name for name in ("onnx", "onnx-int8")}
    for folder in folders.values():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        tokenizer.save_pretrained(folder)
        model.config.save_pretrained(folder)
    fp32 = export_onnx(model, folders["onnx"] / ONNX_FILE)
    int8 = quantize_int8(fp32, folders["onnx-int8"] / ONNX_FILE)
    return fp32, int8, accuracy_gate(fp32, int8, dev, math.inf, threads)


def student_rows(source: Path, out: Path, dev_data, timed, log) -> tuple[tuple[dict, ...], dict]:
    """A compressed model folder through ``export-model`` in each runtime (the int8 gate only records the drop),
    plus its fused-attention graph where that applies; and the fusion record."""
    from ladasearch.runtime.export import ExportSettings, export_model
    from ladasearch.runtime.hf import load_hf_folder
    from ladasearch.runtime.scoring import load_dev

    settings = ExportSettings(max_drop=math.inf, dev=dev_data, timed=timed, overwrite=True)
    rows, model, dev = [], None, None
    for runtime in RUNTIMES:
        record = export_model(source, FORMAT[runtime], out / runtime, settings, log=lambda m: log("  " + m))
        gate = record.written.gate
        score = None
        if runtime == "torch":
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(out / runtime, trust_remote_code=True)  # the folder's auto_map
            dev = load_dev(dev_data.for_summary(record.summary), tokenizer)
            model = load_hf_folder(out / runtime)  # what the ONNX folder was traced from
            score = torch_score(model, dev)
        row = _row(runtime, out / runtime, record.file_bytes, record.latency, record.memory, score)
        if gate is not None:  # the int8 folder: its gate scored the fp32 graph (the onnx row) and the int8 one
            row.update(score=gate.after, fp32_score=gate.before, int8_drop_points=gate.drop)
        rows.append(row)
    by_runtime = {r["runtime"]: r for r in rows}
    by_runtime["onnx"]["score"] = by_runtime["onnx-int8"]["fp32_score"]  # the same fp32 graph and dev rows
    fusion, fused = fused_row(model, out / "onnx", out / FUSED, dev, timed, log)
    return tuple(rows) + ((fused,) if fused else ()), fusion


def profile_split(model, batch: int, seq_len: int, runs: int = 3) -> dict:
    """Self CPU time of one forward pass (mean of ``runs``, after a warm-up) split into matmul / attention / other."""
    from torch.profiler import ProfilerActivity, profile

    from ladasearch.runtime.inputs import max_length, random_inputs

    inputs = random_inputs(model, batch, max_length(model, seq_len), seed=batch)
    with torch.no_grad():
        model(**inputs)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                model(**inputs)
    split = {"matmul": 0.0, "attention": 0.0, "other": 0.0}
    for event in prof.events():
        names, parent = [event.name], event.cpu_parent
        while parent is not None:
            names.append(parent.name)
            parent = parent.cpu_parent
        if any("scaled_dot_product" in n for n in names):
            kind = "attention"
        elif any(n in MATMUL_OPS for n in names):
            kind = "matmul"
        else:
            kind = "other"
        split[kind] += event.self_cpu_time_total / 1e3 / runs
    total = sum(split.values())
    return {"batch": batch, "seq_len": inputs["input_ids"].shape[1], "runs": runs, "total_ms": total,
            **{f"{k}_ms": v for k, v in split.items()}, **{f"{k}_share": v / total for k, v in split.items()}}


def plot_deploy(deploy: dict, path: Path, batch: str = "32") -> Path:
    """Dev score against batch latency and against file size, one marker per model and runtime."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import _common as C

    markers = {"torch": "o", "onnx": "s", "onnx-int8": "^", "onnx-fused": "D"}
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, model in enumerate(deploy["models"]):
        color = colors[k % len(colors)]
        for row in model["rows"]:
            if row.get("score") is None or batch not in row["latency_ms"]:
                continue
            score = 100 * row["score"]
            kwargs = dict(color=color, marker=markers.get(row["runtime"], "x"), s=40)
            axes[0].scatter(row["latency_ms"][batch]["median_ms"], score, **kwargs)
            axes[1].scatter(row["file_bytes"] / 2**20, score, **kwargs)
        axes[0].scatter([], [], color=color, marker="o", label=model["label"])
    for runtime, marker in markers.items():
        axes[1].scatter([], [], color="grey", marker=marker, label=runtime)
    axes[0].set_xlabel(f"latency at batch {batch} (ms, median)")
    axes[1].set_xlabel("file size (MiB)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_ylabel("dev score %")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7, title="runtime")
    fig.suptitle("Deployed models: dev score vs latency and file size (one thread)")
    return C.save_png(fig, path)
