"""Compression ops: SVD factorization, magnitude pruning, factorized layers, parameter accounting."""

from .accounting import GROUPS, ParamCount, compressible_modules, count_parameters
from .budget import METHODS, PAPER_TABLE2, Ratios, budget, paper_ratios, parse_target, solve
from .factorized import FactorizedEmbedding, FactorizedLinear
from .plan import MatrixPlan, compress_step, make_plan, planned_count
from .svd import refactor, svd_rank, truncated_factors

__all__ = [
    "GROUPS", "METHODS", "PAPER_TABLE2", "FactorizedEmbedding", "FactorizedLinear", "MatrixPlan", "ParamCount",
    "Ratios", "budget", "compress_step", "compressible_modules", "count_parameters", "make_plan", "paper_ratios",
    "parse_target", "planned_count", "refactor", "solve", "svd_rank", "truncated_factors",
]
