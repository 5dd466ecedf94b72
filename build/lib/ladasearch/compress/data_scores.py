"""Data-aware pruning scores: "taylor" and "movement" (learned over a round's training), "wanda" (activations).

taylor    |w * sum_t dL/dw_t|: the first-order change of the round's loss when the entry is zeroed
movement  -sum_t w_t * dL/dw_t (Sanh et al. 2020): high for weights that training pushes away from zero
wanda     |w| times the norm of what the entry feeds on and feeds into: for y = A (B^T x), entry B_jk
          moves y by B_jk x_j a_k, entry A_ik moves y_i by A_ik z_k (z = B^T x); so
          |B_jk| ||x_j|| ||a_k|| and |A_ik| ||z_k||, with ||x_j||^2 = G_jj, ||z_k||^2 = b_k^T G b_k
          (G = X^T X); a dense W_ij: |W_ij| ||x_j||.  The embedding's input is one-hot: ||x_i||^2 is
          token i's count (smoothed, so unseen tokens are not all pruned first).

The learned scores and re-factorization: each round the loop re-factorizes A B^T into new factors
A' = A T_a, B' = B T_b and hands the scorer the new module (``carry``).  A sum of gradients moves
with the basis exactly (dL/dA' = G_W B' = (dL/dA) T_b), a sum of per-step products does not; so
after a change of basis both scores use the summed gradient (movement then equals signed Taylor).
Masked entries: ``torch.nn.utils.prune`` zeroes the gradient of ``<name>_orig`` where the mask is 0,
yet those entries of dL/dA feed dL/dA'; so after the first step of a round the gradient is read from
the masked (effective) tensor itself, through a one-shot hook that the next forward pass removes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import LadaError
from .accounting import matrix_names
from .registry import PruningScore, register_pruning_score


def _magnitude(module: nn.Module, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {n: getattr(module, n).detach().abs() for n in names}


@dataclass(eq=False)
class _Record:
    """What one module's round of training left: summed gradients (and, movement, summed w * grad)."""

    module: nn.Module
    movement: bool = False              # also sum w * grad per step
    grad: dict[str, torch.Tensor] = field(default_factory=dict)
    moved: dict[str, torch.Tensor] = field(default_factory=dict)
    same_basis: bool = True             # False once carried to new factors: only ``grad`` is valid then
    tapped: set[str] = field(default_factory=set)   # tensors whose gradient a tap already added this step
    handle: object = None               # the pending one-shot tap (a forward hook)

    def add(self, name: str, weight: torch.Tensor, grad: torch.Tensor) -> None:
        grad = grad.detach().float()
        sums = ((self.grad, grad), (self.moved, weight.detach().float() * grad)) if self.movement else \
            ((self.grad, grad),)
        for table, value in sums:
            table[name] = value if name not in table else table[name] + value

    def untap(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


class _Tap:
    """One-shot forward hook: hooks the gradient of the masked tensors this forward pass uses, then removes
    itself (so a model is never left with it beyond its next forward pass, e.g. the evaluation after training)."""

    def __init__(self, record: _Record, names: tuple[str, ...]):
        self.record, self.names = record, names

    def __call__(self, module: nn.Module, inputs, output) -> None:
        self.record.untap()
        if not torch.is_grad_enabled():
            return
        for name in self.names:
            tensor = getattr(module, name)
            if tensor.requires_grad and not tensor.is_leaf:
                tensor.register_hook(self._adder(name, tensor.detach()))

    def _adder(self, name: str, weight: torch.Tensor):
        def add(grad: torch.Tensor) -> None:
            self.record.add(name, weight, grad)
            self.record.tapped.add(name)
        return add


class _LearnedScore(PruningScore):
    """Scores from the gradients of the round's training steps; magnitude before any step was observed."""

    movement = False

    def __init__(self):
        self._records: dict[str, _Record] = {}

    def observe(self, module_name, module, names):
        record = self._records.get(module_name)
        if record is None or record.module is not module:
            if record is not None:
                record.untap()
            record = self._records[module_name] = _Record(module, self.movement)
        masked = tuple(n for n in names if hasattr(module, f"{n}_orig"))
        for n in names:
            if n in record.tapped:
                continue
            param = getattr(module, f"{n}_orig") if n in masked else getattr(module, n)
            if param.grad is not None:
                record.add(n, getattr(module, n), param.grad)
        record.tapped.clear()
        if masked and record.handle is None:
            record.handle = module.register_forward_hook(_Tap(record, masked))

    def carry(self, module_name: str, new: nn.Module) -> None:
        """The module observed as ``module_name`` was replaced by ``new`` (its re-factorization): move the
        summed gradients into the new factors' basis.  Exact when the factors did not change."""
        record = self._records.get(module_name)
        if record is None or record.module is new:
            return
        record.untap()
        old, names = record.module, matrix_names(new)
        before = {n: getattr(old, n).detach().float() for n in matrix_names(old)}
        after = {n: getattr(new, n).detach().float() for n in names}
        if before.keys() == after.keys() and all(torch.equal(before[n], after[n]) for n in names):
            record.module = new
            return
        if not set(record.grad) >= set(before):   # it got no gradient: nothing learned to carry
            self._records[module_name] = _Record(new, self.movement)
            return
        if "weight" in before:   # dense -> factors: dL/dA' = G B', dL/dB' = G^T A'
            g = record.grad["weight"]
            grad = {"A": g @ after["B"], "B": g.T @ after["A"]}
        else:                    # A' = A T_a, B' = B T_b (the new factors span no more than the old)
            t_a = torch.linalg.pinv(before["A"]) @ after["A"]
            t_b = torch.linalg.pinv(before["B"]) @ after["B"]
            grad = {"A": record.grad["A"] @ t_b, "B": record.grad["B"] @ t_a}
        self._records[module_name] = _Record(new, self.movement, grad=grad, same_basis=False)

    def narrow(self, module_name, module, rows, cols):
        record = self._records.get(module_name)
        if record is None:
            return
        # A is (out x r) and B (in x r): rows cut A, columns cut B; a dense weight is (out x in)
        cuts = {"weight": (rows, cols), "A": (rows, None), "B": (cols, None)}
        for table in (record.grad, record.moved):
            for name, value in table.items():
                first, second = cuts[name]
                if first is not None:
                    value = value[first.to(value.device)]
                if second is not None:
                    value = value[:, second.to(value.device)]
                table[name] = value

    def reset(self):
        for record in self._records.values():
            record.untap()
        self._records = {}

    def scores(self, module, names, stats):
        if not self._records:
            return _magnitude(module, names)
        record = next((r for r in self._records.values() if r.module is module), None)
        if record is None:
            raise RuntimeError(f"pruning score {self.name!r} observed training but not this "
                               f"{type(module).__name__}; a module replaced after training must be "
                               f"handed over with carry(name, new_module) before it is scored")
        if not set(names) <= set(record.grad):
            return _magnitude(module, names)
        weights = {n: getattr(module, n).detach().float() for n in names}
        scores = {n: self._score(w, record, n) for n, w in weights.items()}
        # an entry already pruned (zero) must not outrank a live one of any of the tensors that merely scores low
        low = min(float(s.min() - s.abs().max()) for s in scores.values()) - 1.0
        return {n: torch.where(weights[n] == 0, low, s) for n, s in scores.items()}

    def _score(self, weight: torch.Tensor, record: _Record, name: str) -> torch.Tensor:
        raise NotImplementedError


@register_pruning_score
class TaylorScore(_LearnedScore):
    name = "taylor"

    def _score(self, weight, record, name):
        return (weight * record.grad[name].to(weight.device)).abs()


@register_pruning_score
class MovementScore(_LearnedScore):
    name = "movement"
    movement = True

    def _score(self, weight, record, name):
        moved = record.moved[name] if record.same_basis else weight * record.grad[name]
        return -moved.to(weight.device)


@register_pruning_score
@dataclass(frozen=True)
class WandaScore(PruningScore):
    name = "wanda"
    needs = frozenset({"input_gram", "token_counts"})
    smoothing: float = 1e-2   # added to token counts, relative to the mean count

    def scores(self, module, names, stats):
        if stats is None:
            raise LadaError("pruning score 'wanda' needs calibration statistics (input_gram, token_counts); "
                            "none were given")
        tensors = {n: getattr(module, n).detach().float() for n in names}
        device = next(iter(tensors.values())).device
        if stats.token_counts is not None:     # embedding: rows of E (and of A) are fed one-hot
            counts = stats.token_counts.to(device).float()
            row_sq = counts + self.smoothing * counts.mean()
            if "weight" in tensors:
                return {"weight": tensors["weight"].abs() * row_sq.sqrt()[:, None]}
            a, b = tensors["A"], tensors["B"]
            z_norm = (row_sq[:, None] * a.pow(2)).sum(0).sqrt()
            return {"A": a.abs() * row_sq.sqrt()[:, None] * b.norm(dim=0),
                    "B": b.abs() * z_norm}
        gram = stats.input_gram
        diag = gram.diagonal() if gram is not None else stats.get("input_sq", "pruning score 'wanda'")
        x_norm = diag.to(device).float().clamp_min(0).sqrt()
        if "weight" in tensors:
            return {"weight": tensors["weight"].abs() * x_norm}
        a, b = tensors["A"], tensors["B"]
        gram = stats.get("input_gram", "pruning score 'wanda'").to(device).float()
        z_norm = ((gram @ b) * b).sum(0).clamp_min(0).sqrt()
        return {"A": a.abs() * z_norm, "B": b.abs() * x_norm[:, None] * a.norm(dim=0)}
