"""The settings of a search, as one frozen record: what a run starts from and what a resume restores.

``SearchSettings`` holds the data, teacher, training and compression (plug-in) configs, the search
space, the search's own options (``SearchConfig``) and where the model and teacher come from.  ``SavedSearch`` is the spec
file ``<storage>/<name>.ladasearch.json``: the settings plus the MLflow parent run, written once when
the search starts and read back as is by ``ladasearch resume``.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..config import CompressionConfig, DataConfig, FinalBudget, LossWeights, TeacherConfig, TrainConfig
from ..errors import LadaError
from ..io import write_json_atomic
from ..jobs.teacher_identity import TeacherIdentity
from ..train.teacher_outputs import TeacherCache
from .objectives import OBJECTIVES as MEASURED
from .objectives import check_objectives
from .samplers import sampler_kind
from .space import SearchSpace
from .warm_start import warm_start_kind

SCHEDULERS = ("asha", "fifo")
OBJECTIVES = {name: o.direction for name, o in MEASURED.items()}  # Tune's mode of each objective
SPEC_SUFFIX = ".ladasearch.json"
NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")   # a folder name on every OS, also in a tag filter


def spec_path(storage: str | Path, name: str) -> Path:
    return Path(storage).resolve() / f"{name}{SPEC_SUFFIX}"


@dataclass(frozen=True)
class SearchConfig:
    """How the search itself runs: trials, resources, sampler, scheduler, objectives, where state goes."""

    name: str
    target: float
    num_samples: int = 8
    max_concurrent: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    sampler: str = "tpe"
    scheduler: str = "asha"
    objectives: tuple[str, ...] = ("score",)
    seed: int = 0
    startup_trials: int | None = None   # random trials before TPE/GP model the results (None: scaled to budget)
    address: str | None = None          # None: a private local Ray; 'auto', HOST:PORT or ray://HOST:PORT join one
    connect_timeout: float = 30.0       # seconds to reach the cluster at ``address``
    storage: str = "ladasearch_runs"
    tracking_uri: str | None = None
    experiment: str = "ladasearch"
    warm_start: str = "all"             # known-good first trials (``warm_start.WARM_STARTS``)
    # ASHA: training steps every trial runs before it may be stopped (None: one round's).  A spec saved when this
    # counted rounds holds 1 here, which stops at the same first report as one round did.
    grace_period: int | None = None
    reduction_factor: float = 2.0       # ASHA: 1/reduction_factor of the trials go on at each rung
    runtime: str = "torch"              # where latency and size objectives are measured (``runtime.formats.RUNTIMES``)
    screen: int = 0                     # rung 0: configurations compressed untrained and scored (``screen``)
    teacher_cache_gb: float = 4.0       # disk for the teacher's outputs the trials share (0: recompute them)

    def __post_init__(self):
        if not isinstance(self.name, str) or not NAME.fullmatch(self.name):
            shown = self.name if not isinstance(self.name, str) or len(self.name) <= 60 else self.name[:60] + "..."
            raise LadaError(f"search name {shown!r} must be a plain folder name: 1 to 100 characters from A-Z a-z "
                            f"0-9 . _ -, not starting with '.'")
        if isinstance(self.connect_timeout, bool) or not isinstance(self.connect_timeout, (int, float)) \
                or not 0 < self.connect_timeout <= 3600:
            raise LadaError(f"connect timeout must be in (0, 3600] seconds, got {self.connect_timeout!r}")
        if isinstance(self.teacher_cache_gb, bool) or not isinstance(self.teacher_cache_gb, (int, float)) \
                or not 0 <= self.teacher_cache_gb <= 1024:
            raise LadaError(f"--teacher-cache-gb must be in [0, 1024] GiB, got {self.teacher_cache_gb!r}")
        for key, option in (("num_samples", "--trials"), ("max_concurrent", "--concurrency")):
            if isinstance(getattr(self, key), bool) or not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise LadaError(f"{option} must be an integer >= 1, got {getattr(self, key)!r}")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise LadaError(f"cpus per trial must be > 0 and gpus >= 0, got {self.cpus_per_trial}, "
                            f"{self.gpus_per_trial}")
        sampler_kind(self.sampler)
        warm_start_kind(self.warm_start)
        if self.grace_period is not None and (isinstance(self.grace_period, bool)
                                              or not isinstance(self.grace_period, int) or self.grace_period < 1):
            raise LadaError(f"grace_period must be an integer >= 1 (training steps) or unset (one round's steps), "
                            f"got {self.grace_period!r}")
        if isinstance(self.reduction_factor, bool) or not isinstance(self.reduction_factor, (int, float)) \
                or not self.reduction_factor > 1:
            raise LadaError(f"reduction_factor must be a number > 1, got {self.reduction_factor!r}")
        if self.scheduler not in SCHEDULERS:
            raise LadaError(f"unknown scheduler {self.scheduler!r}; allowed: {', '.join(SCHEDULERS)}")
        if self.startup_trials is not None and (not isinstance(self.startup_trials, int) or self.startup_trials < 1):
            raise LadaError(f"startup_trials must be an integer >= 1, got {self.startup_trials!r}")
        if isinstance(self.screen, bool) or not isinstance(self.screen, int) or not 0 <= self.screen <= 1000:
            raise LadaError(f"screen must be a number of configurations in [0, 1000], got {self.screen!r}")
        check_objectives(self.objectives, self.runtime)
        sampler_kind(self.sampler, self.multi_objective)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def folder(self) -> Path:
        return Path(self.storage).resolve() / self.name

    @property
    def teacher_cache(self) -> TeacherCache | None:
        """The teacher's outputs the trials share (``teacher_outputs``), in the search's folder; None when off."""
        if not self.teacher_cache_gb:
            return None
        return TeacherCache(self.folder / "teacher_outputs", int(self.teacher_cache_gb * 2**30))

    @property
    def spec_file(self) -> Path:
        return spec_path(self.storage, self.name)


@dataclass(frozen=True)
class SearchSettings:
    """Everything a search runs from; saved with the search and restored as is on resume."""

    data: DataConfig
    model: str
    search: SearchConfig
    space: SearchSpace
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)   # the factorizer and pruning score
    teacher_path: str | None = None     # a fine-tuned folder used as is (no fine-tuning)
    device: str = "auto"                # of the driver's teacher fine-tuning; trials use what Ray gives them
    cache_dir: str | None = None        # teacher cache (None: $LADASEARCH_CACHE)
    final: FinalBudget = field(default_factory=FinalBudget)   # the best trial's training after the search

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model:
            raise LadaError(f"the search's model must be a model name or folder, got {self.model!r}")

    @property
    def teacher_source(self) -> str:
        """Where the teacher's architecture and tokenizer come from."""
        return self.teacher_path or self.model

    def to_json(self) -> dict[str, Any]:
        return {"data": asdict(self.data), "teacher": asdict(self.teacher), "train": asdict(self.train),
                "compression": asdict(self.compression), "search": {**asdict(self.search), "objectives": list(self.search.objectives)},
                "space": self.space.to_dict(), "model": self.model, "teacher_path": self.teacher_path,
                "device": self.device, "cache_dir": self.cache_dir, "final": asdict(self.final)}

    @classmethod
    def from_json(cls, data: Any, where: str = "search settings") -> SearchSettings:
        if not isinstance(data, dict):
            raise LadaError(f"{where} must be a JSON object, got {type(data).__name__}")
        try:
            train = dict(data["train"])
            search = dict(data["search"])
            # specs written before validation rules existed carved random rows: resumed, they still do
            return cls(data=DataConfig(**{"val_rule": "rows", **data["data"]}), model=data["model"],
                       search=SearchConfig(**{**search, "objectives": tuple(search["objectives"])}),
                       space=SearchSpace.from_dict(data["space"]), teacher=TeacherConfig(**data["teacher"]),
                       train=TrainConfig(**{**train, "loss_weights": LossWeights(**train["loss_weights"])}),
                       compression=CompressionConfig(**data.get("compression", {})),  # older specs: the defaults
                       teacher_path=data.get("teacher_path"), device=data.get("device", "auto"),
                       cache_dir=data.get("cache_dir"),
                       final=FinalBudget(**data.get("final", {})))  # older specs: no final budget
        except KeyError as exc:
            raise LadaError(f"{where} has no {exc.args[0]!r}") from None
        except TypeError as exc:  # an unknown or missing field of one of the configs
            raise LadaError(f"{where} does not match this version of ladasearch: {exc}") from None


@dataclass(frozen=True)
class SavedSearch:
    """A search's spec file: its settings, its MLflow parent run and the teacher its trials distil."""

    settings: SearchSettings
    parent_run_id: str
    teacher: TeacherIdentity | None = None   # None in specs written before teachers were recorded

    def to_json(self) -> dict[str, Any]:
        return {**self.settings.to_json(), "parent_run_id": self.parent_run_id,
                "teacher_identity": self.teacher.to_json() if self.teacher else None}

    def write(self) -> Path:
        path = self.settings.search.spec_file
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_json_atomic(path, self.to_json())

    @classmethod
    def read(cls, path: Path) -> SavedSearch:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise LadaError(f"could not read the search spec {path}: {exc}") from None
        where = f"search spec {path}"
        if not isinstance(data, dict) or not isinstance(data.get("parent_run_id"), str):
            raise LadaError(f"{where} has no MLflow parent run id")
        known = {f.name for f in fields(SearchSettings)}
        return cls(SearchSettings.from_json({k: v for k, v in data.items() if k in known}, where),
                   data["parent_run_id"], TeacherIdentity.from_json(data.get("teacher_identity"), where))
