"""Knowledge-distillation losses (LadaBERT / TinyBERT style, one-to-one layer map).

All four terms are zero when the student equals the teacher:
    embedding  MSE between the embedding-layer outputs (hidden_states[0])
    attention  mean over layers of the MSE between attention probabilities
    hidden     mean over layers of the MSE between layer outputs (hidden_states[1:])
    logits     KL(softmax(t/T) || softmax(s/T)) * T^2 -- the soft cross-entropy minus the
               teacher's entropy, so it has the same gradient and is 0 at a perfect match;
               MSE on the logits for regression tasks.
Padding positions are left out of every mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import SequenceClassifierOutput

TERMS = ("embedding", "attention", "hidden", "logits")


def _masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE over positions where ``mask`` (batch, seq) is 1; trailing dims are averaged (in float32)."""
    student, teacher = student.float(), teacher.float()
    per_position = (student - teacher).pow(2).flatten(2).mean(-1) if student.dim() > 2 else (student - teacher).pow(2)
    return (per_position * mask).sum() / mask.sum().clamp(min=1)


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1).mean()
    return kl * temperature**2


def distill_losses(student: SequenceClassifierOutput, teacher: SequenceClassifierOutput,
                   attention_mask: torch.Tensor, temperature: float = 1.0,
                   regression: bool = False, teacher_heads: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The four loss terms.  Both outputs need ``hidden_states`` and ``attentions`` of the same depth.

    ``teacher_heads``: per layer, the teacher head each student head came from (heads removed by structured
    compression); the attention term then compares each kept head with its own teacher head.
    """
    if len(student.hidden_states) != len(teacher.hidden_states):
        raise ValueError(f"student has {len(student.hidden_states) - 1} layers, teacher "
                         f"{len(teacher.hidden_states) - 1}: the one-to-one layer map needs equal depth")
    mask = attention_mask.float()
    hidden = [_masked_mse(s, t, mask) for s, t in zip(student.hidden_states[1:], teacher.hidden_states[1:])]
    # attention: (batch, heads, query, key) -> average over heads and keys, mask over queries
    teacher_attentions = teacher.attentions if teacher_heads is None else [
        t[:, heads.to(t.device)] for t, heads in zip(teacher.attentions, teacher_heads)]
    attention = [_masked_mse(s.transpose(1, 2), t.transpose(1, 2), mask)
                 for s, t in zip(student.attentions, teacher_attentions)]
    logits = (F.mse_loss(student.logits.float(), teacher.logits.float()) if regression
              else soft_cross_entropy(student.logits, teacher.logits, temperature))
    return {
        "embedding": _masked_mse(student.hidden_states[0], teacher.hidden_states[0], mask),
        "attention": torch.stack(attention).mean(),
        "hidden": torch.stack(hidden).mean(),
        "logits": logits,
    }
