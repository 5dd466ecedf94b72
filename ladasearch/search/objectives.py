"""What a search optimizes: the objectives ``--objective`` picks from, and the runtimes ``--runtime`` measures in.

    score       the final student's dev score (the compression loop's own evaluation)         maximize
    latency_ms  milliseconds of one forward pass in the runtime, batch 1 x the data's max_length   minimize
    size_bytes  bytes of the weights file the runtime deploys (model.safetensors / model.onnx)  minimize

Latency and size are measured on the deployable form of the student (``runtime.hf.deploy_model``: masks
folded, factors merged where the dense matrix is cheaper, SDPA attention), written once per trial in the
search's runtime and shared by both objectives:

    torch      model.safetensors as ``export-model --format hf`` writes it; timed in PyTorch on the trial's device
    onnx       model.onnx (fp32, opset 17) as ``--format onnx`` writes it; timed in onnxruntime on the CPU
    onnx-int8  that graph dynamically quantized (``--format onnx-int8``, without the export's accuracy gate:
               the score objective stays the fp32 student's); timed in onnxruntime on the CPU

Adding an objective is one class and one registry entry; the runtimes are the deployment targets of
``runtime.formats`` (the classes ``export-model --format`` writes with), by their ``--runtime`` names.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from itertools import combinations
from pathlib import Path

from torch import nn

from ..errors import LadaError
from ..runtime.formats import RUNTIMES, Deployed, get_runtime  # noqa: F401  (RUNTIMES: --runtime's names)
from ..runtime.hf import deploy_model
from ..runtime.inputs import max_length, random_inputs
from ..runtime.timing import time_interleaved
from ..summary import TrialSummary


@dataclass(frozen=True)
class MeasureSettings:
    """How a trial's final student is measured: runtime, input shape, timed runs, threads, torch device."""

    runtime: str = "torch"
    batch: int = 1
    seq_len: int = 64
    runs: int = 10
    warmup: int = 2
    threads: int = 1
    device: str = "cpu"


class MeasureContext:
    """A trial's final student and its record; the deployable form is built once, on first use, in a
    scratch folder that ``close`` (or leaving the ``with`` block) removes."""

    def __init__(self, student: nn.Module, summary: TrialSummary, settings: MeasureSettings):
        get_runtime(settings.runtime)
        self.student, self.summary, self.settings = student, summary, settings
        self.folder = Path(tempfile.mkdtemp(prefix="ladasearch-objectives-"))

    @cached_property
    def exported(self) -> nn.Module:
        """The inference form every runtime deploys (a copy: the student is left as it is, on its device)."""
        import copy

        return deploy_model(copy.deepcopy(self.student), self.summary)

    @cached_property
    def deployed(self) -> Deployed:
        return get_runtime(self.settings.runtime).deploy(self.exported, self.folder, threads=self.settings.threads,
                                                         device=self.settings.device)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> MeasureContext:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Objective(ABC):
    """One ``--objective``: its metric name (what Tune and ``trials.json`` call it), direction and measurement."""

    name: str = ""
    option: str = ""        # the short name ``--objective`` also accepts
    direction: str = "max"  # Tune's mode: max or min
    unit: str = ""          # of the value shown in reports and plots: value / scale
    scale: float = 1.0

    def axis(self, runtime: str) -> str:
        return f"{self.option} ({self.unit}, {runtime})" if self.unit else self.option

    @abstractmethod
    def measure(self, student: nn.Module, context: MeasureContext) -> float:
        """The objective's value for the trial's final ``student``."""


class ScoreObjective(Objective):
    name, option, direction = "score", "score", "max"

    def measure(self, student, context) -> float:
        if context.summary.score is None:
            raise LadaError("the student has no score to optimize")
        return float(context.summary.score)


class LatencyObjective(Objective):
    name, option, direction, unit = "latency_ms", "latency", "min", "ms"

    def measure(self, student, context) -> float:
        s, deployed = context.settings, context.deployed
        shape_of = context.exported
        inputs = random_inputs(shape_of, s.batch, max_length(shape_of, s.seq_len), seed=s.batch,
                               device=deployed.device)
        timing = time_interleaved({"model": deployed.runner(inputs)}, s.runs, s.warmup, deployed.device)["model"]
        return timing.median_ms


class SizeObjective(Objective):
    name, option, direction, unit, scale = "size_bytes", "size", "min", "MiB", 2.0 ** 20

    def measure(self, student, context) -> float:
        return float(context.deployed.file.stat().st_size)


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (ScoreObjective(), LatencyObjective(), SizeObjective())}


def get_objective(name: str) -> Objective:
    """The objective ``name`` (its metric name or its ``--objective`` short name)."""
    for objective in OBJECTIVES.values():
        if name in (objective.name, objective.option):
            return objective
    raise LadaError(f"unknown objective {name!r}; allowed: {', '.join(o.option for o in OBJECTIVES.values())}")


def parse_objectives(text: str) -> tuple[str, ...]:
    """``--objective`` text (e.g. 'score,latency,size') as the objectives' metric names."""
    return tuple(get_objective(part.strip()).name for part in text.split(",") if part.strip())


def check_objectives(names: tuple[str, ...], runtime: str) -> None:
    """LadaError unless ``names`` are known, distinct and start with score, and ``runtime`` is known and used."""
    if not names or names[0] != "score" or len(set(names)) != len(names) or any(n not in OBJECTIVES for n in names):
        others = [n for n in OBJECTIVES if n != "score"]
        sets = [",".join(("score", *c)) for k in range(1, len(others) + 1) for c in combinations(others, k)]
        raise LadaError(f"objectives must be 'score' or {', '.join(repr(x) for x in sets)} (score first, the others "
                        f"in any order, each once); got {','.join(names)!r}")
    get_runtime(runtime)
    if runtime != "torch" and len(names) == 1:
        raise LadaError(f"runtime {runtime!r} only matters with a latency or size objective; add one "
                        f"(e.g. --objective score,latency,size) or leave --runtime out")


@dataclass(frozen=True)
class Measurements:
    """The values of a trial's objectives for its final student, by metric name, and where they were measured."""

    runtime: str
    values: dict[str, float] = field(default_factory=dict)

    def get(self, name: str) -> float:
        """The value of ``name``; NaN when it was not measured (what Tune gets in a report before the final one)."""
        return self.values.get(name, math.nan)


def measure_objectives(names: tuple[str, ...], student: nn.Module, summary: TrialSummary,
                       settings: MeasureSettings) -> Measurements:
    """Every objective of ``names`` for the final ``student``, deployed once in ``settings.runtime``."""
    with MeasureContext(student, summary, settings) as context:
        return Measurements(settings.runtime, {n: get_objective(n).measure(student, context) for n in names})
