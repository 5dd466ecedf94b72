"""Wall-clock latency of forward passes: the one timer of the package.

Several callables are timed interleaved, call by call, so that load from other processes hits them
alike; on CUDA every call is bracketed by a synchronisation, so the time is the kernels' and not
only their launch.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .inputs import random_inputs


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call over ``runs`` timed calls."""

    median_ms: float
    min_ms: float
    runs: int
    q1_ms: float | None = None   # the interquartile range: how much the runs spread (None: fewer than 2 runs)
    q3_ms: float | None = None

    @classmethod
    def of(cls, times: list[float]) -> Timing:
        q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (None, None, None)
        return cls(statistics.median(times), min(times), len(times), q1, q3)

    def to_json(self) -> dict:
        return {"median_ms": self.median_ms, "min_ms": self.min_ms, "runs": self.runs, "q1_ms": self.q1_ms,
                "q3_ms": self.q3_ms}


def machine_facts() -> dict:
    """What a latency depends on beyond the model: the CPU's name, its logical CPUs and the load when measured."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()]}


def _synchronizer(device: str | torch.device | None) -> Callable[[], None]:
    if device is not None and torch.device(device).type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def forward_runner(model: nn.Module, inputs: dict[str, torch.Tensor]) -> Callable[[], object]:
    """One forward pass of ``model`` on ``inputs`` without autograd.

    no_grad rather than inference_mode: a model with pruning masks stores its masked weight as an
    attribute during the forward, and an inference tensor there would break later training or copying.
    """
    def run():
        with torch.no_grad():
            return model(**inputs).logits
    return run


def time_interleaved(runners: dict[str, Callable[[], object]], runs: int, warmup: int = 2,
                     device: str | torch.device | None = None) -> dict[str, Timing]:
    """The Timing of every runner; ``device`` 'cuda' synchronises around every call."""
    sync = _synchronizer(device)
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(runs):
        for name, run in runners.items():
            sync()
            start = time.perf_counter()
            run()
            sync()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: Timing.of(t) for name, t in times.items()}


def forward_latency(model: nn.Module, batch: int, seq_len: int, device: str | torch.device = "cpu",
                    runs: int = 10, warmup: int = 2) -> Timing:
    """Latency of one forward pass of ``model`` (already on ``device``) on a random unpadded batch."""
    model.eval()
    inputs = random_inputs(model, batch, seq_len, seed=batch, device=device)
    return time_interleaved({"model": forward_runner(model, inputs)}, runs, warmup, device)["model"]


def latency_ms(model: nn.Module, seq_len: int, device: str | torch.device, repeats: int = 10) -> float:
    """Median milliseconds of one batch-1 forward pass at ``seq_len`` tokens (on CUDA: until the kernels finish)."""
    return forward_latency(model, 1, seq_len, device, runs=repeats).median_ms
