"""The Pareto front: points no other point beats on every objective."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import LadaError


def pareto_front(points: Sequence[Sequence[float]], maximize: Sequence[bool] = (True, True)) -> list[int]:
    """Indices of the non-dominated points, ordered by the first coordinate (ascending).

    ``maximize`` says per coordinate whether higher is better (e.g. ``(False, True)`` for latency, score).
    A point is dominated when another is at least as good in every coordinate and better in one; equal
    points do not dominate each other, so both stay on the front.
    """
    if any(len(p) != len(maximize) for p in points):
        raise LadaError(f"every point needs {len(maximize)} coordinates (one per objective)")
    signed = [tuple(v if up else -v for v, up in zip(p, maximize)) for p in points]

    def dominates(a: tuple, b: tuple) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    front = [i for i, p in enumerate(signed) if not any(dominates(q, p) for q in signed)]
    return sorted(front, key=lambda i: points[i][0])
