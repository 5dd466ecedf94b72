"""Numeric precision of training forward passes.

``fp32``  everything in float32 (the default; what every measured number here used).
``bf16``  forward passes under ``torch.autocast`` with bfloat16 (matrix products in bf16 on CUDA tensor
          cores or CPUs with AMX/AVX512-BF16); weights, gradients, optimizer state and the loss terms stay
          float32, so no loss scaling is needed.  Evaluation always runs in float32.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16")


def autocast(precision: str, device: torch.device | str):
    """A context manager for the forward passes of a training step at ``precision``."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
