"""Deployment memory: the peak resident memory of a fresh process that loads an exported folder and
classifies one batch, as a service would (plain transformers or onnxruntime; ladasearch is not imported).

Measured in a new Python process: ``baseline`` is its resident memory once the runtime is imported (torch
and transformers, or onnxruntime and the tokenizer library), ``peak`` the high-water mark (VmHWM) after
loading the folder, tokenizing ``batch`` texts padded to ``seq_len`` tokens and computing their logits.
``peak`` is what the machine must have; ``peak - baseline`` is what the model adds to the runtime.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import LadaError

_SCRIPT = r"""
import json, sys
spec = json.loads(sys.argv[1])

def vm(key):
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith(key + ":")).split()[1]) * 1024

from transformers import AutoTokenizer
if spec["runtime"] == "torch":
    import torch
    from transformers import AutoModelForSequenceClassification
    torch.set_num_threads(spec["threads"])
else:
    import numpy as np
    import onnxruntime as ort
baseline = vm("VmRSS")
tokenizer = AutoTokenizer.from_pretrained(spec["folder"], trust_remote_code=spec["runtime"] == "torch")
texts = ["a short sentence to classify"] * spec["batch"]
enc = tokenizer(texts, padding="max_length", truncation=True, max_length=spec["seq_len"], return_tensors="np")
if spec["runtime"] == "torch":
    model = AutoModelForSequenceClassification.from_pretrained(spec["folder"], trust_remote_code=True).eval()
    with torch.no_grad():
        logits = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()
else:
    options = ort.SessionOptions()
    options.intra_op_num_threads = spec["threads"]
    options.log_severity_level = 3
    session = ort.InferenceSession(spec["model"], options, providers=["CPUExecutionProvider"])
    feed = {k: v.astype(np.int64) for k, v in enc.items()}
    feed.setdefault("token_type_ids", np.zeros_like(feed["input_ids"]))
    logits = session.run(["logits"], {i.name: feed[i.name] for i in session.get_inputs()})[0]
print("RSS-RESULT " + json.dumps({"baseline": baseline, "peak": vm("VmHWM"), "rows": int(logits.shape[0])}))
"""


@dataclass(frozen=True)
class DeploymentMemory:
    """Resident memory of a fresh serving process (bytes), see the module docstring."""

    runtime: str
    peak_bytes: int
    baseline_bytes: int
    batch: int
    seq_len: int

    @property
    def model_bytes(self) -> int:
        return self.peak_bytes - self.baseline_bytes

    def to_json(self) -> dict:
        return {"runtime": self.runtime, "peak_rss_bytes": self.peak_bytes, "baseline_rss_bytes": self.baseline_bytes,
                "model_rss_bytes": self.model_bytes, "batch": self.batch, "seq_len": self.seq_len}


def deployment_memory(folder: str | Path, runtime: str, *, model_file: str | None = None, batch: int = 1,
                      seq_len: int = 128, threads: int = 1, timeout: float = 600) -> DeploymentMemory:
    """Peak RSS of a fresh process serving ``folder`` with ``runtime`` ('torch' or 'onnxruntime')."""
    if runtime not in ("torch", "onnxruntime"):
        raise LadaError(f"runtime {runtime!r} is not one of torch, onnxruntime")
    folder = Path(folder).resolve()
    if runtime == "onnxruntime" and model_file is None:
        raise LadaError("an onnxruntime measurement needs the model file in the folder")
    spec = {"folder": str(folder), "runtime": runtime, "model": str(folder / model_file) if model_file else None,
            "batch": batch, "seq_len": seq_len, "threads": threads}
    result = process_result(fresh_process(_SCRIPT, spec), f"the serving process for {folder}", timeout)
    return DeploymentMemory(runtime, result["peak"], result["baseline"], batch, seq_len)


# The two measurements of this package (a served export here, a ladasearch folder in ``footprint``) run their
# script in a fresh interpreter, so that nothing loaded before counts; its last word is one RSS-RESULT line.
RESULT = "RSS-RESULT "


def fresh_process(script: str, spec: dict) -> subprocess.Popen:
    """``script`` started in a fresh Python process with ``spec`` (JSON) as its argument."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    return subprocess.Popen([sys.executable, "-c", script, json.dumps(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env)


def process_result(process: subprocess.Popen, what: str, timeout: float) -> dict:
    """The JSON of ``process``'s RSS-RESULT line; LadaError naming ``what`` when it fails or runs too long."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise LadaError(f"measuring the memory of {what} took longer than {timeout:g} s") from None
    line = next((x for x in stdout.splitlines() if x.startswith(RESULT)), None)
    if process.returncode != 0 or line is None:
        tail = (stderr or stdout).strip().splitlines()[-1:] or ["no output"]
        raise LadaError(f"measuring the memory of {what} failed: {tail[0]}")
    return json.loads(line.removeprefix(RESULT))
