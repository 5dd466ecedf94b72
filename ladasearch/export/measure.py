"""Is the compressed model really smaller and faster?  File size, resident memory and CPU latency.

For a model folder (a Hugging Face folder written by ``save_pretrained``, e.g. the cached teacher, or
a ladasearch folder written by ``save_compressed``):

    file        bytes of the weights file(s) on disk (model.safetensors, shards, or pytorch_model.bin)
    rss         resident-memory increase caused by loading the model, measured in a fresh Python
                subprocess (imports and the model's modeling code loaded first, so only the model counts):
                every weight is read once after loading (a memory-mapped file only counts once its pages
                are touched, as the first inference does); ``rss_bytes`` after gc + malloc_trim (memory
                the process keeps), ``rss_untrimmed_bytes`` without the trim, ``peak_rss_bytes`` the
                high-water mark while loading; for the plain model and for the fast path built from it
    latency     CPU milliseconds per forward pass at batch 1 and 32, sequence length 128, under
                torch.inference_mode with a fixed thread count: median and minimum of ``runs`` runs after
                ``warmup`` runs; all variants of both models are timed interleaved, run by run, so that
                load from other processes hits them alike
    variants    plain = the model as loaded, pruning masks folded (load_compressed(keep_masks=False));
                fast  = optimize_for_inference(plain) (per-layer dense/factored/sparse choice + SDPA);
                onnx  = onnxruntime on the exported graph (with ``onnx=True``)

``compare`` measures teacher and student in one run and writes the result into the student's
``summary.json`` and the ``summary`` section of its ``ladasearch.json`` under the key ``inference``.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..errors import LadaError

WEIGHT_PATTERNS = ("model.safetensors", "model-*.safetensors", "pytorch_model.bin", "pytorch_model-*.bin")


def is_ladasearch_folder(folder: str | Path) -> bool:
    return (Path(folder) / "ladasearch.json").is_file()


def _check_folder(folder: str | Path) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise LadaError(f"{str(folder)!r} is not a folder")
    if not (folder / "config.json").is_file():
        raise LadaError(f"{str(folder)!r} is not a model folder (no config.json in it)")
    return folder


def weights_files(folder: str | Path) -> list[Path]:
    folder = _check_folder(folder)
    for pattern in WEIGHT_PATTERNS:
        files = sorted(folder.glob(pattern))
        if files:
            return files
    raise LadaError(f"{str(folder)!r} has no weights file ({', '.join(WEIGHT_PATTERNS)})")


def file_bytes(folder: str | Path) -> int:
    """Bytes of the model's weights file(s) on disk."""
    return sum(f.stat().st_size for f in weights_files(folder))


def load_model(folder: str | Path, keep_masks: bool = False) -> nn.Module:
    """A ladasearch folder via ``load_compressed``, any other model folder via ``from_pretrained`` (eager attention)."""
    folder = _check_folder(folder)
    if is_ladasearch_folder(folder):
        from ..serialize import load_compressed

        return load_compressed(folder, keep_masks=keep_masks)
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="eager")
    except (OSError, ValueError, KeyError) as exc:
        raise LadaError(f"could not load {str(folder)!r}: {str(exc).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.eval()


def tensor_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers (CSR tensors: values + indices)."""
    total, seen = 0, set()
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        if tensor.layout == torch.sparse_csr:
            total += sum(t.numel() * t.element_size()
                         for t in (tensor.values(), tensor.crow_indices(), tensor.col_indices()))
        else:
            total += tensor.numel() * tensor.element_size()
    return total


def example_batch(model: nn.Module, batch: int, seq_len: int) -> dict[str, torch.Tensor]:
    max_len = getattr(model.config, "max_position_embeddings", seq_len)
    if seq_len > max_len:
        raise LadaError(f"sequence length {seq_len} is above the model's maximum of {max_len}")
    gen = torch.Generator().manual_seed(batch)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq_len), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def _forward(model: nn.Module, inputs: dict[str, torch.Tensor]) -> Callable[[], object]:
    def run():
        with torch.inference_mode():
            return model(**inputs).logits
    return run


def _onnx_forward(session, inputs: dict[str, torch.Tensor]) -> Callable[[], object]:
    feed = {k: v.numpy() for k, v in inputs.items()}
    return lambda: session.run(["logits"], feed)


def time_interleaved(runners: dict[str, Callable[[], object]], runs: int, warmup: int) -> dict[str, dict]:
    """Milliseconds per call of every runner, the runners interleaved call by call."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(runs):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: {"median_ms": statistics.median(t), "min_ms": min(t), "runs": len(t)} for name, t in times.items()}


def latency(model: nn.Module, batch: int = 1, seq_len: int = 128, runs: int = 20, warmup: int = 3,
            threads: int | None = None) -> dict:
    """CPU latency of one forward pass: ``{"median_ms", "min_ms", "runs"}``."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model.eval()
        return time_interleaved({"m": _forward(model, example_batch(model, batch, seq_len))}, runs, warmup)["m"]
    finally:
        torch.set_num_threads(old)


_RSS_SCRIPT = r"""
import ctypes, gc, json, sys
spec = json.loads(sys.argv[1])
import psutil, torch
torch.set_num_threads(spec["threads"])
import transformers
from ladasearch.export.measure import load_model
from ladasearch.export.fast import optimize_for_inference
config = transformers.AutoConfig.from_pretrained(spec["path"])
for arch in config.architectures or []:
    getattr(transformers, arch, None)  # import the modeling code before the baseline
torch.ones(8, 8) @ torch.ones(8, 8)
try:
    libc = ctypes.CDLL("libc.so.6"); trim = lambda: libc.malloc_trim(0)
except OSError:
    trim = lambda: None
proc = psutil.Process()
def rss(do_trim):
    gc.collect()
    if do_trim: trim()
    return proc.memory_info().rss
def reset_peak():  # Linux >= 4.0: writing 5 to clear_refs resets VmHWM
    try:
        with open("/proc/self/clear_refs", "w") as f: f.write("5")
        return True
    except OSError:
        return False
def peak():
    with open("/proc/self/status") as f:
        line = next(l for l in f if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
def touch(model):  # weights may be memory-mapped from the file: fault every page in, as inference does
    with torch.inference_mode():
        for t in list(model.parameters()) + list(model.buffers()):
            (t.values() if t.layout == torch.sparse_csr else t).float().sum()
def measure(base, has_peak):
    return {"rss_untrimmed_bytes": rss(False) - base, "rss_bytes": rss(True) - base,
            "peak_rss_bytes": peak() - base if has_peak else None}
base = rss(True)
has_peak = reset_peak()
model = load_model(spec["path"])
touch(model)
out = {"plain": measure(base, has_peak)}
if spec["plan"] is not None:
    has_peak = reset_peak()
    optimize_for_inference(model, mode="plan", plan=spec["plan"], attention=spec["attention"], check=False,
                           inplace=True)
    touch(model)
    out["fast"] = measure(base, has_peak)
print("RSS-RESULT " + json.dumps(out))
"""


def _rss_process(folder: str | Path, plan: dict[str, str] | None, attention: str | None,
                 threads: int | None) -> subprocess.Popen:
    spec = {"path": str(Path(folder).resolve()), "plan": plan, "attention": attention,
            "threads": threads or torch.get_num_threads()}
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    return subprocess.Popen([sys.executable, "-c", _RSS_SCRIPT, json.dumps(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _rss_result(folder: str | Path, process: subprocess.Popen, timeout: float) -> dict:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise LadaError(f"memory measurement of {folder} took over {timeout:g}s") from None
    line = next((l for l in stdout.splitlines() if l.startswith("RSS-RESULT ")), None)
    if process.returncode != 0 or line is None:
        tail = (stderr or stdout).strip().splitlines()[-1:] or ["no output"]
        raise LadaError(f"memory measurement of {folder} failed: {tail[0]}")
    return json.loads(line.removeprefix("RSS-RESULT "))


def rss_after_load(folder: str | Path, plan: dict[str, str] | None = None, attention: str | None = "sdpa",
                   threads: int | None = None, timeout: float = 600) -> dict:
    """Resident-memory increase from loading ``folder`` (and, with ``plan``, building the fast path from it),
    measured in a fresh Python subprocess: ``{"plain": {...}, "fast": {...}}``."""
    return _rss_result(folder, _rss_process(folder, plan, attention, threads), timeout)


def rss_after_load_many(jobs: list[tuple[str | Path, dict | None, str | None]], threads: int | None = None,
                        timeout: float = 600) -> list[dict]:
    """``rss_after_load`` of several (folder, plan, attention) at once: one fresh subprocess each, run side by
    side (each process measures only its own memory, so running them together changes nothing but the wall
    time)."""
    processes = [(folder, _rss_process(folder, plan, attention, threads)) for folder, plan, attention in jobs]
    try:
        return [_rss_result(folder, process, timeout) for folder, process in processes]
    finally:
        for _, process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


def _params(folder: Path, model: nn.Module) -> int:
    """Stored non-zero parameters by the package's counting rule (masks kept when the folder has them)."""
    from ..compress.accounting import count_parameters

    if is_ladasearch_folder(folder):
        total = json.loads((folder / "ladasearch.json").read_text()).get("summary", {}).get(
            "student_params", {}).get("total")
        if total:
            return int(total)
        return count_parameters(load_model(folder, keep_masks=True)).total
    return count_parameters(model).total


def write_inference(student_dir: str | Path, inference: dict) -> list[Path]:
    """Put ``inference`` under the key ``inference`` of the student's summary.json (if there is one) and of
    the ``summary`` section of its ladasearch.json; returns the files written."""
    student_dir = Path(student_dir)
    written = []

    def replace(path: Path, data: dict, **dump):
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(data, default=float, **dump) + "\n")
        tmp.replace(path)
        written.append(path)

    summary_file = student_dir / "summary.json"
    if summary_file.is_file():
        replace(summary_file, {**json.loads(summary_file.read_text()), "inference": inference}, indent=2)
    meta_file = student_dir / "ladasearch.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        meta["summary"] = {**(meta.get("summary") or {}), "inference": inference}
        replace(meta_file, meta, indent=2, sort_keys=True)
    return written


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
    teacher_dir, student_dir = _check_folder(teacher_dir), _check_folder(student_dir)
    from .fast import fold_masks, optimize_for_inference

    threads = threads or torch.get_num_threads()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    runs = {b: (runs or {}).get(b, 30 if b == 1 else 7) for b in batch_sizes}
    warmup = {b: (warmup or {}).get(b, 5 if b == 1 else 2) for b in batch_sizes}
    result: dict = {
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seq_len": seq_len, "batch_sizes": list(batch_sizes), "threads": threads, "runs": runs, "warmup": warmup,
        "torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor() or
        platform.machine(), "cpu_count": os.cpu_count(), "loadavg_before": list(os.getloadavg()),
    }
    try:
        models: dict[str, dict[str, nn.Module]] = {}
        for role, folder in (("teacher", teacher_dir), ("student", student_dir)):
            log(f"{role}: loading {folder}")
            plain = load_model(folder, keep_masks=True)
            params = _params(folder, plain)
            fold_masks(plain)
            log(f"{role}: building the fast path ({fast_mode})")
            fast, report = optimize_for_inference(plain, mode=fast_mode)
            models[role] = {"plain": plain, "fast": fast}
            result[role] = {
                "path": str(folder), "kind": "ladasearch" if is_ladasearch_folder(folder) else "huggingface",
                "weights_files": [f.name for f in weights_files(folder)], "file_bytes": file_bytes(folder),
                "params": params, "tensor_bytes": {"plain": tensor_bytes(plain), "fast": tensor_bytes(fast)},
                "fast_path": {k: report[k] for k in ("mode", "requested_mode", "busy_load", "attention", "counts",
                                                     "plan", "max_abs_diff", "linear_macs_per_token", "note")
                              if k in report}
                | {"layers": {name: {k: v for k, v in info.items() if k in ("choice", "ms", "rank", "density",
                                                                             "shape", "reason")}
                              for name, info in report["layers"].items()}},
            }
        sessions = {}
        if onnx:
            from .onnx import check_onnx, export_onnx, onnx_session

            scratch = tempfile.TemporaryDirectory(prefix="ladasearch-onnx-")
            for role in ("teacher", "student"):
                target = (Path(onnx_dir or student_dir / "onnx") / "model.onnx" if role == "student"
                          else Path(scratch.name) / "teacher.onnx")
                log(f"{role}: exporting ONNX to {target}")
                export_onnx(models[role]["fast"], target, seq_len=seq_len)
                sessions[role] = onnx_session(target, threads)
                result[role]["onnx"] = {"path": str(target) if role == "student" else None,
                                        "file_bytes": target.stat().st_size,
                                        "max_abs_diff": check_onnx(models[role]["plain"], target,
                                                                   session=sessions[role])}
        for batch in batch_sizes:
            log(f"latency: batch {batch}, sequence {seq_len}, {runs[batch]} runs after {warmup[batch]}, "
                f"{threads} threads")
            runners = {}
            for role in ("teacher", "student"):
                inputs = example_batch(models[role]["plain"], batch, seq_len)
                runners[f"{role}/plain"] = _forward(models[role]["plain"], inputs)
                runners[f"{role}/fast"] = _forward(models[role]["fast"], inputs)
                if role in sessions:
                    runners[f"{role}/onnx"] = _onnx_forward(sessions[role], inputs)
            for name, timing in time_interleaved(runners, runs[batch], warmup[batch]).items():
                role, variant = name.split("/")
                result[role].setdefault("latency_ms", {}).setdefault(variant, {})[str(batch)] = timing
        if onnx:
            scratch.cleanup()
        del models
        gc.collect()
        log("resident memory after loading (a fresh subprocess per model)")
        jobs = [(folder, result[role]["fast_path"]["plan"], result[role]["fast_path"]["attention"])
                for role, folder in (("teacher", teacher_dir), ("student", student_dir))]
        result["teacher"]["rss"], result["student"]["rss"] = rss_after_load_many(jobs, threads=threads)
    finally:
        torch.set_num_threads(old_threads)
    result["loadavg_after"] = list(os.getloadavg())
    t, s = result["teacher"], result["student"]
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
    result["teacher_over_student"] = ratios
    if write:
        result_files = write_inference(student_dir, result)
        log("written to " + ", ".join(str(p) for p in result_files))
    return result


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
