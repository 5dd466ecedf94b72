"""The parameter budget (paper eq. 7) and the solvers for the fine-grained ratios.

    P * |theta| = P_embd * |theta_embd| + P_svd * P_weight * |theta_encd| + |theta_dense|

P = 1 / target is the overall retention; P_embd, P_svd and P_weight are retention
ratios in (0, 1]: the share of the embedding kept (by SVD), the share of each encoder
matrix kept as SVD factors, and the share of factor entries kept by pruning.  The
paper's Table 2 gives reduction factors, i.e. 1 / ratio.

Beyond the paper, ``structure`` < 1 first removes whole heads and FFN neurons (``structure.Widths``):
|theta_encd| and |theta_dense| are then what the removal leaves, counted exactly, and P_svd and P_weight
apply to the narrowed matrices; |theta| stays the full model's.

Two ways to pick a point: ``solve`` takes two of the three ratios (the `compress` command);
``split_ratios`` takes the embedding ratio and the share of the encoder's reduction done by SVD
(search spaces), with ``feasible_embedding`` the embedding ratios that can meet a target.
Every solver here is the only place eq. 7 is solved.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import LadaError
from ..summary import RatioRecord, reaches_target
from .accounting import ParamCount
from .methods import get_method

if TYPE_CHECKING:
    from .structure import Widths

MIN_ENCODER_RATIO = 0.005

# Table 2 of the paper: reduction factors (embedding, matrix factorization, weight pruning).
PAPER_TABLE2 = {2.5: (1.43, 2.0, 1.56), 5.0: (2.05, 2.0, 3.41), 7.5: (5.0, 2.0, 4.33), 10.0: (5.0, 2.5, 5.45)}


@dataclass(frozen=True)
class Ratios:
    """Retention ratios in (0, 1] and the name of the method (``methods.get_method``) that uses them."""

    embedding: float
    svd: float
    weight: float
    method: str = "hybrid"
    structure: float = 1.0   # share of each layer's attention heads and FFN neurons kept (1: none removed)

    def __post_init__(self):
        method = get_method(self.method)
        for name in ("embedding", "svd", "weight", "structure"):
            check_ratio(name, getattr(self, name))
        method.check(self)

    @property
    def encoder(self) -> float:
        return self.svd * self.weight

    def record(self) -> RatioRecord:
        """These ratios as summary.json keeps them."""
        return RatioRecord(self.method, self.embedding, self.svd, self.weight, self.structure)

    def reduction_factors(self) -> dict[str, float]:
        return self.record().reduction_factors()


def check_ratio(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or math.isnan(value) or not 0.0 < value <= 1.0:
        raise LadaError(f"{name} ratio must be a retention fraction in (0, 1], got {value!r}")
    return float(value)


def parse_target(text: str | float) -> float:
    """'10x', '10', 2.5 -> reduction factor (> 1)."""
    raw = str(text).strip().lower()
    match = re.fullmatch(r"(\d+(?:\.\d+)?|\.\d+)\s*x?", raw)
    if not match:
        raise LadaError(f"target {text!r} is not a reduction factor; write it like '10x' or '2.5x'")
    value = float(match.group(1))
    if value <= 1.0:
        raise LadaError(f"target {text!r} must be above 1x (it is the factor the model shrinks by)")
    return value


@dataclass(frozen=True)
class Budget:
    """Eq. 7 for one model at one target: what it leaves to the embedding and the encoder, the uniform split,
    the feasible embedding ratios, and when an achieved size counts as the target (``summary.reaches_target``).

    ``counts`` are the full model's (structured removal changes how the encoder spends its part, not the part
    eq. 7 leaves to the embedding and the encoder together)."""

    counts: ParamCount
    target: float

    @property
    def compressible(self) -> float:
        """|theta| / target - |theta_dense|: the parameters the embedding and the encoder may keep together."""
        return _compressible_budget(self.counts, self.target)

    def uniform_ratio(self) -> float:
        """The ratio that keeps the embedding and every encoder matrix alike."""
        return self.compressible / (self.counts.embedding + self.counts.encoder)

    def embedding_share(self, embedding_ratio: float) -> float:
        """The share of the compressible budget an embedding ratio spends."""
        return embedding_ratio * self.counts.embedding / self.compressible

    def embedding_ratio_for(self, share: float) -> float:
        """The embedding ratio that spends ``share`` of this budget (a point moved from another target)."""
        return share * self.compressible / self.counts.embedding

    def feasible_embedding(self, min_encoder: float = MIN_ENCODER_RATIO) -> tuple[float, float]:
        return feasible_embedding(self.counts, self.target, min_encoder)

    def reached(self, achieved_factor: float) -> bool:
        return reaches_target(achieved_factor, self.target)


def budget(counts: ParamCount, ratios: Ratios, widths: Widths | None = None) -> float:
    """Right-hand side of eq. 7: the parameter count these ratios give (``widths``: when structure < 1)."""
    counts = narrowed_counts(counts, ratios.structure, widths)
    return ratios.embedding * counts.embedding + ratios.encoder * counts.encoder + counts.dense


def _compressible_budget(counts: ParamCount, target: float, total: int | None = None) -> float:
    """What eq. 7 leaves to the embedding and the encoder at ``target``: |theta|/target - |theta_dense|
    (``total``: |theta| of the full model when ``counts`` are those left after structured removal)."""
    return (total or counts.total) / target - counts.dense


def narrowed_counts(counts: ParamCount, structure: float, widths: Widths | None) -> ParamCount:
    """``counts`` after removing all but ``structure`` of the heads and neurons (``widths``: the architecture)."""
    if structure == 1.0:
        return counts
    if widths is None:
        raise LadaError(f"structure ratio {structure:g} needs the model's widths (a BERT-family config)")
    return widths.narrowed(counts, structure)


def encoder_ratio(counts: ParamCount, target: float, embedding: float, total: int | None = None) -> float:
    """Eq. 7 solved for P_encd = P_svd * P_weight, given the embedding ratio (may fall outside (0, 1])."""
    return (_compressible_budget(counts, target, total) - embedding * counts.embedding) / counts.encoder


def feasible_embedding(counts: ParamCount, target: float,
                       min_encoder: float = MIN_ENCODER_RATIO) -> tuple[float, float]:
    """Embedding ratios that leave the encoder a ratio in [min_encoder, 1] at ``target``."""
    allowed = _compressible_budget(counts, target)
    low = max((allowed - counts.encoder) / counts.embedding, 1e-6)
    high = min((allowed - min_encoder * counts.encoder) / counts.embedding, 1.0)
    if allowed <= 0 or high < low:
        raise LadaError(f"target {target:g}x is unreachable for this model: the dense part alone is "
                        f"{counts.dense:,} of a {counts.total / target:,.0f}-parameter budget")
    return low, high


def split_ratios(counts: ParamCount, target: float, embedding: float, svd_split: float, method: str,
                 structure: float = 1.0, widths: Widths | None = None) -> Ratios:
    """The ratios of a search-space point: the encoder ratio from eq. 7, split between SVD and pruning.

        P_svd = P_encd ** svd_split,  P_weight = P_encd ** (1 - svd_split)
    (in log terms, ``svd_split`` of the encoder's reduction is done by SVD: 1 = SVD only, 0 = pruning only).
    With ``structure`` < 1 the encoder ratio is that of the matrices the removal leaves (``widths``).
    """
    encoder = encoder_ratio(narrowed_counts(counts, structure, widths), target, embedding, counts.total)
    if not 0 < encoder <= 1 + 1e-9:
        kept = f" with structure ratio {structure:g}" if structure < 1 else ""
        raise LadaError(f"embedding ratio {embedding:.4f}{kept} leaves the encoder ratio {encoder:.4f} at "
                        f"{target:g}x, outside (0, 1]")
    encoder = min(encoder, 1.0)
    return Ratios(embedding=embedding, svd=encoder ** svd_split, weight=encoder ** (1 - svd_split), method=method,
                  structure=structure)


def solve(counts: ParamCount, target: float, *, method: str = "hybrid", embedding: float | None = None,
          svd: float | None = None, weight: float | None = None, structure: float = 1.0,
          widths: Widths | None = None) -> Ratios:
    """Return the ratios that meet ``target`` given two of (embedding, svd, weight).

    Method 'svd' fixes weight=1 and method 'prune' fixes svd=1, so one more ratio is enough.
    ``structure`` < 1 removes heads and neurons first (``widths``: the architecture's, for the exact count).
    Raises LadaError naming why the target cannot be reached.
    """
    check_ratio("structure", structure)
    total, counts = counts.total, narrowed_counts(counts, structure, widths)
    fixes = get_method(method).fixes
    fixed = {fixes: 1.0} if fixes else {}
    given = {k: v for k, v in {"embedding": embedding, "svd": svd, "weight": weight}.items() if v is not None}
    for k, v in fixed.items():
        if given.get(k, v) != v:
            raise LadaError(f"method {method!r} fixes the {k} ratio at 1, got {given[k]}")
    given.update(fixed)
    for k, v in given.items():
        check_ratio(k, v)
    if len(given) != 2:
        need = "one of embedding, svd, weight" if fixed else "two of embedding, svd, weight"
        raise LadaError(f"give exactly {need} to solve for the other (got {sorted(k for k in given if k not in fixed)})")
    allowed = _compressible_budget(counts, target, total)
    if allowed <= 0:
        raise LadaError(
            f"target {target:g}x is unreachable: the parameters kept dense ({counts.dense:,}) already exceed "
            f"the budget of {total / target:,.0f} (total {total:,} / {target:g}); "
            f"the largest reachable target is below {total / counts.dense:.2f}x")
    if "embedding" in given:
        encoder = encoder_ratio(counts, target, given["embedding"], total)
        if encoder <= 0:
            raise LadaError(
                f"target {target:g}x is unreachable with embedding ratio {given['embedding']:g}: the embedding alone "
                f"keeps {given['embedding'] * counts.embedding:,.0f} of {allowed:,.0f} compressible parameters "
                f"allowed; use an embedding ratio below {allowed / counts.embedding:.4f}")
        if encoder > 1:
            raise LadaError(
                f"target {target:g}x needs no encoder compression with embedding ratio {given['embedding']:g} "
                f"(encoder ratio would be {encoder:.3f} > 1); use an embedding ratio above "
                f"{(allowed - counts.encoder) / counts.embedding:.4f}")
        if "svd" in given:
            ratios = dict(embedding=given["embedding"], svd=given["svd"], weight=encoder / given["svd"])
        else:
            ratios = dict(embedding=given["embedding"], svd=encoder / given["weight"], weight=given["weight"])
        solved = "weight" if "svd" in given else "svd"
        if ratios[solved] > 1:
            raise LadaError(
                f"target {target:g}x is unreachable with these ratios: the encoder must keep {encoder:.4f} of its "
                f"weights, above the {given['svd' if solved == 'weight' else 'weight']:g} given, so the {solved} "
                f"ratio would be {ratios[solved]:.3f} > 1")
    else:
        encoder = given["svd"] * given["weight"]
        emb = (allowed - encoder * counts.encoder) / counts.embedding
        if not 0 < emb <= 1:
            raise LadaError(
                f"target {target:g}x is unreachable with encoder ratio {encoder:.4f} (svd {given['svd']:g} x "
                f"weight {given['weight']:g}): the embedding ratio would be {emb:.4f}, outside (0, 1]")
        ratios = dict(embedding=emb, svd=given["svd"], weight=given["weight"])
    return Ratios(method=method, structure=structure, **ratios)


def paper_ratios(counts: ParamCount, target: float) -> Ratios:
    """The paper's Table 2 ratios for ``target`` (raises if the target is not in the table or if this model
    cannot meet it with the paper's embedding and SVD ratios; then the weight ratio is solved for this model)."""
    if target not in PAPER_TABLE2:
        raise LadaError(f"the paper gives ratios for {', '.join(f'{t:g}x' for t in PAPER_TABLE2)}, not {target:g}x")
    emb, svd, _ = PAPER_TABLE2[target]
    try:
        return solve(counts, target, embedding=1 / emb, svd=1 / svd)
    except LadaError as exc:
        raise LadaError(f"the paper's {target:g}x ratios (embedding 1/{emb:g}, svd 1/{svd:g}) do not fit this "
                        f"model: {exc}") from None
