"""Data-weighted truncated SVD: the factorizers "fisher" (Hsu et al. 2022) and "activation" (SVD-LLM).

Both find the rank-r W_r that is best in a weighted norm instead of the plain Frobenius norm:

    fisher      || diag(d) (W - W_r) ||_F,  d_i = sqrt(I_i), I_i the row's summed squared task gradient
    activation  || (W - W_r) S ||_F,        S S^T = X^T X (+ damping): the error on the real inputs X;
                the word embedding (one-hot inputs, a diagonal Gram matrix) weights its rows by
                sqrt(token count) instead, i.e. || diag(d) (E - E_r) ||_F

Factors are formed without inverting the weights: for row weights, B = V_r sqrt(s_r) and
A = W V_r / sqrt(s_r) (= diag(d)^-1 U_r sqrt(s_r)); for whitening, A = U_r sqrt(s_r) and
B = W^T U_r / sqrt(s_r) (= S^-T V_r sqrt(s_r)).  A tiny or zero weight thus never divides anything,
and unit weights give exactly plain SVD's factors.  Weights are normalised (mean d^2 = 1, mean
Gram diagonal = 1) so A and B keep plain SVD's balance whatever the number of calibration tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import LadaError
from .registry import Factorizer, register_factorizer


def _inv_root(s: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """1 / sqrt(s) for the singular values above round-off, 0 for the rest (their directions carry nothing)."""
    tol = (s.max() if s.numel() else s.new_zeros(())) * max(shape) * torch.finfo(s.dtype).eps
    return torch.where(s > tol, s.clamp_min(torch.finfo(s.dtype).tiny).rsqrt(), torch.zeros_like(s))


def row_weighted_factors(weight: torch.Tensor, d: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors of the W_r minimising || diag(d) (W - W_r) ||_F (W m x n, d (m,) > 0)."""
    w = weight.detach().float()
    _, s, vh = torch.linalg.svd(d[:, None] * w, full_matrices=False)
    v, s = vh[:rank].T, s[:rank]
    return (w @ v) * _inv_root(s, w.shape), v * s.sqrt()


def row_weighted_refactor(a: torch.Tensor, b: torch.Tensor, d: torch.Tensor,
                          rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``row_weighted_factors`` of A @ B.T through the factors: QR of diag(d) A and of B, SVD of the r x r core."""
    a, b = a.detach().float(), b.detach().float()
    _, ra = torch.linalg.qr(d[:, None] * a)
    qb, rb = torch.linalg.qr(b)
    _, s, vh = torch.linalg.svd(ra @ rb.T)
    v, s = qb @ vh[:rank].T, s[:rank]
    return (a @ (b.T @ v)) * _inv_root(s, (a.shape[0], b.shape[0])), v * s.sqrt()


def whitened_factors(weight: torch.Tensor, root: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors of the W_r minimising || (W - W_r) S ||_F, ``root`` = S (n x n)."""
    w = weight.detach().float()
    u, s, _ = torch.linalg.svd(w @ root, full_matrices=False)
    u, s = u[:, :rank], s[:rank]
    return u * s.sqrt(), (w.T @ u) * _inv_root(s, w.shape)


def whitened_refactor(a: torch.Tensor, b: torch.Tensor, root: torch.Tensor,
                      rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``whitened_factors`` of A @ B.T through the factors: A B^T S = A (S^T B)^T."""
    a, b = a.detach().float(), b.detach().float()
    qa, ra = torch.linalg.qr(a)
    _, rb = torch.linalg.qr(root.T @ b)
    u, s, _ = torch.linalg.svd(ra @ rb.T)
    u, s = qa @ u[:, :rank], s[:rank]
    return u * s.sqrt(), (b @ (a.T @ u)) * _inv_root(s, (a.shape[0], b.shape[0]))


def _finite(values: torch.Tensor, what: str, layer: str) -> torch.Tensor:
    values = values.float()
    if not torch.isfinite(values).all():
        raise LadaError(f"calibration statistic {what} of layer {layer} is not finite; recollect the statistics")
    return values


def _sized(values: torch.Tensor, size: int, what: str, layer: str) -> torch.Tensor:
    if values.shape[0] != size:
        raise LadaError(f"calibration statistic {what} of layer {layer} has {values.shape[0]} entries, the matrix "
                        f"needs {size}: the statistics belong to another model")
    return values


def row_weights(values: torch.Tensor, floor: float, shift: float) -> torch.Tensor:
    """d = sqrt(max(v, floor * mean) + shift * mean), normalised to mean d^2 = 1 (all ones when v is all 0).

    ``floor`` keeps rows never seen in calibration (zero Fisher, zero count) in play at a small weight;
    ``shift`` is additive smoothing.  Either keeps d > 0, so nothing divides by zero."""
    mean = values.mean()
    if not mean > 0:
        return torch.ones_like(values)
    weighted = values.clamp_min(floor * mean) + shift * mean
    return (weighted / weighted.mean()).sqrt()


def whitening_root(gram: torch.Tensor, damping: float, layer: str = "") -> torch.Tensor:
    """Lower Cholesky factor S of G' = (G + lambda I) / ((1 + damping) mean diag G), lambda = damping * mean diag.

    A singular G (dead inputs, fewer tokens than features) fails Cholesky; lambda then grows tenfold
    until it succeeds.  G = 0 (no inputs seen) gives S = I: plain SVD."""
    g = _finite(gram, "input_gram", layer).double()
    n = g.shape[0]
    mean = g.diagonal().mean()
    eye = torch.eye(n, dtype=g.dtype, device=g.device)
    if not mean > 0:
        return eye.float()
    g = (g + g.T) / (2 * mean)
    lam = damping
    for _ in range(12):
        root, info = torch.linalg.cholesky_ex((g + lam * eye) / (1 + lam))
        if int(info) == 0:
            return root.float()
        lam = max(lam, 1e-8) * 10
    raise LadaError(f"the input Gram matrix of layer {layer} is not positive semi-definite even with damping "
                    f"{lam:g}; recollect the statistics")


@register_factorizer
@dataclass(frozen=True)
class FisherFactorizer(Factorizer):
    """Hsu et al.: rows weighted by the square root of their Fisher importance (row_fisher)."""

    name = "fisher"
    needs = frozenset({"row_fisher"})
    floor: float = 1e-3   # least row importance, as a fraction of the mean

    def _weights(self, stats, m: int, device) -> torch.Tensor:
        if stats is None:
            raise LadaError("factorizer 'fisher' needs calibration statistics (row_fisher); none were given")
        fisher = _finite(_sized(stats.get("row_fisher", "factorizer 'fisher'"), m, "row_fisher", stats.name),
                         "row_fisher", stats.name)
        return row_weights(fisher.to(device), self.floor, 0.0)

    def factorize(self, weight, rank, stats):
        return row_weighted_factors(weight, self._weights(stats, weight.shape[0], weight.device), rank)

    def refactor(self, a, b, rank, stats):
        return row_weighted_refactor(a, b, self._weights(stats, a.shape[0], a.device), rank)


@register_factorizer
@dataclass(frozen=True)
class ActivationFactorizer(Factorizer):
    """SVD-LLM: whitened by the Cholesky factor of the inputs' Gram matrix; the embedding by token counts."""

    name = "activation"
    needs = frozenset({"input_gram", "token_counts"})
    damping: float = 1e-2   # added to the Gram diagonal (and to token counts), relative to its mean

    def _weighting(self, stats, m: int, n: int, device) -> tuple[str, torch.Tensor]:
        if stats is None:
            raise LadaError("factorizer 'activation' needs calibration statistics (input_gram, token_counts); "
                            "none were given")
        if stats.token_counts is not None:
            counts = _finite(_sized(stats.token_counts, m, "token_counts", stats.name), "token_counts", stats.name)
            return "rows", row_weights(counts.to(device), 0.0, self.damping)
        gram = _sized(stats.get("input_gram", "factorizer 'activation'"), n, "input_gram", stats.name)
        return "columns", whitening_root(gram.to(device), self.damping, stats.name)

    def factorize(self, weight, rank, stats):
        side, weights = self._weighting(stats, *weight.shape, weight.device)
        if side == "rows":
            return row_weighted_factors(weight, weights, rank)
        return whitened_factors(weight, weights, rank)

    def refactor(self, a, b, rank, stats):
        side, weights = self._weighting(stats, a.shape[0], b.shape[0], a.device)
        if side == "rows":
            return row_weighted_refactor(a, b, weights, rank)
        return whitened_refactor(a, b, weights, rank)
