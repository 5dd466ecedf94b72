"""The learning-rate schedule every training loop uses: linear warm-up, then linear decay.

One rule for the teacher's fine-tuning, each student phase of the LadaBERT loop and the final budget:
a short warm-up keeps the first steps on a freshly compressed (or freshly initialised head) model from
undoing what the previous phase learned, and the decay lets the last steps settle instead of ending at
full learning rate.
"""

from __future__ import annotations

import torch


def warmup_decay_factor(step: int, steps: int, warmup: float) -> float:
    """The multiplier of the base rate at optimizer step ``step`` (0-based) of ``steps``: up over the first
    ``warmup`` share, then down linearly; never exactly 0 while steps remain."""
    ramp = max(1, int(steps * warmup))
    return min((step + 1) / ramp, max(0.0, (steps - step) / max(1, steps - ramp)))


def warmup_decay(optimizer: torch.optim.Optimizer, steps: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_decay_factor(s, max(steps, 1), warmup))
