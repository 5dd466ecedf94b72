"""Latency of an exported model in the runtime its folder is for (torch through transformers, or onnxruntime)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .inputs import max_length, random_inputs
from .onnx_export import run_onnx
from .timing import Timing, forward_runner, time_interleaved


@dataclass(frozen=True)
class Latency:
    """Milliseconds per forward pass of ``batch`` unpadded rows of ``seq_len`` tokens on ``threads`` threads."""

    runtime: str
    batch: int
    seq_len: int
    threads: int
    timing: Timing

    def to_json(self) -> dict:
        return {"runtime": self.runtime, "batch": self.batch, "seq_len": self.seq_len, "threads": self.threads,
                **self.timing.to_json()}


def torch_runner(model: nn.Module) -> Callable[[dict[str, torch.Tensor]], Callable[[], object]]:
    return lambda inputs: forward_runner(model, inputs)


def onnx_runner(session) -> Callable[[dict[str, torch.Tensor]], Callable[[], object]]:
    return lambda inputs: (lambda: run_onnx(session, inputs))


def measure_latency(shape_of: nn.Module, runner: Callable[[dict[str, torch.Tensor]], Callable[[], object]],
                    runtime: str, *, batches: tuple[int, ...] = (1, 32), seq_len: int = 128, runs: int = 10,
                    warmup: int = 2, threads: int = 1) -> tuple[Latency, ...]:
    """Latency per batch size; ``shape_of`` is the model whose vocabulary and maximum length the inputs fit.

    torch runs on ``threads`` threads for the measurement (an onnxruntime session gets its own count
    when it is made); the previous setting is restored.
    """
    seq_len = max_length(shape_of, seq_len)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = []
        for batch in batches:
            inputs = random_inputs(shape_of, batch, seq_len, seed=batch)
            timing = time_interleaved({"model": runner(inputs)}, runs, warmup)["model"]
            out.append(Latency(runtime, batch, seq_len, threads, timing))
    finally:
        torch.set_num_threads(previous)
    return tuple(out)
