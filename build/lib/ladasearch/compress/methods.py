"""The compression methods: what each one does to every matrix, and so how it spends the budget of eq. 7.

    hybrid  LadaBERT: SVD of every matrix, then pruning of the factors
    svd     SVD alone (nothing pruned: the weight ratio is 1)
    prune   pruning of the dense matrices alone (nothing factorized: the svd ratio is 1)

A method is an object picked by name (``get_method``); the budget solver, the plan, the search space
and the CLI ask it, never switch on its name.  ``Ratios.method`` stores the name.  Another method is a
``CompressionMethod`` instance given to ``register_method`` (its two flags say what it does to each matrix).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import LadaError
from ..registry import Registry

if TYPE_CHECKING:
    from .budget import Ratios


@dataclass(frozen=True)
class CompressionMethod:
    name: str
    description: str
    factorizes: bool       # every matrix becomes SVD factors (rank from its svd share)
    prunes: bool           # pruning keeps the matrix's whole share of eq. 7 as non-zero entries
    default_split: float   # a search space's svd_split: the share (in log terms) of the encoder's reduction by SVD

    def __post_init__(self):
        if not (self.factorizes or self.prunes):
            raise ValueError(f"method {self.name!r} neither factorizes nor prunes")

    @property
    def fixes(self) -> str | None:
        """The ratio this method holds at 1 (what it does not do keeps everything), None for hybrid."""
        return None if self.factorizes and self.prunes else "svd" if self.prunes else "weight"

    @property
    def free_split(self) -> bool:
        """Whether a search space may sample the SVD-vs-pruning split (only when no ratio is fixed)."""
        return self.fixes is None

    def check(self, ratios: Ratios) -> None:
        """LadaError when ``ratios`` does not hold this method's fixed ratio at 1."""
        if self.fixes is not None and getattr(ratios, self.fixes) != 1.0:
            omits = "factorizes nothing" if self.fixes == "svd" else "prunes nothing"
            raise LadaError(f"method {self.name!r} {omits}, so the {self.fixes} ratio must be 1, "
                            f"got {getattr(ratios, self.fixes)}")

    def matrix_shares(self, group: str, ratios: Ratios) -> tuple[float | None, float | None]:
        """For a matrix of ``group``: (share kept as SVD factors, None: not factorized;
        share of its m*n entries kept as non-zeros, None: not pruned).  In hybrid the embedding's
        pruning only trims the excess of its rounded-up rank."""
        embedding = group == "embedding"
        svd = (ratios.embedding if embedding else ratios.svd) if self.factorizes else None
        keep = (ratios.embedding if embedding else ratios.encoder) if self.prunes else None
        return svd, keep


METHODS: Registry[CompressionMethod] = Registry("method", CompressionMethod)
for _method in (CompressionMethod("hybrid", "LadaBERT (SVD, then pruning of the factors)", True, True, 0.5),
                CompressionMethod("svd", "SVD only", True, False, 1.0),
                CompressionMethod("prune", "pruning only", False, True, 0.0)):
    METHODS.register(_method)
register_method = METHODS.register


def get_method(name: str) -> CompressionMethod:
    return METHODS.create(name)


def method_names() -> tuple[str, ...]:
    """Every registered method (the built-in three and any a plug-in added)."""
    return METHODS.names()
