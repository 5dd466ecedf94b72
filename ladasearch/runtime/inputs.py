"""Random token batches for timing, checking and tracing a sequence classifier.

Every batch has ``input_ids`` and ``attention_mask``, and ``token_type_ids`` where the model's family has segment
embeddings (``input_names``; not DistilBERT, DeBERTa-v3 or ModernBERT), all int64.  A padded batch
has its first row half-padded and, when the model has segment embeddings, the second half of its
last row in segment 1, so that a check or a traced graph covers the padding and segment paths; an
unpadded batch is what latency is timed on (every token counts).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import LadaError
from ..nn.units import max_positions

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def input_names(model: nn.Module) -> tuple[str, ...]:
    """The inputs ``model`` reads: ``token_type_ids`` only where its family has segment embeddings (RoBERTa's one
    segment row counts: its graph must be fed it)."""
    return INPUT_NAMES if (getattr(model.config, "type_vocab_size", 0) or 0) >= 1 else INPUT_NAMES[:2]


def max_length(model: nn.Module, seq_len: int) -> int:
    """``seq_len`` capped at the model's position embeddings (for batches that are only an example shape)."""
    return min(seq_len, max_positions(model.config) or seq_len)


def random_inputs(model: nn.Module, batch: int, seq_len: int, *, seed: int = 0, padded: bool = False,
                  device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A seeded random ``batch`` x ``seq_len`` batch of token ids for ``model`` (see the module docstring)."""
    config = model.config
    limit = max_positions(config) or seq_len
    if seq_len > limit:
        raise LadaError(f"sequence length {seq_len} is above the model's maximum of {limit}")
    if batch < 1 or seq_len < 1:
        raise LadaError(f"batch and sequence length must be >= 1, got {batch} x {seq_len}")
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.vocab_size, (batch, seq_len), generator=gen)
    mask = torch.ones_like(ids)
    types = torch.zeros_like(ids)
    if padded:
        mask[0, max(1, seq_len // 2):] = 0
        if getattr(config, "type_vocab_size", 1) > 1 and batch > 1:
            types[-1, seq_len // 2:] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {name: batch[name].to(device) for name in input_names(model)}
