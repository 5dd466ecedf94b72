"""Calibration statistics: what the data-aware factorizers and pruning scores read about the teacher.

Gathered once per teacher and data from a few train batches (forward hooks on every compressible
module, see ``accounting.compressible_modules``), then shared read-only by every trial.  Statistics
(``STATISTICS``), each kept only for the layers it makes sense for:

    input_gram    linear layers: X^T X of the layer's inputs (n x n), padding tokens left out
    input_sq      linear layers: the diagonal of that, (n,)
    token_counts  the word embedding: how often each token id occurs, (vocab,); its input is one-hot,
                  so this is its Gram matrix's diagonal (and the whole of it)
    row_fisher    every layer: sum over batches and columns of (dL/dW_ij)^2 per row i, (m,), L = the
                  gold-label task loss of the teacher (Hsu et al. 2022)

Sums are float32; scales cancel in every use (whitening and importances are relative).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

from ..errors import LadaError
from ..nn.losses import task_loss
from ..nn.shared import from_arrays, to_arrays
from .accounting import compressible_modules
from .registry import get_factorizer, get_pruning_score

if TYPE_CHECKING:
    from ..data import TaskSpec
    from .plan import MatrixPlan


class TrainRows(Protocol):
    """What the statistics read of the train rows (``train.features.Features`` is one; compress sits below
    train, so it names the two methods it calls instead of importing that class)."""

    def __len__(self) -> int: ...

    def batch(self, index: torch.Tensor, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]: ...


STATISTICS: dict[str, str] = {
    "input_gram": "X^T X of a linear layer's inputs (n x n)",
    "input_sq": "sum of squared inputs per input feature of a linear layer (n,)",
    "token_counts": "occurrences of each token id at the word embedding (vocab,)",
    "row_fisher": "summed squared task-loss gradient per weight row (m,)",
}
_LINEAR_ONLY = ("input_gram", "input_sq")
_TENSORS = ("input_gram", "input_sq", "token_counts", "row_fisher")
_FILES = ("statistics.safetensors", "statistics.json")
_FORMAT = 1


@dataclass(frozen=True, eq=False)
class LayerStats:
    """The statistics of one compressible module (None: not gathered, or not defined for it)."""

    name: str                                   # qualified module name
    rows: int                                   # input vectors seen (tokens; CLS rows for the pooler)
    input_gram: torch.Tensor | None = None
    input_sq: torch.Tensor | None = None
    token_counts: torch.Tensor | None = None
    row_fisher: torch.Tensor | None = None

    def get(self, statistic: str, user: str) -> torch.Tensor:
        """The tensor ``statistic``; a LadaError naming ``user`` (the method asking) when it is missing."""
        value = getattr(self, statistic, None) if statistic in STATISTICS else None
        if value is None:
            have = ", ".join(s for s in _TENSORS if getattr(self, s) is not None) or "none"
            raise LadaError(f"{user} needs the calibration statistic {statistic!r} for layer {self.name}; "
                            f"it has: {have}")
        return value

    def tensors(self) -> dict[str, torch.Tensor]:
        return {s: getattr(self, s) for s in _TENSORS if getattr(self, s) is not None}

    def __reduce__(self):
        # as numpy arrays: the trials of a search then map the object store's one copy (``nn.shared``)
        return (_shared_layer, (self.name, self.rows, to_arrays(self.tensors())))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())


def _shared_layer(name: str, rows: int, arrays) -> LayerStats:
    return LayerStats(name, rows, **from_arrays(arrays))


@dataclass(frozen=True, eq=False)
class CalibrationStats:
    """Statistics of every compressible module of a teacher, by qualified module name (CPU tensors)."""

    layers: dict[str, LayerStats]
    needs: frozenset[str]
    batches: int
    examples: int
    seconds: float

    def layer(self, name: str) -> LayerStats:
        if name not in self.layers:
            raise LadaError(f"no calibration statistics for layer {name!r}; they cover {len(self.layers)} "
                            f"layers of another model (e.g. {', '.join(list(self.layers)[:3])})")
        return self.layers[name]

    def narrowed(self, name: str, rows: torch.Tensor | None, cols: torch.Tensor | None) -> CalibrationStats:
        """These statistics with layer ``name`` cut to the kept output ``rows`` / input ``cols`` (structured
        removal); a new object, since statistics may be shared by several runs."""
        old = self.layers[name]
        cut = {}
        if cols is not None:
            cols = cols.to(device="cpu", dtype=torch.long)
            if old.input_gram is not None:
                cut["input_gram"] = old.input_gram[cols][:, cols]
            if old.input_sq is not None:
                cut["input_sq"] = old.input_sq[cols]
        if rows is not None and old.row_fisher is not None:
            cut["row_fisher"] = old.row_fisher[rows.to(device="cpu", dtype=torch.long)]
        return replace(self, layers={**self.layers, name: replace(old, **cut)})

    def covers(self, needs: frozenset[str] | set[str]) -> bool:
        """Whether these statistics hold everything ``needs`` asks for (a cache can serve it)."""
        return set(needs) <= self.needs

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers.values())

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``statistics.safetensors`` + ``statistics.json`` into the folder ``path`` (json last: its
        presence marks a complete cache; each file is replaced atomically)."""
        from safetensors.torch import save_file

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {f"{name}|{stat}": t.contiguous() for name, layer in self.layers.items()
                   for stat, t in layer.tensors().items()}
        meta = {"format": _FORMAT, "needs": sorted(self.needs), "batches": self.batches, "examples": self.examples,
                "seconds": self.seconds, "rows": {name: layer.rows for name, layer in self.layers.items()}}
        tmp = folder / f".{_FILES[0]}.{os.getpid()}.tmp"
        save_file(tensors, str(tmp))
        os.replace(tmp, folder / _FILES[0])
        tmp = folder / f".{_FILES[1]}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, folder / _FILES[1])
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike) -> CalibrationStats:
        from safetensors.torch import load_file

        folder = Path(path)
        if not all((folder / f).is_file() for f in _FILES):
            raise LadaError(f"no calibration statistics in {folder} (expected {' and '.join(_FILES)})")
        meta = json.loads((folder / _FILES[1]).read_text())
        if meta.get("format") != _FORMAT:
            raise LadaError(f"calibration statistics in {folder} have format {meta.get('format')!r}, "
                            f"this version reads {_FORMAT}")
        by_layer: dict[str, dict[str, torch.Tensor]] = {name: {} for name in meta["rows"]}
        for key, tensor in load_file(str(folder / _FILES[0])).items():
            name, _, stat = key.rpartition("|")
            by_layer[name][stat] = tensor
        layers = {name: LayerStats(name, meta["rows"][name], **by_layer[name]) for name in meta["rows"]}
        return cls(layers, frozenset(meta["needs"]), meta["batches"], meta["examples"], meta["seconds"])


class _Collector:
    """Forward hooks that add each batch's inputs to the running sums (non-padding positions only)."""

    def __init__(self, modules: dict[str, nn.Module], needs: frozenset[str]):
        self.modules, self.mask = modules, None
        self.sums: dict[str, dict[str, torch.Tensor]] = {name: {} for name in modules}
        self.rows = dict.fromkeys(modules, 0)
        self.wants = {s for s in needs if s != "row_fisher"}

    def _add(self, name: str, stat: str, value: torch.Tensor) -> None:
        sums = self.sums[name]
        sums[stat] = value if stat not in sums else sums[stat] + value

    def hook(self, name: str):
        def record(module: nn.Module, inputs, output) -> None:
            x, mask = inputs[0].detach(), self.mask
            embedding = isinstance(module, nn.Embedding)
            # token positions carry the batch's mask; the pooler's (batch, n) CLS rows have no padding
            positions = x.shape if embedding else x.shape[:-1]
            keep = mask.bool() if mask is not None and tuple(positions) == tuple(mask.shape) else None
            if embedding:
                ids = x[keep] if keep is not None else x.flatten()
                self.rows[name] += ids.numel()
                if "token_counts" in self.wants:
                    self._add(name, "token_counts",
                              torch.bincount(ids, minlength=module.num_embeddings).float())
                return
            rows = (x[keep] if keep is not None else x.reshape(-1, x.shape[-1])).float()
            self.rows[name] += rows.shape[0]
            if "input_gram" in self.wants:
                self._add(name, "input_gram", rows.T @ rows)
            if "input_sq" in self.wants:
                self._add(name, "input_sq", rows.pow(2).sum(0))
        return record

    def add_fisher(self, loss: torch.Tensor) -> None:
        names = list(self.modules)
        grads = torch.autograd.grad(loss, [self.modules[n].weight for n in names], allow_unused=True)
        for name, grad in zip(names, grads):
            if grad is not None:
                self._add(name, "row_fisher", grad.float().pow(2).sum(1))


def _check(needs, batches: int, batch_size: int, task) -> frozenset[str]:
    needs = frozenset(needs)
    unknown = sorted(needs - set(STATISTICS))
    if unknown:
        raise LadaError(f"unknown calibration statistic {unknown[0]!r}; allowed: {', '.join(STATISTICS)}")
    for label, value in (("batches", batches), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LadaError(f"calibration {label} must be an integer >= 1, got {value!r}")
    if "row_fisher" in needs and task is None:
        raise LadaError("calibration statistic 'row_fisher' needs the task (its loss gives the gradients)")
    return needs


def collect_statistics(teacher: nn.Module, train: TrainRows, needs, batches: int = 16, batch_size: int = 32,
                       device: torch.device | str = "cpu", task: TaskSpec | None = None,
                       seed: int = 0) -> CalibrationStats:
    """``needs`` statistics of every compressible module of ``teacher`` from ``batches`` train batches.

    The batches are a seeded sample without replacement (fewer when ``train`` is smaller).  The teacher
    (already on ``device``) runs in eval mode and is left as it was: mode, weights, ``requires_grad``,
    no ``.grad`` (the Fisher gradients come from ``torch.autograd.grad``).
    """
    needs = _check(needs, batches, batch_size, task)
    started = time.perf_counter()
    modules: dict[str, nn.Module] = {}
    for name, (_, module) in compressible_modules(teacher).items():
        if not isinstance(module, (nn.Linear, nn.Embedding)):
            raise LadaError(f"calibration statistics come from a dense teacher; {name} is {type(module).__name__}")
        modules[name] = module
    collector = _Collector(modules, needs)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[: batches * batch_size]
    chunks = order.split(batch_size)
    fisher = "row_fisher" in needs
    was_training = teacher.training
    flags = {name: m.weight.requires_grad for name, m in modules.items()}
    handles = [m.register_forward_hook(collector.hook(name)) for name, m in modules.items()]
    try:
        teacher.eval()
        for module in modules.values():
            module.weight.requires_grad_(fisher or module.weight.requires_grad)
        for chunk in chunks:
            batch = train.batch(chunk, device)
            labels = batch.pop("labels")
            collector.mask = batch["attention_mask"]
            with torch.set_grad_enabled(fisher):
                logits = teacher(**batch).logits
                if fisher:
                    collector.add_fisher(task_loss(logits.float(), labels, task.is_regression))
    finally:
        for handle in handles:
            handle.remove()
        for name, module in modules.items():
            module.weight.requires_grad_(flags[name])
        teacher.train(was_training)
    layers = {}
    for name, module in modules.items():
        sums = {stat: t.cpu() for stat, t in collector.sums[name].items()
                if not (isinstance(module, nn.Embedding) and stat in _LINEAR_ONLY)}
        layers[name] = LayerStats(name, collector.rows[name], **sums)
    return CalibrationStats(layers, needs, len(chunks), len(order), time.perf_counter() - started)


def plugin_needs(factorizers: Iterable[str], scores: Iterable[str],
                 plans: Sequence[MatrixPlan] | None = None) -> frozenset[str]:
    """The statistics the named factorizers and pruning scores read (LadaError for an unknown name).

    With ``plans``, only those the plans use: a factorizer's when some matrix is factorized, a score's
    when some matrix is pruned.
    """
    factorize = plans is None or any(p.svd_ratio is not None for p in plans)
    prune = plans is None or any(p.keep_ratio is not None for p in plans)
    needs: frozenset[str] = frozenset()
    for name in factorizers:
        needs |= get_factorizer(name).needs if factorize else frozenset()
    for name in scores:
        needs |= get_pruning_score(name).needs if prune else frozenset()
    return needs
