"""Compression ops: the budget of eq. 7, the methods, SVD factorization and pruning behind plug-in registries,
structured removal of heads and FFN neurons, factorized layers, parameter accounting."""

from ..nn.layers import FactorizedEmbedding, FactorizedLinear, replace_module
from . import data_scores, weighted_svd  # noqa: F401  (the data-aware plug-ins register themselves on import)
from .accounting import GROUPS, ParamCount, compressible_modules, count_parameters
from .budget import (PAPER_TABLE2, Budget, Ratios, budget, encoder_ratio, feasible_embedding, paper_ratios, parse_target,
                     solve, split_ratios)
from .factorizers import SvdFactorizer, refactor, truncated_factors
from .methods import METHODS, CompressionMethod, get_method, method_names, register_method
from .plan import MatrixPlan, compress_step, make_plan, planned_count, svd_rank
from .registry import (Factorizer, PruningScore, get_factorizer, get_pruning_score, register_factorizer,
                       register_pruning_score)
from .scores import MagnitudeScore
from .structure import StructurePlan, Widths
from .unit_scores import UNIT_SCORES, UnitScore, get_unit_score, register_unit_score

__all__ = [
    "Budget", "GROUPS", "METHODS", "method_names", "register_method", "PAPER_TABLE2", "CompressionMethod", "FactorizedEmbedding", "FactorizedLinear",
    "Factorizer", "MagnitudeScore", "MatrixPlan", "ParamCount", "PruningScore", "Ratios", "SvdFactorizer", "budget",
    "compress_step", "compressible_modules", "count_parameters", "encoder_ratio", "feasible_embedding",
    "get_factorizer", "get_method", "get_pruning_score", "make_plan", "paper_ratios", "parse_target",
    "planned_count", "refactor", "register_factorizer", "register_pruning_score", "replace_module", "solve",
    "split_ratios", "svd_rank", "truncated_factors", "StructurePlan", "UNIT_SCORES", "UnitScore", "Widths",
    "get_unit_score", "register_unit_score",
]
