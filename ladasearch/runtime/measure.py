"""Is the compressed model really smaller and faster?  File size, resident memory and CPU latency.

For a model folder (a Hugging Face folder written by ``save_pretrained``, e.g. the cached teacher, or
a ladasearch folder written by ``save_compressed``):

    file        bytes of the weights file(s) on disk (model.safetensors, shards, or pytorch_model.bin)
    rss         resident-memory increase caused by loading the model (see ``footprint``), for the plain
                model and for the fast path built from it
    latency     CPU milliseconds per forward pass at batch 1 and 32, sequence length 128, under
                no_grad with a fixed thread count: median and minimum of ``runs`` runs after
                ``warmup`` runs; all variants of both models are timed interleaved, run by run, so that
                load from other processes hits them alike
    variants    plain = the model as loaded, pruning masks folded (load_compressed(keep_masks=False));
                fast  = optimize_for_inference(plain) (per-layer dense/factored/sparse choice + SDPA);
                onnx  = onnxruntime on the exported graph (with ``onnx=True``)

``compare`` measures teacher and student in one run and writes the result into the student's
``summary.json`` and the summary saved in its ``ladasearch.json``, under ``inference``.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..compress.accounting import count_parameters
from ..errors import LadaError
from ..io import write_json_atomic
from ..models import load_classifier, model_folder
from ..nn.masks import fold_masks
from ..serialize import META, read_meta, saved_summary, verify_saved
from ..summary import TrialSummary
from .fast import optimize_for_inference
from .footprint import MemoryJob, file_bytes, resident_memory, tensor_bytes, weights_files
from .inputs import random_inputs
from .onnx import check_onnx, export_onnx, onnx_session
from .timing import forward_runner, machine_facts, time_interleaved

REPORT_KEYS = ("mode", "requested_mode", "busy_load", "attention", "counts", "plan", "max_abs_diff",
               "linear_macs_per_token", "note")
LAYER_KEYS = ("choice", "ms", "rank", "density", "shape", "reason")


def _onnx_runner(session, inputs: dict[str, torch.Tensor]) -> Callable[[], object]:
    feed = {k: v.numpy() for k, v in inputs.items()}
    return lambda: session.run(["logits"], feed)


def _saved_summaries(student_dir: Path) -> dict[Path, TrialSummary]:
    """The student's summary.json and the summary saved in its ladasearch.json, where there are ones."""
    found = {}
    summary_file = student_dir / "summary.json"
    if summary_file.is_file():
        found[summary_file] = TrialSummary.from_json(_read_json(summary_file), str(summary_file))
    if (student_dir / META).is_file() and (saved := saved_summary(student_dir)) is not None:
        found[student_dir / META] = saved
    return found


def write_inference(student_dir: str | Path, inference: dict) -> list[Path]:
    """Record ``inference`` in the student's summary.json and in the summary saved in its ladasearch.json
    (each where there is one); returns the files written."""
    student_dir = Path(student_dir)
    written = []
    for path, summary in _saved_summaries(student_dir).items():
        record = summary.with_(inference=inference).to_json()
        if path.name == META:
            written.append(write_json_atomic(path, {**read_meta(student_dir), "summary": record}, sort_keys=True))
        else:
            written.append(write_json_atomic(path, record))
    return written


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise LadaError(f"{path} is not valid JSON: {exc}") from None


def _load(role: str, folder: Path, fast_mode: str, log: Callable[[str], None]) -> tuple[dict, dict[str, nn.Module]]:
    """Load one model (plain and fast path) and describe it: the ``result[role]`` entry and its models."""
    log(f"{role}: loading {folder}")
    plain = load_classifier(folder, keep_masks=True)
    params = count_parameters(plain).total  # stored non-zeros: counted while the masks are on
    fold_masks(plain)
    log(f"{role}: building the fast path ({fast_mode})")
    fast, report = optimize_for_inference(plain, mode=fast_mode)
    info = {
        "path": str(folder), "kind": "ladasearch" if (folder / META).is_file() else "huggingface",
        "weights_files": [f.name for f in weights_files(folder)], "file_bytes": file_bytes(folder),
        "params": params, "tensor_bytes": {"plain": tensor_bytes(plain), "fast": tensor_bytes(fast)},
        "fast_path": {k: report[k] for k in REPORT_KEYS if k in report}
        | {"layers": {name: {k: v for k, v in layer.items() if k in LAYER_KEYS}
                      for name, layer in report["layers"].items()}},
    }
    return info, {"plain": plain, "fast": fast}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def compare(teacher_dir: str | Path, student_dir: str | Path, *, seq_len: int = 128,
            batch_sizes: tuple[int, ...] = (1, 32), runs: dict[int, int] | None = None,
            warmup: dict[int, int] | None = None, threads: int | None = None, fast_mode: str = "auto",
            onnx: bool = False, onnx_dir: str | Path | None = None, write: bool = True,
            log: Callable[[str], None] | None = None) -> dict:
    """Measure teacher and student in one run (see the module docstring); returns the ``inference`` dict.

    runs / warmup: per batch size (defaults: batch 1 -> 30 runs after 5, larger -> 7 runs after 2).
    onnx: also export both to ONNX (the student's file goes to ``onnx_dir`` or ``<student>/onnx``), check the
    student's ONNX logits against torch and time onnxruntime.
    """
    log = log or (lambda message: None)
    folders = {"teacher": model_folder(teacher_dir), "student": model_folder(student_dir)}
    if write:
        _saved_summaries(folders["student"])  # a hand-edited summary fails now, not after the measurement
    for folder in folders.values():  # an edited or damaged student fails before the teacher is timed
        if (folder / META).is_file():
            verify_saved(folder)
    threads = threads or torch.get_num_threads()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    runs = {b: (runs or {}).get(b, 30 if b == 1 else 7) for b in batch_sizes}
    warmup = {b: (warmup or {}).get(b, 5 if b == 1 else 2) for b in batch_sizes}
    result: dict = {
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seq_len": seq_len, "batch_sizes": list(batch_sizes), "threads": threads, "runs": runs, "warmup": warmup,
        "torch": torch.__version__, "python": platform.python_version(), **machine_facts(),
        "loadavg_before": list(os.getloadavg()),
    }
    try:
        models: dict[str, dict[str, nn.Module]] = {}
        for role, folder in folders.items():
            result[role], models[role] = _load(role, folder, fast_mode, log)
        with tempfile.TemporaryDirectory(prefix="ladasearch-onnx-") as scratch:
            sessions = _export_onnx(models, folders["student"], onnx_dir, Path(scratch), seq_len, threads, result,
                                    log) if onnx else {}
            for batch in batch_sizes:
                log(f"latency: batch {batch}, sequence {seq_len}, {runs[batch]} runs after {warmup[batch]}, "
                    f"{threads} threads")
                runners = {}
                for role in folders:
                    inputs = random_inputs(models[role]["plain"], batch, seq_len, seed=batch)
                    runners[f"{role}/plain"] = forward_runner(models[role]["plain"], inputs)
                    runners[f"{role}/fast"] = forward_runner(models[role]["fast"], inputs)
                    if role in sessions:
                        runners[f"{role}/onnx"] = _onnx_runner(sessions[role], inputs)
                for name, timing in time_interleaved(runners, runs[batch], warmup[batch]).items():
                    role, variant = name.split("/")
                    result[role].setdefault("latency_ms", {}).setdefault(variant, {})[str(batch)] = timing.to_json()
            del sessions
        del models
        gc.collect()
        log("resident memory after loading (a fresh subprocess per model)")
        jobs = [MemoryJob(folder, result[role]["fast_path"]["plan"], result[role]["fast_path"]["attention"])
                for role, folder in folders.items()]
        result["teacher"]["rss"], result["student"]["rss"] = resident_memory(jobs, threads=threads)
    finally:
        torch.set_num_threads(old_threads)
    result["loadavg_after"] = list(os.getloadavg())
    result["teacher_over_student"] = _ratios(result["teacher"], result["student"], batch_sizes)
    if write:
        written = write_inference(folders["student"], result)
        log("written to " + ", ".join(str(p) for p in written) if written else
            "not written: the student folder has no summary.json nor a saved summary")
    return result


def _export_onnx(models: dict[str, dict[str, nn.Module]], student_dir: Path, onnx_dir: str | Path | None,
                 scratch: Path, seq_len: int, threads: int, result: dict, log: Callable[[str], None]) -> dict:
    """Export both fast paths to ONNX, check them against the plain models; the onnxruntime session of each."""

    sessions = {}
    for role in models:
        target = (Path(onnx_dir or student_dir / "onnx") / "model.onnx" if role == "student"
                  else scratch / "teacher.onnx")
        log(f"{role}: exporting ONNX to {target}")
        export_onnx(models[role]["fast"], target, seq_len=seq_len)
        sessions[role] = onnx_session(target, threads)
        result[role]["onnx"] = {"path": str(target) if role == "student" else None,
                                "file_bytes": target.stat().st_size,
                                "max_abs_diff": check_onnx(models[role]["plain"], target, session=sessions[role])}
    return sessions


def _ratios(t: dict, s: dict, batch_sizes: tuple[int, ...]) -> dict[str, float | None]:
    """Teacher / student of every size, memory and latency number."""
    ratios = {"file": _ratio(t["file_bytes"], s["file_bytes"]), "params": _ratio(t["params"], s["params"]),
              "rss_plain": _ratio(t["rss"]["plain"]["rss_bytes"], s["rss"]["plain"]["rss_bytes"]),
              "rss_fast": _ratio(t["rss"]["fast"]["rss_bytes"], s["rss"]["fast"]["rss_bytes"])}
    for variant in s["latency_ms"]:
        for batch in s["latency_ms"][variant]:
            ratios[f"latency_{variant}_b{batch}"] = _ratio(t["latency_ms"][variant][batch]["median_ms"],
                                                           s["latency_ms"][variant][batch]["median_ms"])
    for batch in map(str, batch_sizes):
        ratios[f"latency_teacher_plain_vs_student_fast_b{batch}"] = _ratio(
            t["latency_ms"]["plain"][batch]["median_ms"], s["latency_ms"]["fast"][batch]["median_ms"])
    return ratios


def format_comparison(result: dict) -> str:
    """A short human-readable table of a ``compare`` result."""
    mib = 1024 ** 2
    t, s, r = result["teacher"], result["student"], result["teacher_over_student"]
    lines = [f"{'':28}{'teacher':>14}{'student':>14}{'teacher/student':>17}",
             f"{'parameters':28}{t['params']:>14,}{s['params']:>14,}{r['params']:>16.2f}x",
             f"{'weights file (MiB)':28}{t['file_bytes'] / mib:>14.2f}{s['file_bytes'] / mib:>14.2f}"
             f"{r['file']:>16.2f}x"]
    for variant in ("plain", "fast"):
        a, b = t["rss"][variant]["rss_bytes"], s["rss"][variant]["rss_bytes"]
        lines.append(f"{'RSS after load, ' + variant + ' (MiB)':28}{a / mib:>14.1f}{b / mib:>14.1f}"
                     f"{_ratio(a, b) or float('nan'):>16.2f}x")
    for variant in s["latency_ms"]:
        for batch in s["latency_ms"][variant]:
            a = t["latency_ms"][variant][batch]["median_ms"]
            b = s["latency_ms"][variant][batch]["median_ms"]
            lines.append(f"{f'latency {variant} b{batch} (ms)':28}{a:>14.2f}{b:>14.2f}{a / b:>16.2f}x")
    counts = s["fast_path"]["counts"]
    lines.append(f"student fast path: {counts['factored']} factored, {counts['dense']} merged dense, "
                 f"{counts['sparse']} sparse layers; attention {s['fast_path']['attention']}; "
                 f"max |logit diff| {s['fast_path'].get('max_abs_diff', float('nan')):.2g}")
    if "onnx" in s:
        lines.append(f"student ONNX: {s['onnx']['path']} ({s['onnx']['file_bytes'] / mib:.2f} MiB), "
                     f"max |logit diff| vs torch {s['onnx']['max_abs_diff']:.2g}")
    lines.append(f"seq {result['seq_len']}, {result['threads']} threads, load average before "
                 f"{result['loadavg_before'][0]:.2f}, after {result['loadavg_after'][0]:.2f}")
    return "\n".join(lines)
