"""Warm starts: a search's first trials are known-good points, enqueued before the sampler samples.

    corners   the all-SVD and the all-pruning encoder at the middle embedding
              ratio (the svd and prune methods where the space offers them as method choices, else the
              space's svd_split bounds) (the one that keeps the same share of the embedding as of the encoder: uniform
              compression, clipped to the space's range), and the paper's Table 2 ratios for the target where
              this model meets them in the space
    history   the best trial of each earlier search of the same model and task in the MLflow store, moved to
              the new target: its embedding keeps its share of the compressible budget (eq. 7), its split
              (the share of the encoder's reduction done by SVD) is kept; both clipped to the space's ranges;
              its method too where the space offers it
    all       history, then corners

``--warm-start none|corners|history|all``.  A point sets only the space's free ratio parameters (the
sampler fills the training knobs); equal points are enqueued once, at most ``--trials`` of them.  A space that
searches ``structured_ratio`` gets 1 (clipped to its range) at the corners and the paper's point, whose recipes
remove no heads or neurons, and the past best's own share in a history point.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ..compress.accounting import ParamCount
from ..compress.budget import PAPER_TABLE2, Budget, paper_ratios
from ..compress.methods import get_method
from ..errors import LadaError
from ..summary import RatioRecord
from .space import SearchSpace
from .space_param import Param

HISTORY_SEARCHES = 3   # earlier searches drawn on: those at the targets nearest the new one


@dataclass(frozen=True)
class PastBest:
    """The best trial of an earlier search, as its MLflow parent run records it."""

    search: str
    target: float
    ratios: RatioRecord
    val_score: float | None = None

    @property
    def svd_split(self) -> float:
        return svd_split_of(self.ratios)


def svd_split_of(ratios: RatioRecord) -> float:
    """The share of the encoder's reduction (in log terms) done by SVD (``budget.split_ratios`` inverted)."""
    encoder = ratios.encoder
    return 0.5 if encoder >= 1 else math.log(ratios.svd) / math.log(encoder)


@dataclass(frozen=True)
class WarmPoint:
    """One enqueued point: where it came from and the space's free parameters it sets."""

    source: str
    params: dict[str, float | str]   # a method choice is a name

    def to_json(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return f"{self.source} " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in self.params.items())


@dataclass(frozen=True)
class WarmContext:
    space: SearchSpace                # already bounded to what the budget allows at the target
    counts: ParamCount
    target: float
    history: tuple[PastBest, ...] = ()


def _fit(param: Param | None, value: float) -> float | None:
    """``value`` inside ``param``: clipped to a range, the nearest choice, or None when the parameter is fixed."""
    if param is None or param.fixed:
        return None
    if param.choices is not None:
        return min(param.choices, key=lambda c: abs(c - value))
    return min(max(value, param.low), param.high)


def _point(ctx: WarmContext, source: str, embedding: float, split: float | None, structure: float = 1.0,
           method: str | None = None) -> WarmPoint | None:
    """``method``: a name the space offers as a choice (None: the sampler's or the space's own method); a
    method that does not split takes no split."""
    splits = method is None or get_method(method).free_split
    values = {"embedding_ratio": _fit(ctx.space.embedding_ratio, embedding),
              "svd_split": _fit(ctx.space.svd_split, split) if splits and split is not None else None,
              "structured_ratio": _fit(ctx.space.structured_ratio, structure)}
    params: dict[str, float | str] = {k: float(v) for k, v in values.items() if v is not None}
    if method is not None:
        params = {"method": method, **params}
    return WarmPoint(source, params) if params else None


def _offered(space: SearchSpace, method: str) -> str | None:
    """``method`` when the space samples the method and offers this one, else None."""
    return method if space.method_choices is not None and method in space.methods else None


def _ends(param: Param) -> list[float]:
    return [param.value] if param.fixed else sorted({min(param.values()), max(param.values())})


def corners(ctx: WarmContext) -> list[WarmPoint]:
    space = ctx.space
    if space.paper:
        return []
    middle = Budget(ctx.counts, ctx.target).uniform_ratio()  # every matrix kept alike
    ends = _ends(space.svd_split)
    hybrid = _offered(space, "hybrid")                       # a choice to name, or None
    by_split = space.method_choices is None or hybrid is not None   # the space's split reaches its points
    points = []
    for pure, split in (("svd", ends[-1]), ("prune", ends[0])):  # all-SVD first, as the split's upper bound
        method = _offered(space, pure)
        if method is not None:
            points.append(_point(ctx, "corner", middle, None, method=method))
        elif by_split:
            points.append(_point(ctx, "corner", middle, split, method=hybrid))
    if by_split and ctx.target in PAPER_TABLE2 and space.svd_split is not None and not space.svd_split.fixed:
        try:
            paper = paper_ratios(ctx.counts, ctx.target)
        except LadaError:  # the paper's ratios do not fit this model
            paper = None
        emb = space.embedding_ratio
        if paper is not None and (emb.fixed or emb.choices is not None or emb.low <= paper.embedding <= emb.high):
            points.append(_point(ctx, "paper", paper.embedding, svd_split_of(paper.record()), method=hybrid))
    return [p for p in points if p is not None]


def transferred(ctx: WarmContext) -> list[WarmPoint]:
    if ctx.space.paper:
        return []
    here = Budget(ctx.counts, ctx.target)
    nearest = sorted(ctx.history, key=lambda p: abs(math.log(p.target / ctx.target)))[:HISTORY_SEARCHES]
    points = []
    for past in nearest:
        # the embedding keeps its share of what eq. 7 leaves to the embedding and the encoder
        embedding = here.embedding_ratio_for(Budget(ctx.counts, past.target).embedding_share(past.ratios.embedding))
        points.append(_point(ctx, f"history:{past.search}@{past.target:g}x", embedding, past.svd_split,
                             past.ratios.structure, method=_offered(ctx.space, past.ratios.method)))
    return [p for p in points if p is not None]


WARM_STARTS: dict[str, tuple[Callable[[WarmContext], list[WarmPoint]], ...]] = {
    "none": (),
    "corners": (corners,),
    "history": (transferred,),
    "all": (transferred, corners),
}


def warm_start_kind(name: str) -> tuple[Callable[[WarmContext], list[WarmPoint]], ...]:
    if name not in WARM_STARTS:
        raise LadaError(f"unknown warm start {name!r}; allowed: {', '.join(WARM_STARTS)}")
    return WARM_STARTS[name]


def plan(mode: str, ctx: WarmContext, limit: int) -> list[WarmPoint]:
    """The points to enqueue, in order, without repeats, at most ``limit``."""
    seen, out = set(), []
    for source in warm_start_kind(mode):
        for point in source(ctx):
            key = tuple(sorted((k, round(v, 6) if isinstance(v, float) else v) for k, v in point.params.items()))
            if key not in seen:
                seen.add(key)
                out.append(point)
    return out[:limit]


def past_bests(runs, exclude: str | None = None) -> list[PastBest]:
    """The best trials recorded on earlier searches' parent runs (``tracking.Tracker.past_searches``)."""

    found = []
    for run in runs:
        best, target = run.best, run.search_tags.target
        if run.run_id == exclude or best is None or target is None:  # none yet, or a parent written by hand
            continue
        ratios = RatioRecord(best.method, best.embedding_ratio, best.svd_ratio, best.weight_ratio,
                             best.structured_ratio)
        found.append(PastBest(run.search, target, ratios, best.val_score))
    return found


def warm_points(mode: str, ctx: WarmContext, limit: int, tracker, model: str, task: str,
                parent_id: str | None = None) -> list[WarmPoint]:
    """``plan`` with the history read from the MLflow store (only when the mode uses it)."""
    if transferred in warm_start_kind(mode):
        ctx = WarmContext(ctx.space, ctx.counts, ctx.target,
                          tuple(past_bests(tracker.past_searches(model, task), exclude=parent_id)))
    return plan(mode, ctx, limit)
