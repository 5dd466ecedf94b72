"""The export formats of `ladasearch export-model --format`: each writes a self-contained folder and times it.

    hf         model.safetensors + config.json (auto_map) + modeling_ladasearch.py + tokenizer: transformers
    onnx       model.onnx (fp32) + config.json (labels) + tokenizer: onnxruntime
    onnx-int8  model.onnx dynamically quantized to int8, kept only when the dev score drop passes the gate
"""

from __future__ import annotations

import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..errors import LadaError
from .hf import load_hf_folder, write_hf_folder
from .latency import Latency, measure_latency, onnx_runner, torch_runner
from .onnx_export import ONNX_FILE, OnnxCheck, check_onnx_folder, onnx_session, write_onnx_folder
from .quantize import GateResult, accuracy_gate, enforce, quantize_int8
from .scoring import DevSet


@dataclass(frozen=True)
class Timed:
    """How latency is measured: batch sizes, sequence length, timed runs and threads."""

    batches: tuple[int, ...] = (1, 32)
    seq_len: int = 128
    runs: int = 10
    threads: int = 1


@dataclass(frozen=True)
class Written:
    """What a format wrote into the folder and the facts its card reports."""

    runtime: str                       # what serves it: torch (through transformers) or onnxruntime
    model_file: str
    opset: int | None = None
    onnx_check: OnnxCheck | None = None        # the fp32 graph against torch
    quantized_check: OnnxCheck | None = None   # the int8 graph against torch (its rounding; the gate bounds it)
    gate: GateResult | None = None


class ExportFormat(ABC):
    """One ``--format``: ``write`` fills a folder, ``latency`` times what it wrote in its runtime."""

    name: str = ""
    runtime: str = ""
    needs_dev: bool = False  # the dev split must be loaded (the int8 accuracy gate)

    @abstractmethod
    def write(self, exported: nn.Module, folder: Path, tokenizer, *, dev: DevSet | None, max_drop: float,
              opset: int, threads: int) -> Written:
        """Write the folder's model files, config and tokenizer; LadaError when a check or the gate fails."""

    @abstractmethod
    def latency(self, exported: nn.Module, folder: Path, written: Written, timed: Timed) -> tuple[Latency, ...]:
        """Time what ``write`` put in ``folder``, loaded as a user of the format would."""


class HFFormat(ExportFormat):
    name, runtime = "hf", "torch"

    def write(self, exported, folder, tokenizer, *, dev, max_drop, opset, threads) -> Written:
        write_hf_folder(exported, folder, tokenizer)
        return Written(self.runtime, "model.safetensors")

    def latency(self, exported, folder, written, timed) -> tuple[Latency, ...]:
        model = load_hf_folder(folder)  # timed as a user loads it, not the in-memory copy
        return measure_latency(model, torch_runner(model), self.runtime, batches=timed.batches,
                               seq_len=timed.seq_len, runs=timed.runs, threads=timed.threads)


class OnnxFormat(ExportFormat):
    name, runtime = "onnx", "onnxruntime"

    def write(self, exported, folder, tokenizer, *, dev, max_drop, opset, threads) -> Written:
        check = write_onnx_folder(exported, folder, tokenizer, opset)
        return Written(self.runtime, ONNX_FILE, opset, check)

    def latency(self, exported, folder, written, timed) -> tuple[Latency, ...]:
        session = onnx_session(folder / written.model_file, timed.threads)
        return measure_latency(exported, onnx_runner(session), self.runtime, batches=timed.batches,
                               seq_len=timed.seq_len, runs=timed.runs, threads=timed.threads)


class OnnxInt8Format(OnnxFormat):
    name, needs_dev = "onnx-int8", True

    def write(self, exported, folder, tokenizer, *, dev, max_drop, opset, threads) -> Written:
        if dev is None:
            raise LadaError("--format onnx-int8 needs the task's dev split for its accuracy gate")
        with tempfile.TemporaryDirectory(prefix="ladasearch-fp32-") as scratch:
            fp32 = Path(scratch) / ONNX_FILE
            check = write_onnx_folder(exported, folder, tokenizer, opset)
            (folder / ONNX_FILE).replace(fp32)
            int8 = quantize_int8(fp32, folder / ONNX_FILE)
            gate = enforce(accuracy_gate(fp32, int8, dev, max_drop, threads))
        return Written(self.runtime, ONNX_FILE, opset, check, check_onnx_folder(exported, int8), gate)


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (HFFormat(), OnnxFormat(), OnnxInt8Format())}


def get_format(name: str) -> ExportFormat:
    if name not in FORMATS:
        raise LadaError(f"unknown export format {name!r}; allowed: {', '.join(FORMATS)}")
    return FORMATS[name]
