"""The teacher's outputs on a training batch, computed once per search and read back by every later trial.

Every trial of a search draws its batches in the same seeded order from the same rows, so step i of trial k
feeds the teacher the batch step i of trial 1 fed it, and the teacher's forward pass (about a quarter of a
distillation step on MiniLM) was recomputed for nothing.  An entry is keyed by a digest of the teacher's
weights, the batch's tensors (so the rows and ``max_length``) and the precision: another teacher, other data
or another length never reads one back.  Outputs are stored in float16 and, so that a trial that reads them
and the trial that wrote them train alike, returned in float16 on a miss too.

The cache is a folder of one file per batch, written atomically (trials running side by side may write the
same entry: the last rename wins, with equal contents).  ``max_bytes`` bounds it: past it, batches are
computed and not stored.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

KEY_VERSION = "1"
DEFAULT_MAX_BYTES = 4 * 2**30


@dataclass(frozen=True)
class TeacherOutput:
    """What the distillation losses read of the teacher (``distill.distill_losses``)."""

    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...]
    attentions: tuple[torch.Tensor, ...]

    def half(self) -> TeacherOutput:
        return TeacherOutput(self.logits.half(), tuple(h.half() for h in self.hidden_states),
                             tuple(a.half() for a in self.attentions))

    def to(self, device) -> TeacherOutput:
        return TeacherOutput(self.logits.to(device), tuple(h.to(device) for h in self.hidden_states),
                             tuple(a.to(device) for a in self.attentions))


def weights_digest(model: nn.Module) -> str:
    """sha256 over the model's state (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def batch_key(batch: dict[str, torch.Tensor], precision: str) -> str:
    digest = hashlib.sha256(f"{KEY_VERSION}:{precision}".encode())
    for name in sorted(batch):
        data = batch[name].detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class TeacherCache:
    """Where a search keeps its teacher's outputs, and how many bytes it may use (0: none are kept)."""

    folder: Path
    max_bytes: int = DEFAULT_MAX_BYTES

    def bind(self, teacher: nn.Module, precision: str = "fp32") -> CachedTeacher:
        return CachedTeacher(self, teacher, precision)


class CachedTeacher:
    """The teacher's outputs on a batch: read from the cache, else computed (and stored while there is room)."""

    def __init__(self, cache: TeacherCache, teacher: nn.Module, precision: str):
        self.teacher, self.precision, self.max_bytes = teacher, precision, cache.max_bytes
        self.folder = Path(cache.folder) / weights_digest(teacher)[:24]
        self.used = sum(f.stat().st_size for f in self.folder.glob("*.pt")) if self.folder.is_dir() else 0
        self.hits = self.misses = 0

    def __call__(self, batch: dict[str, torch.Tensor]) -> TeacherOutput:
        path = self.folder / f"{batch_key(batch, self.precision)}.pt"
        device = batch["input_ids"].device
        try:
            saved = torch.load(path, weights_only=True)
            self.hits += 1
            return TeacherOutput(saved["logits"], tuple(saved["hidden_states"]), tuple(saved["attentions"])).to(device)
        except (FileNotFoundError, RuntimeError, KeyError, EOFError):  # absent, or cut short by a kill: recompute
            pass
        self.misses += 1
        with torch.no_grad():
            out = self.teacher(**batch, output_hidden_states=True, output_attentions=True)
        computed = TeacherOutput(out.logits, tuple(out.hidden_states), tuple(out.attentions)).half()
        self._store(path, computed)
        return computed

    def _store(self, path: Path, out: TeacherOutput) -> None:
        size = sum(t.numel() * 2 for t in (out.logits, *out.hidden_states, *out.attentions))
        if self.used + size > self.max_bytes:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(f".{os.getpid()}.tmp")
        cpu = out.to("cpu")
        torch.save({"logits": cpu.logits, "hidden_states": list(cpu.hidden_states),
                    "attentions": list(cpu.attentions)}, staging)
        os.replace(staging, path)
        self.used += path.stat().st_size
