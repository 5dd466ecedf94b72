"""The trial worker: one Ray Tune trial is one LadaBERT compression at a sampled point of the space.

    ratios = space.ratios(sampled config)        (infeasible: LadaError, the trial fails untrained; a sampled
                                                  structured_ratio < 1 is solved on the teacher's Widths)
    compress_model(...), every round scored on the validation rows, its after_eval hook reporting to Tune:
        each report    the round's numbers (RoundRecord.flat), score_at_target (NaN until the round is at the
                       target size) and the summary so far ('stopped_early')
        the last one   + the objectives (``objectives``: latency and size in the search's runtime), the
                       final summary ('completed') and the model as a checkpoint
so a trial that ASHA stops after any round still leaves a full typed summary behind.  A trial never
sees the dev split: the driver scores dev for the chosen model only.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..compress import MatrixPlan, ParamCount, Ratios, count_parameters, make_plan
from ..nn.shared import SharedState
from ..config import CompressionConfig, TrainConfig
from ..data import TaskSpec
from ..train.features import Features
from ..train.ladabert import CompressionResult, LoopHooks, compress_model
from ..registry import load_plugins
from ..runtime.timing import latency_ms
from ..serialize import save_compressed
from ..summary import MatrixRecord, ParamRecord, RoundRecord, TrialSummary
from ..train.teacher_outputs import TeacherCache
from .calibration import compression_params, trial_statistics
from .objectives import Measurements, MeasureSettings, measure_objectives
from .space import SearchSpace

if TYPE_CHECKING:
    from ..compress.calibration import CalibrationStats
    from ..compress.structure import Widths

SUMMARY_KEY = "summary_json"   # every report: the trial's TrialSummary so far, as JSON
PARAMS_KEY = "params_json"     # the first report: the trial's MLflow params (ratios, ranks, settings)


def reported_summary(result: dict | None) -> TrialSummary | None:
    """The summary a trial's report carries (None for a report without one)."""
    text = (result or {}).get(SUMMARY_KEY)
    return TrialSummary.from_json(json.loads(text)) if isinstance(text, str) else None


@dataclass(frozen=True)
class SummaryContext:
    """What every summary of the search records besides the compression (``TrialSummary`` field names)."""

    target: float
    model: str
    teacher: str
    teacher_score: float
    teacher_metrics: dict[str, float] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    space: str | None = None


@dataclass(frozen=True)
class TrialPayload:
    """Everything a trial needs, put once into Ray's object store by ``tune.with_parameters``.

    The teacher travels as config + state dict (a transformers module itself does not pickle).  The state and the
    statistics pickle as numpy arrays (``nn.shared``), so the trials map the object store's one copy of them.
    """

    teacher_config: object
    teacher_state: SharedState
    train: Features
    val: Features                 # what every round is scored on (held out of train); never dev
    task: TaskSpec
    counts: ParamCount
    space: SearchSpace
    train_cfg: TrainConfig
    compression: CompressionConfig
    threads: int
    max_length: int
    objectives: tuple[str, ...]
    context: SummaryContext
    runtime: str = "torch"        # where the latency and size objectives are measured
    stats: CalibrationStats | None = None   # gathered once by the driver for every plug-in the space may pick
    widths: Widths | None = None  # the teacher's unit counts, beside counts: set when the space removes units
    teacher_cache: TeacherCache | None = None   # the teacher's outputs, shared by the trials (``teacher_outputs``)

    def teacher(self) -> nn.Module:
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_config(self.teacher_config, attn_implementation="eager")
        # assigned, not copied: the teacher is only read (each student is a deep copy), so the trials of a search
        # share its weights in the object store instead of holding one copy each
        model.load_state_dict(self.teacher_state, assign=True)
        return model.eval()


def trial_params(ratios: Ratios, target: float, train_cfg: TrainConfig, plans: list[MatrixPlan]) -> dict[str, Any]:
    """The MLflow params of a trial: solved ratios, every rank, the training settings."""
    return {"method": ratios.method, "embedding_ratio": ratios.embedding, "svd_ratio": ratios.svd,
            "weight_ratio": ratios.weight, "encoder_ratio": ratios.encoder, "target": target,
            **({"structured_ratio": ratios.structure} if ratios.structure < 1 else {}),
            **{f"train.{k}": v for k, v in asdict(train_cfg).items() if k != "loss_weights"},
            **{f"train.loss_weights.{k}": v for k, v in asdict(train_cfg.loss_weights).items()},
            **{f"rank.{p.name}": p.rank() for p in plans if p.rank() is not None}}


def trained_steps(record: RoundRecord, train_cfg: TrainConfig) -> int:
    """Training steps a trial has run when ``record`` is scored: ASHA's resource (rungs at geometric step counts).

    The loop numbers its final distillation ``rounds + 1`` (or marks the last round final when it has none)."""
    done = min(record.round, train_cfg.rounds) * train_cfg.steps_per_round
    return done + (train_cfg.final_steps if record.final else 0)


class RoundReporter:
    """The loop's after_eval hook: one Tune report per round, with the trial's summary so far."""

    def __init__(self, payload: TrialPayload, config: dict, ratios: Ratios, plans: list[MatrixPlan],
                 teacher_params: ParamCount, train_cfg: TrainConfig, params: dict[str, Any]):
        self.payload, self.config, self.ratios, self.plans = payload, config, ratios, plans
        self.teacher_params, self.train_cfg = teacher_params, train_cfg
        self.pending = {PARAMS_KEY: json.dumps(params, default=str)}  # logged with the first report
        self.history: list[RoundRecord] = []

    def so_far(self, record: RoundRecord) -> TrialSummary:
        """The trial as it stands after ``record``: the matrices at that round's size."""
        fraction = min(record.round / self.train_cfg.rounds, 1.0)
        r, t = self.ratios, self.teacher_params
        return TrialSummary(
            task=self.payload.task.name, main_metric=self.payload.task.main_metric,
            ratios=r.record(), achieved_factor=record.achieved_factor,
            teacher_params=ParamRecord(t.embedding, t.encoder, t.dense), student_params=record.params,
            matrices=tuple(MatrixRecord(p.name, p.group, p.shape, p.rank(fraction), p.keep(fraction))
                           for p in self.plans),
            score=record.score, metrics=dict(record.metrics), history=tuple(self.history), status="stopped_early",
            score_split=record.split,
            factorizer=self.payload.compression.factorizer, prune_score=self.payload.compression.prune_score,
            distill=self.train_cfg.distill, config=dict(self.config), **asdict(self.payload.context))

    def report(self, record: RoundRecord, summary: TrialSummary, checkpoint=None,
               measured: Measurements | None = None) -> None:
        from ray import tune

        at_target = summary.score_at_target
        numbers: dict[str, Any] = {**record.flat(), "round": record.round, "steps": trained_steps(record, self.train_cfg),
                                   "score": record.score,
                                   "score_at_target": at_target if at_target is not None else math.nan}
        for name in self.payload.objectives[1:]:  # Tune wants every objective in every report: NaN until the final
            numbers[name] = measured.get(name) if measured is not None else math.nan
        tune.report({**numbers, **self.pending, SUMMARY_KEY: json.dumps(summary.to_json(), default=float)},
                    checkpoint=checkpoint)
        self.pending = {}

    def __call__(self, record: RoundRecord) -> None:
        self.history.append(record)
        if not record.final:  # the final record is reported with the model (see run_trial)
            self.report(record, self.so_far(record))


def run_trial(config: dict, payload: TrialPayload) -> None:
    """The Tune trainable: solve the ratios, compress round by round, report, checkpoint the model."""
    import ray
    from ray import tune

    torch.set_num_threads(payload.threads)
    load_plugins()  # this worker process resolves the plug-in names the driver resolved
    # the trial's factorizer and pruning score (sampled, or the run's): what its summary and params record
    payload = replace(payload, compression=payload.space.compression.config(payload.compression, config))
    device = torch.device("cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu")
    ratios = payload.space.ratios(config, payload.counts, payload.context.target, payload.widths)  # raises: untrained
    train_cfg = payload.space.train_config(payload.train_cfg, config)
    teacher = payload.teacher()
    plans = make_plan(teacher, ratios)
    stats = trial_statistics(payload.stats, payload.compression, plans)  # from the payload, never recomputed
    params = {**trial_params(ratios, payload.context.target, train_cfg, plans),
              **compression_params(payload.compression, stats),
              "ray.node_id": ray.get_runtime_context().get_node_id(), "device": str(device)}
    reporter = RoundReporter(payload, config, ratios, plans, count_parameters(teacher), train_cfg, params)
    result: CompressionResult = compress_model(teacher, payload.train, payload.val, payload.task, ratios, train_cfg,
                                               device, compression=payload.compression, stats=stats,
                                               hooks=LoopHooks(after_eval=reporter), eval_split="val",
                                               teacher_cache=payload.teacher_cache)
    summary = result.summary(config=dict(config), **asdict(payload.context))
    if result.teacher_reads is not None:  # logged with the final report: how much the shared cache saved
        reporter.pending[PARAMS_KEY] = json.dumps({"teacher_cache.read_back": result.teacher_reads[0],
                                                   "teacher_cache.computed": result.teacher_reads[1]})
    measured = measure_objectives(payload.objectives, result.student, summary,
                                  MeasureSettings(payload.runtime, seq_len=payload.max_length, threads=payload.threads,
                                                  device=str(device)))
    # without a latency objective the summary still records the student's batch-1 latency in PyTorch
    latency = measured.values["latency_ms"] if "latency_ms" in measured.values else \
        latency_ms(result.student, payload.max_length, device)
    summary = summary.with_(latency_ms=latency)
    with tempfile.TemporaryDirectory() as folder:
        save_compressed(result.student.cpu(), folder, summary)
        reporter.report(result.history[-1], summary, checkpoint=tune.Checkpoint.from_directory(folder),
                        measured=measured)
