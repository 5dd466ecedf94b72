"""The calibration statistics of a search: gathered once, in the driver, shipped to every trial.

The driver asks the cache (``calibration_cache``) for the union of what every factorizer and pruning
score the space may pick needs, so one gathering serves every trial; the statistics travel in the
``TrialPayload`` through Ray's object store with the teacher.  A trial takes them from there and never
gathers them itself: statistics that do not cover what it picked are an error, not a silent recomputation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..jobs.calibration_cache import CalibrationRequest, cached_statistics
from ..compress.calibration import plugin_needs
from ..compress.methods import get_method
from ..errors import LadaError

if TYPE_CHECKING:
    from ..compress.calibration import CalibrationStats
    from ..compress.plan import MatrixPlan
    from ..config import CompressionConfig
    from ..jobs.pipeline import Prepared
    from ..jobs.teacher import Teacher
    from .settings import SearchSettings
    from .space import SearchSpace


def search_needs(space: SearchSpace, base: CompressionConfig) -> frozenset[str]:
    """What the plug-ins a trial of ``space`` may pick read (only the factorizers when the method prunes
    nothing, only the scores when it factorizes nothing)."""
    names, methods = space.compression.candidates(base), [get_method(m) for m in space.methods]
    return plugin_needs(names["factorizer"] if any(m.factorizes for m in methods) else (),
                        names["prune_score"] if any(m.prunes for m in methods) else ())


def search_statistics(settings: SearchSettings, space: SearchSpace, teacher: Teacher, prepared: Prepared, device,
                      log: Callable[[str], None]) -> CalibrationStats | None:
    """The statistics every trial of the search may read (None when no plug-in of the space reads any)."""
    request = CalibrationRequest(search_needs(space, settings.compression), settings.compression.calibration_batches,
                                 settings.train.batch_size, settings.data.max_length)
    return cached_statistics(teacher, prepared, request, device, settings.cache_dir, log)


def trial_statistics(shared: CalibrationStats | None, compression: CompressionConfig,
                     plans: Sequence[MatrixPlan]) -> CalibrationStats | None:
    """The payload's statistics for a trial's plug-ins (None when they read none)."""
    needs = plugin_needs((compression.factorizer,), (compression.prune_score,), plans)
    if not needs:
        return None
    if shared is None or not shared.covers(needs):
        have = ", ".join(sorted(shared.needs)) if shared is not None else "none"
        raise LadaError(f"the trial's {compression.factorizer} + {compression.prune_score} need the calibration "
                        f"statistics {', '.join(sorted(needs))}; the search gathered: {have}")
    return shared


def compression_params(compression: CompressionConfig, stats: CalibrationStats | None) -> dict[str, Any]:
    """A trial's MLflow params of its plug-ins and where their statistics came from."""
    params: dict[str, Any] = {"factorizer": compression.factorizer, "prune_score": compression.prune_score,
                              "structure_score": compression.structure_score,
                              "calibration.source": "payload" if stats is not None else "none"}
    if stats is not None:
        params.update({"calibration.batches": stats.batches, "calibration.examples": stats.examples,
                       "calibration.needs": ",".join(sorted(stats.needs))})
    return params
