"""Tokenized task data as tensors, and the batches the training loops draw from it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Features:
    input_ids: torch.Tensor       # (N, max_length), padded
    attention_mask: torch.Tensor  # (N, max_length)
    token_type_ids: torch.Tensor  # (N, max_length)
    labels: torch.Tensor          # (N,) long for classification, float for regression

    def __len__(self) -> int:
        return self.labels.shape[0]

    def batch(self, index: torch.Tensor, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Rows ``index``, trimmed to the longest sequence among them, on ``device``."""
        mask = self.attention_mask[index]
        width = int(mask.sum(1).max().item())
        return {
            "input_ids": self.input_ids[index, :width].to(device),
            "attention_mask": mask[:, :width].to(device),
            "token_type_ids": self.token_type_ids[index, :width].to(device),
            "labels": self.labels[index].to(device),
        }


def encode(split, tokenizer, max_length: int, regression: bool) -> Features:
    """Tokenize a ``ladasearch.data.Split`` (pairs when ``text_b`` is set)."""
    pairs = (list(split.text_a),) if split.text_b is None else (list(split.text_a), list(split.text_b))
    enc = tokenizer(*pairs, truncation=True, max_length=max_length, padding="max_length", return_tensors="pt",
                    return_token_type_ids=True)
    dtype = torch.float32 if regression else torch.long
    return Features(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"],
                    torch.tensor(list(split.labels), dtype=dtype))


def train_batches(features: Features, batch_size: int, seed: int, device="cpu") -> Iterator[dict[str, torch.Tensor]]:
    """Endless shuffled batches: a new permutation per epoch, from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    size = min(batch_size, len(features))
    while True:
        order = torch.randperm(len(features), generator=generator)
        for start in range(0, len(order) - size + 1, size):
            yield features.batch(order[start:start + size], device)


def eval_batches(features: Features, batch_size: int, device="cpu") -> Iterator[dict[str, torch.Tensor]]:
    for start in range(0, len(features), batch_size):
        yield features.batch(torch.arange(start, min(start + batch_size, len(features))), device)
