"""The deployment targets: one class per runtime, used by `export-model --format` and by a search's `--runtime`.

    format     --runtime  writes
    hf         torch      model.safetensors + config.json (auto_map) + modeling_ladasearch.py + tokenizer: transformers
    onnx       onnx       model.onnx (fp32) + config.json (labels) + tokenizer: onnxruntime
    onnx-int8  onnx-int8  model.onnx dynamically quantized to int8, kept only when the dev score drop passes the gate

``write`` fills an export folder (with its checks and the int8 accuracy gate) and ``latency`` times it as a user
loads it; ``deploy`` writes the weights file alone and returns a runner, which is what a search trial measures
(latency and size objectives: the same file, without the tokenizer, the card or the gate).
"""

from __future__ import annotations

import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import LadaError
from .hf import load_hf_folder, save_weights, write_hf_folder
from .latency import Latency, measure_latency, onnx_runner, torch_runner
from .onnx import export_onnx
from .onnx_export import ATOL, ONNX_FILE, OnnxCheck, check_onnx_folder, onnx_session, write_onnx_folder
from .packing import Packed, pack_onnx
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
    packed: Packed | None = None               # the pruned matrices the file stores packed


@dataclass(frozen=True)
class Deployed:
    """A model written for one runtime: its weights file and how to run it on a batch."""

    file: Path
    runner: Callable[[dict[str, torch.Tensor]], Callable[[], object]]   # inputs -> one forward pass
    device: str                                                          # where the inputs must be


class ExportFormat(ABC):
    """One deployment target (``--format``, and ``--runtime`` by its ``runtime_name``): ``write`` fills a folder,
    ``latency`` times what it wrote in its runtime, ``deploy`` writes the weights file alone and runs it."""

    name: str = ""
    runtime: str = ""         # what serves it: torch (through transformers) or onnxruntime
    runtime_name: str = ""    # its name as a search's --runtime
    needs_dev: bool = False  # the dev split must be loaded (the int8 accuracy gate)

    @abstractmethod
    def write(self, exported: nn.Module, folder: Path, tokenizer, *, dev: DevSet | None, max_drop: float,
              opset: int, threads: int) -> Written:
        """Write the folder's model files, config and tokenizer; LadaError when a check or the gate fails."""

    @abstractmethod
    def latency(self, exported: nn.Module, folder: Path, written: Written, timed: Timed) -> tuple[Latency, ...]:
        """Time what ``write`` put in ``folder``, loaded as a user of the format would."""

    @abstractmethod
    def deploy(self, exported: nn.Module, folder: Path, *, threads: int, device: str) -> Deployed:
        """Write the weights file of ``exported`` (a ``deploy_model`` result, on the CPU) into ``folder``, checked
        as ``write`` checks it, and return it with a runner on ``device``."""


class HFFormat(ExportFormat):
    name, runtime, runtime_name = "hf", "torch", "torch"

    def write(self, exported, folder, tokenizer, *, dev, max_drop, opset, threads) -> Written:
        packed = write_hf_folder(exported, folder, tokenizer)
        return Written(self.runtime, "model.safetensors", packed=packed)

    def latency(self, exported, folder, written, timed) -> tuple[Latency, ...]:
        model = load_hf_folder(folder)  # timed as a user loads it, not the in-memory copy
        return measure_latency(model, torch_runner(model), self.runtime, batches=timed.batches,
                               seq_len=timed.seq_len, runs=timed.runs, threads=timed.threads)

    def deploy(self, exported, folder, *, threads, device) -> Deployed:
        save_weights(exported, folder)
        model = exported.to(device)
        return Deployed(folder / "model.safetensors", torch_runner(model), device)


class OnnxFormat(ExportFormat):
    name, runtime, runtime_name = "onnx", "onnxruntime", "onnx"

    def write(self, exported, folder, tokenizer, *, dev, max_drop, opset, threads) -> Written:
        check, packed = write_onnx_folder(exported, folder, tokenizer, opset)
        return Written(self.runtime, ONNX_FILE, opset, check, packed=packed)

    def latency(self, exported, folder, written, timed) -> tuple[Latency, ...]:
        session = onnx_session(folder / written.model_file, timed.threads)
        return measure_latency(exported, onnx_runner(session), self.runtime, batches=timed.batches,
                               seq_len=timed.seq_len, runs=timed.runs, threads=timed.threads)

    @staticmethod
    def graph(exported: nn.Module, folder: Path, pack: bool = True) -> Path:
        """The fp32 graph alone (packed unless ``pack`` is False), checked against torch as ``write`` checks it."""
        path = export_onnx(exported, folder / ONNX_FILE)
        if pack:
            pack_onnx(path)
        gap = check_onnx_folder(exported, path).worst
        if not gap < ATOL:
            raise LadaError(f"the ONNX graph's logits differ from torch's by {gap:.3g} (allowed < {ATOL:g})")
        return path

    def deploy(self, exported, folder, *, threads, device) -> Deployed:
        return Deployed(path := self.graph(exported, folder), onnx_runner(onnx_session(path, threads)), "cpu")


class OnnxInt8Format(OnnxFormat):
    name, runtime_name, needs_dev = "onnx-int8", "onnx-int8", True

    def write(self, exported, folder, tokenizer, *, dev, max_drop, opset, threads) -> Written:
        if dev is None:
            raise LadaError("--format onnx-int8 needs the task's dev split for its accuracy gate")
        with tempfile.TemporaryDirectory(prefix="ladasearch-fp32-") as scratch:
            fp32 = Path(scratch) / ONNX_FILE
            # the quantizer reads weights from initializers: it gets the graph unpacked, and int8 is packed after
            check, _ = write_onnx_folder(exported, folder, tokenizer, opset, pack=False)
            (folder / ONNX_FILE).replace(fp32)
            int8 = quantize_int8(fp32, folder / ONNX_FILE)
            packed = pack_onnx(int8)
            gate = enforce(accuracy_gate(fp32, int8, dev, max_drop, threads))
        return Written(self.runtime, ONNX_FILE, opset, check, check_onnx_folder(exported, int8), gate, packed)

    def deploy(self, exported, folder, *, threads, device) -> Deployed:
        # without the accuracy gate: a search's score objective stays the fp32 student's
        fp32 = self.graph(exported, folder, pack=False)
        int8 = quantize_int8(fp32, folder / "model.int8.onnx")
        pack_onnx(int8)
        fp32.unlink()
        return Deployed(int8, onnx_runner(onnx_session(int8, threads)), "cpu")


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (HFFormat(), OnnxFormat(), OnnxInt8Format())}
RUNTIMES: dict[str, ExportFormat] = {f.runtime_name: f for f in FORMATS.values()}   # a search's --runtime


def get_format(name: str) -> ExportFormat:
    if name not in FORMATS:
        raise LadaError(f"unknown export format {name!r}; allowed: {', '.join(FORMATS)}")
    return FORMATS[name]


def get_runtime(name: str) -> ExportFormat:
    """The target a search's ``--runtime`` measures in (torch is the ``hf`` format's)."""
    if name not in RUNTIMES:
        raise LadaError(f"unknown runtime {name!r}; allowed: {', '.join(RUNTIMES)}")
    return RUNTIMES[name]
