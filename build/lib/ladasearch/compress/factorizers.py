"""The built-in factorizer: plain truncated SVD (the paper's), registered as "svd".

A factorizer turns a dense matrix into factors A (m x r), B (n x r) with W ~= A @ B.T, and shrinks
already factorized A @ B.T to a smaller rank in later rounds (see ``registry.Factorizer``).
"""

from __future__ import annotations

import torch

from .registry import Factorizer, register_factorizer


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


@register_factorizer
class SvdFactorizer(Factorizer):
    """The best rank-r approximation in the Frobenius norm, blind to the data."""

    name = "svd"

    def factorize(self, weight, rank, stats):
        return truncated_factors(weight, rank)

    def refactor(self, a, b, rank, stats):
        return refactor(a, b, rank)
