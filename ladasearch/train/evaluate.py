"""Dev-set evaluation of a sequence-classification model."""

from __future__ import annotations

import torch
from torch import nn

from ..data import TaskSpec, compute_metrics
from .features import Features, eval_batches


@torch.no_grad()
def predict(model: nn.Module, features: Features, batch_size: int = 64, device="cpu") -> torch.Tensor:
    was_training = model.training
    model.eval()
    logits = []
    for batch in eval_batches(features, batch_size, device):
        batch.pop("labels")
        logits.append(model(**batch).logits.float().cpu())
    model.train(was_training)
    return torch.cat(logits)


def evaluate(model: nn.Module, features: Features, task: TaskSpec, batch_size: int = 64,
             device="cpu") -> dict[str, float]:
    """The task's metrics on ``features`` (accuracy, f1, mcc, pearson/spearman as the task defines)."""
    logits = predict(model, features, batch_size, device)
    return compute_metrics(task, logits.numpy(), features.labels.numpy())
