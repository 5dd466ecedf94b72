"""Rung 0: configurations screened untrained, so the trials train only the most promising ones.

Each screened point is a configuration of the space (sampled at random, seeded by the search) compressed to its
target in one shot, from the calibration statistics the trials use (no training step), and scored on the
validation rows (no training: each point costs one compression and one validation pass, not yet timed
on MiniLM against a trained trial); the best of them are
enqueued as trials after the warm starts.  A screened score is never a trial's: it never ranks at the target,
and nothing but the enqueued order depends on it.  All of them are listed in the parent run's ``screen.json``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from ..compress import make_plan
from ..errors import LadaError
from ..train.ladabert import TrialFailed, compress_model
from .calibration import trial_statistics
from .warm_start import WarmPoint
from .worker import TrialPayload


@dataclass(frozen=True)
class ScreenedPoint:
    params: dict              # the space's free parameters, as a trial would be given them
    score: float | None       # validation score of the untrained student at the target size (None: it failed)
    achieved_factor: float | None
    seconds: float
    error: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def screen(payload: TrialPayload, count: int, seed: int, device, log: Callable[[str], None]) -> list[ScreenedPoint]:
    """``count`` random configurations compressed in one shot and scored on validation, best first."""
    import optuna

    space, target = payload.space, payload.context.target
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    teacher = payload.teacher()
    one_shot = replace(payload.train_cfg, rounds=1, steps_per_round=0, final_steps=0)
    points = []
    for number in range(1, count + 1):
        trial = study.ask()
        constants = space.define_by_run(trial)
        params = dict(trial.params)
        config = {**params, **constants}
        started = time.perf_counter()
        try:
            ratios = space.ratios(config, payload.counts, target, payload.widths)
            compression = space.compression.config(payload.compression, config)
            stats = trial_statistics(payload.stats, compression, make_plan(teacher, ratios))
            result = compress_model(teacher, payload.train, payload.val, payload.task, ratios, one_shot, device,
                                    compression=compression, stats=stats, eval_split="val")
        except (LadaError, TrialFailed) as exc:  # an infeasible point fails here as it would as a trial
            points.append(ScreenedPoint(params, None, None, time.perf_counter() - started, str(exc)))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        score = result.score if math.isfinite(result.score) else None
        points.append(ScreenedPoint(params, score, result.achieved_factor, time.perf_counter() - started))
        if score is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, score)
        log(f"screen {number}/{count}: val {payload.task.main_metric} "
            + (f"{score:.4f}" if score is not None else "n/a") + f" untrained at {result.achieved_factor:.2f}x, "
            f"{points[-1].seconds:.0f}s")
    return sorted(points, key=lambda p: -p.score if p.score is not None else math.inf)


def screened_warm_points(points: list[ScreenedPoint], room: int) -> list[WarmPoint]:
    """The best ``room`` screened points that compressed, as enqueued trials."""
    return [WarmPoint(f"screened (untrained val {p.score:.4f})", p.params) for p in points
            if p.score is not None][:max(room, 0)]
