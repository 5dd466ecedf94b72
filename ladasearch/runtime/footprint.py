"""What a model costs on disk and in memory: weights-file bytes, tensor bytes, resident memory after loading.

Resident memory is measured in a fresh Python subprocess per model (imports and the model's modeling
code loaded first, so only the model counts): every weight is read once after loading (a memory-mapped
file only counts once its pages are touched, as the first inference does); ``rss_bytes`` after gc +
malloc_trim (memory the process keeps), ``rss_untrimmed_bytes`` without the trim, ``peak_rss_bytes`` the
high-water mark while loading; for the plain model and for the fast path built from it.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import LadaError
from ..models import model_folder
from .memory import fresh_process, process_result

WEIGHT_PATTERNS = ("model.safetensors", "model-*.safetensors", "pytorch_model.bin", "pytorch_model-*.bin")


@dataclass(frozen=True)
class MemoryJob:
    """One model whose memory is measured: its folder, and the fast-path plan and attention to build (if any)."""

    folder: Path
    plan: dict[str, str] | None = None
    attention: str | None = None


def weights_files(folder: str | Path) -> list[Path]:
    folder = model_folder(folder)
    for pattern in WEIGHT_PATTERNS:
        files = sorted(folder.glob(pattern))
        if files:
            return files
    raise LadaError(f"{str(folder)!r} has no weights file ({', '.join(WEIGHT_PATTERNS)})")


def file_bytes(folder: str | Path) -> int:
    """Bytes of the model's weights file(s) on disk."""
    return sum(f.stat().st_size for f in weights_files(folder))


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


_RSS_SCRIPT = r"""
import ctypes, gc, json, sys
spec = json.loads(sys.argv[1])
import psutil, torch
torch.set_num_threads(spec["threads"])
import transformers
from ladasearch.models import load_classifier
from ladasearch.runtime.fast import optimize_for_inference
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
model = load_classifier(spec["path"], keep_masks=False)
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



def _rss_process(job: MemoryJob, threads: int | None) -> subprocess.Popen:
    return fresh_process(_RSS_SCRIPT, {"path": str(Path(job.folder).resolve()), "plan": job.plan,
                                       "attention": job.attention, "threads": threads or torch.get_num_threads()})


def resident_memory(jobs: list[MemoryJob], threads: int | None = None, timeout: float = 600) -> list[dict]:
    """Resident-memory increase from loading each job's folder (and, with a plan, building its fast path),
    ``{"plain": {...}, "fast": {...}}`` per job: one fresh subprocess each, run side by side (each process
    measures only its own memory, so running them together changes nothing but the wall time)."""
    processes = [(job.folder, _rss_process(job, threads)) for job in jobs]
    try:
        return [process_result(process, str(folder), timeout) for folder, process in processes]
    finally:
        for _, process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
