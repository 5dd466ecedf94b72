"""Wall-clock latency of forward passes: the one timer of the package.

Several callables are timed interleaved, call by call, so that load from other processes hits them
alike; on CUDA every call is bracketed by a synchronisation, so the time is the kernels' and not
only their launch.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .inputs import random_inputs


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call over ``runs`` timed calls."""

    median_ms: float
    min_ms: float
    runs: int

    def to_json(self) -> dict:
        return {"median_ms": self.median_ms, "min_ms": self.min_ms, "runs": self.runs}


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
    return {name: Timing(statistics.median(t), min(t), len(t)) for name, t in times.items()}


def forward_latency(model: nn.Module, batch: int, seq_len: int, device: str | torch.device = "cpu",
                    runs: int = 10, warmup: int = 2) -> Timing:
    """Latency of one forward pass of ``model`` (already on ``device``) on a random unpadded batch."""
    model.eval()
    inputs = random_inputs(model, batch, seq_len, seed=batch, device=device)
    return time_interleaved({"model": forward_runner(model, inputs)}, runs, warmup, device)["model"]


def latency_ms(model: nn.Module, seq_len: int, device: str | torch.device, repeats: int = 10) -> float:
    """Median milliseconds of one batch-1 forward pass at ``seq_len`` tokens (on CUDA: until the kernels finish)."""
    return forward_latency(model, 1, seq_len, device, runs=repeats).median_ms
