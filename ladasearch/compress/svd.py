"""Truncated SVD: the rank rule of the paper and the factors it produces."""

from __future__ import annotations

import math

import torch


def svd_rank(m: int, n: int, svd_ratio: float, round_up: bool = True) -> int:
    """Rank r that keeps ``svd_ratio`` of an m x n matrix as factors: r*(m+n) ~= m*n*svd_ratio.

    The paper's rule r = m*n*P_svd/(m+n).  Rounded up when pruning follows (it then removes
    the rounding excess exactly), to the nearest integer otherwise.  At least 1, at most min(m, n).
    """
    if not 0.0 < svd_ratio <= 1.0:
        raise ValueError(f"svd_ratio must be in (0, 1], got {svd_ratio}")
    exact = m * n * svd_ratio / (m + n)
    rank = math.ceil(exact - 1e-9) if round_up else round(exact)
    return max(1, min(min(m, n), rank))


def truncated_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A = U_r sqrt(S_r), B = V_r sqrt(S_r) so that A @ B.T is the best rank-r approximation."""
    u, s, vh = torch.linalg.svd(weight.detach().float(), full_matrices=False)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, vh[:rank].T * root


def refactor(a: torch.Tensor, b: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-factorize A @ B.T to a smaller rank without forming the m x n product.

    With A = Qa Ra and B = Qb Rb, A @ B.T = Qa (Ra Rb.T) Qb.T, so the SVD of the
    small r x r core gives the SVD of the product.
    """
    qa, ra = torch.linalg.qr(a.detach().float())
    qb, rb = torch.linalg.qr(b.detach().float())
    u, s, vh = torch.linalg.svd(ra @ rb.T)
    root = s[:rank].sqrt()
    return (qa @ u[:, :rank]) * root, (qb @ vh[:rank].T) * root
