"""The search: Ray Tune schedules the trials, Optuna samples the ratios, each trial runs the core.

    driver:  data + teacher (fine-tuned once, cached)  ->  payload in Ray's object store
             Tuner(OptunaSearch + ASHA over rounds)  ->  trials  ->  MLflow via callbacks
    trial:   ratios = space.ratios(sampled config)   (rejected with a reason if infeasible)
             compress_model(...) reporting every round to Tune; the final model as a checkpoint

State lives in ``<storage>/<name>/`` (Tune's experiment folder, with Optuna's state inside the
searcher checkpoint) and ``<storage>/<name>.ladasearch.json`` (what a resume needs).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .compress import ParamCount, count_parameters, make_plan
from .config import DataConfig, LossWeights, TeacherConfig, TrainConfig
from .data import TaskSpec
from .errors import LadaError
from .features import Features
from .models import load_classifier, pick_device
from .pipeline import prepare, prepare_teacher
from .serialize import save_compressed
from .space import SearchSpace
from .trial import compress_model

SAMPLERS = ("tpe", "random", "cmaes", "qmc", "nsga2", "gp")
SCHEDULERS = ("asha", "fifo")
OBJECTIVES = {"score": "max", "latency_ms": "min"}


@dataclass(frozen=True)
class SearchConfig:
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
    address: str | None = None
    storage: str = "ladasearch_runs"
    tracking_uri: str | None = None
    experiment: str = "ladasearch"

    def __post_init__(self):
        if not self.name or any(c in self.name for c in "/\\") or self.name.startswith("."):
            raise LadaError(f"search name {self.name!r} must be a plain folder name")
        for key in ("num_samples", "max_concurrent"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise LadaError(f"{key} must be an integer >= 1, got {getattr(self, key)!r}")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise LadaError(f"cpus per trial must be > 0 and gpus >= 0, got {self.cpus_per_trial}, "
                            f"{self.gpus_per_trial}")
        if self.sampler not in SAMPLERS:
            raise LadaError(f"unknown sampler {self.sampler!r}; allowed: {', '.join(SAMPLERS)}")
        if self.scheduler not in SCHEDULERS:
            raise LadaError(f"unknown scheduler {self.scheduler!r}; allowed: {', '.join(SCHEDULERS)}")
        if self.startup_trials is not None and (not isinstance(self.startup_trials, int) or self.startup_trials < 1):
            raise LadaError(f"startup_trials must be an integer >= 1, got {self.startup_trials!r}")
        bad = [o for o in self.objectives if o not in OBJECTIVES]
        if bad or not self.objectives or self.objectives[0] != "score":
            raise LadaError(f"objectives must be 'score' or 'score,latency_ms', got {','.join(self.objectives)!r}")

    @property
    def folder(self) -> Path:
        return Path(self.storage).resolve() / self.name

    @property
    def spec_file(self) -> Path:
        return Path(self.storage).resolve() / f"{self.name}.ladasearch.json"


@dataclass
class TrialPayload:
    """Everything a trial needs, put once into Ray's object store by ``tune.with_parameters``.

    The teacher travels as config + state dict (a transformers module itself does not pickle).
    """

    teacher_config: object
    teacher_state: dict
    train: Features
    dev: Features
    task: TaskSpec
    counts: ParamCount
    target: float
    space: SearchSpace
    train_cfg: TrainConfig
    threads: int
    max_length: int
    objectives: tuple[str, ...] = ("score",)
    extras: dict = field(default_factory=dict)

    def teacher(self) -> nn.Module:
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_config(self.teacher_config, attn_implementation="eager")
        model.load_state_dict(self.teacher_state)
        return model.eval()


@torch.inference_mode()
def latency_ms(model: nn.Module, seq_len: int, device, repeats: int = 10) -> float:
    """Median latency of one batch-1 forward pass at ``seq_len`` tokens (on CUDA: until the kernels finish)."""
    model.eval()
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    ids = torch.randint(1000, 2000, (1, seq_len), device=device)
    for _ in range(2):
        model(input_ids=ids)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        model(input_ids=ids)
        sync()
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2]


def run_trial(config: dict, payload: TrialPayload) -> None:
    """The Tune trainable: solve the ratios, compress round by round, report, checkpoint the model."""
    import ray
    from ray import tune

    torch.set_num_threads(payload.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu")
    ratios = payload.space.ratios(config, payload.counts, payload.target)  # raises: rejected, no training
    train_cfg = payload.space.train_config(payload.train_cfg, config)
    teacher = payload.teacher()
    plans = make_plan(teacher, ratios)
    params = {"method": ratios.method, "embedding_ratio": ratios.embedding, "svd_ratio": ratios.svd,
              "weight_ratio": ratios.weight, "encoder_ratio": ratios.encoder, "target": payload.target,
              **{f"train.{k}": v for k, v in asdict(train_cfg).items() if k != "loss_weights"},
              **{f"train.loss_weights.{k}": v for k, v in asdict(train_cfg.loss_weights).items()},
              **{f"rank.{p.name}": p.rank() for p in plans if p.rank() is not None},
              "ray.node_id": ray.get_runtime_context().get_node_id(), "device": str(device)}
    once = {"params_json": json.dumps(params)}  # logged as MLflow params with the first report
    final_rows = []

    def on_round(row: dict) -> None:
        if row["final"]:
            final_rows.append(row)
            return
        extra = {**once, "latency_ms": math.nan} if "latency_ms" in payload.objectives else dict(once)
        once.clear()  # Tune wants every objective in every report; latency is measured on the final model
        tune.report({**row, **extra})

    result = compress_model(teacher, payload.train, payload.dev, payload.task, ratios, train_cfg, device,
                            callback=on_round)
    final = dict(final_rows[-1])
    final["latency_ms"] = latency_ms(result.student, payload.max_length, device)
    summary = {**result.summary(), "config": config, "task": payload.task.name,
               "main_metric": payload.task.main_metric, "target": payload.target, "latency_ms": final["latency_ms"],
               "distill": train_cfg.distill, "space": payload.space.name, **payload.extras}
    with tempfile.TemporaryDirectory() as folder:
        save_compressed(result.student.cpu(), folder, summary)
        tune.report({**final, **once, "summary_json": json.dumps(summary, default=float)},
                    checkpoint=tune.Checkpoint.from_directory(folder))


# ---- the driver ------------------------------------------------------------------------------

def startup_trials(num_samples: int) -> int:
    """Random trials before a model-based sampler takes over, scaled to the budget: a third of the trials,
    at least 2 and at most Optuna's default of 10 (with Optuna's 10 a 16-trial search was random search)."""
    return min(10, max(2, num_samples // 3))


def _sampler(name: str, seed: int, multi: bool, num_samples: int, startup: int | None = None):
    import optuna

    startup = startup or startup_trials(num_samples)
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=startup),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed),
        # a generation of Optuna's default 50 would be a random search at these budgets
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, startup)),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup),
    }
    if multi and name in ("cmaes", "gp"):
        raise LadaError(f"sampler {name!r} is single-objective; use tpe, nsga2 or random with latency")
    return samplers[name]()


def _trainable(payload: TrialPayload, cfg: SearchConfig):
    from ray import tune

    resources = {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(run_trial, payload=payload), resources)


def _init_ray(address: str | None) -> bool:
    """Connect to ``address`` or start a local Ray; True when this call started it."""
    import ray

    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_worker_niceness", "0")  # Ray's default (15) starves trials on a shared machine
    # a failed trial's traceback goes to its error.txt and MLflow tag; the terminal gets one line (Progress)
    logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 configure_logging=True)
    except Exception as exc:  # Ray raises bare Exceptions for start-up time-outs
        where = f"the Ray cluster at {address!r}" if address else "a local Ray"
        raise LadaError(f"could not start or reach {where}: {str(exc).splitlines()[0]}") from None
    return True


@dataclass
class SearchOutcome:
    name: str
    parent_run_id: str
    trials: list[dict]            # one per trial: config, status, score, achieved_factor, ratios
    best: dict | None             # the best finished trial's summary
    best_model: Path | None       # its checkpoint folder (a ladasearch model folder)
    pareto: list[dict]            # non-dominated trials when latency is an objective
    interrupted: bool = False     # stopped (Ctrl-C / SIGINT) before every trial ended; resume to go on


def _build(spec: dict, log: Callable[[str], None]):
    """Data, teacher and payload from a search spec (fresh run or resume)."""
    data_cfg = DataConfig(**spec["data"])
    teacher_cfg = TeacherConfig(**spec["teacher"])
    train = dict(spec["train"])
    train_cfg = TrainConfig(**{**train, "loss_weights": LossWeights(**train["loss_weights"])})
    cfg = SearchConfig(**{**spec["search"], "objectives": tuple(spec["search"]["objectives"])})
    space = SearchSpace.from_dict(spec["space"])
    device = pick_device(spec["device"])
    prepared = prepare(data_cfg, spec["model"], spec.get("teacher_path"))
    task = prepared.data.task
    # the budget depends on the architecture alone: an infeasible space fails before the teacher is trained
    counts = count_parameters(load_classifier(spec.get("teacher_path") or spec["model"], task.num_labels,
                                              task.is_regression))
    bounded = space.bounded(counts, cfg.target)
    teacher = prepare_teacher(prepared, data_cfg, spec["model"], teacher_cfg, device,
                              Path(spec["cache_dir"]) if spec.get("cache_dir") else None, spec.get("teacher_path"),
                              log)
    payload = TrialPayload(
        teacher_config=teacher.model.config,
        teacher_state={k: v.detach().cpu() for k, v in teacher.model.state_dict().items()},
        train=prepared.train, dev=prepared.dev, task=task, counts=counts,
        target=cfg.target, space=bounded, train_cfg=train_cfg, threads=max(1, int(cfg.cpus_per_trial)),
        max_length=data_cfg.max_length, objectives=cfg.objectives,
        extras={"model": spec["model"], "teacher": str(teacher.path), "teacher_score": teacher.score,
                "data": prepared.data.source})
    return cfg, payload, prepared, teacher, bounded, train_cfg


def run_search(data_cfg: DataConfig, model: str, teacher_cfg: TeacherConfig, train_cfg: TrainConfig,
               space: SearchSpace, cfg: SearchConfig, *, teacher_path: str | None = None, device: str = "auto",
               cache_dir: str | None = None, log: Callable[[str], None] = print) -> SearchOutcome:
    """Run a new search named ``cfg.name`` (LadaError if one with that name already exists)."""
    if cfg.spec_file.exists() or cfg.folder.exists():
        raise LadaError(f"a search named {cfg.name!r} already exists in {cfg.folder.parent}; "
                        f"resume it with `ladasearch resume {cfg.name}` or pick another --name")
    spec = {"data": asdict(data_cfg), "teacher": asdict(teacher_cfg), "train": asdict(train_cfg),
            "search": {**asdict(cfg), "objectives": list(cfg.objectives)}, "space": space.to_dict(), "model": model,
            "teacher_path": teacher_path, "device": device, "cache_dir": cache_dir}
    return _execute(spec, resume=False, log=log)


def resume_search(name: str, storage: str = "ladasearch_runs", log: Callable[[str], None] = print) -> SearchOutcome:
    """Continue an interrupted search: finished trials, their MLflow runs and the sampler state are kept."""
    spec_file = Path(storage).resolve() / f"{name}.ladasearch.json"
    if not spec_file.is_file():
        known = sorted(p.name.removesuffix(".ladasearch.json") for p in Path(storage).glob("*.ladasearch.json"))
        raise LadaError(f"no search named {name!r} in {Path(storage).resolve()}"
                        + (f"; known: {', '.join(known)}" if known else ""))
    return _execute(json.loads(spec_file.read_text()), resume=True, log=log)


def _execute(spec: dict, resume: bool, log: Callable[[str], None]) -> SearchOutcome:
    from ray import tune

    from .tracking import Tracker, resolve_tracking_uri

    tracking_uri = resolve_tracking_uri(spec["search"]["tracking_uri"])  # an unusable store fails first
    cfg, payload, prepared, teacher, space, train_cfg = _build(spec, log)
    tracker = Tracker(tracking_uri, cfg.experiment)
    tags = {"ladasearch.task": payload.task.name, "ladasearch.target": f"{cfg.target:g}x",
            "ladasearch.model": spec["model"], "ladasearch.space": space.name}
    settings = {"target": cfg.target, "task": payload.task.name, "model": spec["model"], "space": space.name,
                "sampler": cfg.sampler, "scheduler": cfg.scheduler, "teacher_score": teacher.score,
                "max_length": payload.max_length}
    if resume:
        parent_id = spec["parent_run_id"]
        tracker.client.update_run(parent_id, status="RUNNING")
        log(f"resuming search {cfg.name} (MLflow parent run {parent_id})")
    else:
        parent_id = tracker.start_search(cfg.name, tags, {**settings, "num_samples": cfg.num_samples,
                                                          "max_concurrent": cfg.max_concurrent,
                                                          "objectives": ",".join(cfg.objectives)})
        tracker.log_json(parent_id, spec["space"], "search_space.json")
        cfg.spec_file.parent.mkdir(parents=True, exist_ok=True)
        cfg.spec_file.write_text(json.dumps({**spec, "parent_run_id": parent_id}, indent=2))
        tracker.log_metrics(parent_id, {"teacher_score": teacher.score})
        log(f"search {cfg.name}: {cfg.num_samples} trials, target {cfg.target:g}x, space {space.name}, "
            f"MLflow parent run {parent_id} at {tracker.tracking_uri}")

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started_ray = _init_ray(cfg.address)
    try:
        trainable = _trainable(payload, cfg)
        if resume:
            tuner = tune.Tuner.restore(str(cfg.folder), trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=False)
        else:
            tuner = _new_tuner(cfg, space, train_cfg, trainable, tracker, parent_id, tags, settings)
        grid = tuner.fit()
        outcome = _finish(cfg, grid, tracker, parent_id, prepared.tokenizer, log)
    except BaseException:
        tracker.finish(parent_id, "KILLED")
        raise
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    return outcome


def _new_tuner(cfg, space, train_cfg, trainable, tracker, parent_id, tags, settings):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from .search_callbacks import MlflowTrials, Progress

    multi = len(cfg.objectives) > 1
    metric = list(cfg.objectives) if multi else "score"
    mode = [OBJECTIVES[o] for o in cfg.objectives] if multi else "max"
    sampler = _sampler(cfg.sampler, cfg.seed, multi, cfg.num_samples, cfg.startup_trials)
    searcher = ConcurrencyLimiter(OptunaSearch(space=space.define_by_run, metric=metric, mode=mode, sampler=sampler),
                                  max_concurrent=cfg.max_concurrent)
    rounds = max(space.train["rounds"].values()) if "rounds" in space.train else train_cfg.rounds
    final = 1 if train_cfg.final_steps else 0
    if cfg.scheduler == "asha" and not multi:
        scheduler = ASHAScheduler(time_attr="round", metric="score", mode="max", max_t=rounds + final,
                                  grace_period=1, reduction_factor=2)
    else:  # ASHA ranks one metric; a latency/score front is searched without early stopping
        scheduler = FIFOScheduler()
    callbacks = [MlflowTrials(tracker, parent_id, tags, settings),
                 Progress(cfg.num_samples, "score", cfg.target)]
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=cfg.num_samples,
                                    reuse_actors=False),
        run_config=tune.RunConfig(name=cfg.name, storage_path=str(cfg.folder.parent), callbacks=callbacks,
                                  failure_config=tune.FailureConfig(max_failures=0), verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))


def _pareto(rows: list[dict]) -> list[dict]:
    """Trials no other trial beats on both score (higher) and latency (lower)."""
    front = []
    for r in rows:
        dominated = any(o["score"] >= r["score"] and o["latency_ms"] <= r["latency_ms"]
                        and (o["score"] > r["score"] or o["latency_ms"] < r["latency_ms"]) for o in rows)
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: r["latency_ms"])


def trial_summaries(grid) -> list[dict]:
    """Summaries of every trial that reported: full for finished ones, score + history for early-stopped ones."""
    from .search_callbacks import round_metrics

    summaries = []
    for result in grid:
        metrics = result.metrics or {}
        if "summary_json" in metrics:
            summaries.append(json.loads(metrics["summary_json"]))
        elif not result.error and "score" in metrics:
            frame = result.metrics_dataframe
            history = [round_metrics(row) for row in frame.to_dict("records")] if frame is not None else []
            summaries.append({"config": result.config, "score": metrics["score"], "stopped_early": True,
                              "achieved_factor": metrics.get("achieved_factor"), "history": history,
                              "target": metrics.get("target")})
    return summaries


def _log_plots(grid, tracker, parent_id: str, log) -> None:
    """Score vs compression with the Pareto front, learning curves, ratio split -> parent run's plots/."""
    from .export.plots import learning_curves, pareto_plot, ratio_split

    summaries = trial_summaries(grid)
    if not summaries:
        return
    with tempfile.TemporaryDirectory() as folder:
        made = []
        for plot, name in ((pareto_plot, "score_vs_compression.png"), (learning_curves, "learning_curves.png"),
                           (ratio_split, "ratio_split.png")):
            try:
                made.append(plot(summaries, Path(folder) / name))
            except LadaError as exc:  # e.g. no finished trial to split
                log(f"plot {name} skipped: {exc}")
        for path in made:
            tracker.log_artifact(parent_id, path, "plots")


def _finish(cfg: SearchConfig, grid, tracker, parent_id: str, tokenizer, log) -> SearchOutcome:
    """Best trial -> parent run (metrics, summary, model, plots); the search's table of trials."""
    rows = []
    best = None
    for result in grid:
        metrics = result.metrics or {}
        row = {"trial_id": metrics.get("trial_id") or (result.path and Path(result.path).name),
               "status": "failed" if result.error else "completed" if "summary_json" in metrics else "stopped_early",
               "score": metrics.get("score"), "achieved_factor": metrics.get("achieved_factor"),
               "round": metrics.get("round"), "latency_ms": metrics.get("latency_ms"), "config": result.config}
        rows.append(row)
        if row["status"] == "completed" and result.checkpoint is not None:
            if best is None or row["score"] > best[0]["score"]:
                best = (row, result)
    finished = [r for r in rows if r["status"] == "completed"]
    # Ray Tune ends fit() quietly on Ctrl-C (state saved); every trial has ended only when the search is complete
    interrupted = grid.num_terminated + grid.num_errors < cfg.num_samples
    _log_plots(grid, tracker, parent_id, log)
    pareto = _pareto([r for r in finished if r["latency_ms"] is not None]) if len(cfg.objectives) > 1 else []
    tracker.log_json(parent_id, {"trials": rows, "pareto": pareto}, "trials.json")
    best_summary, best_model = None, None
    if best is not None:
        row, result = best
        best_summary = json.loads(result.metrics["summary_json"])
        best_model = Path(result.checkpoint.path)
        if tokenizer is not None and not (best_model / "tokenizer_config.json").exists():
            tokenizer.save_pretrained(best_model)
        tracker.log_artifacts(parent_id, best_model, "best_model")
        tracker.log_json(parent_id, best_summary, "best_summary.json")
        tracker.log_metrics(parent_id, {"best_score": row["score"], "best_achieved_factor": row["achieved_factor"],
                                        "best_latency_ms": row["latency_ms"] or math.nan})
        tracker.set_tags(parent_id, {"ladasearch.best_trial": row["trial_id"]})
        label = "best trial so far" if interrupted else "best trial"
        log(f"{label} {row['trial_id']}: {best_summary['main_metric']} {row['score']:.4f} at "
            f"{row['achieved_factor']:.3f}x (teacher {best_summary.get('teacher_score', float('nan')):.4f}); "
            f"model in {best_model}")
    else:
        log("no trial finished; nothing to export (see the failed trials' errors above)")
    tracker.log_metrics(parent_id, {"trials_completed": len(finished),
                                    "trials_failed": sum(r["status"] == "failed" for r in rows)})
    if interrupted:
        log(f"search {cfg.name} interrupted after {len(finished)} of {cfg.num_samples} trials; continue it with "
            f"`ladasearch resume {cfg.name} --storage {cfg.folder.parent}`")
    tracker.finish(parent_id, "KILLED" if interrupted else "FINISHED")
    return SearchOutcome(cfg.name, parent_id, rows, best_summary, best_model, pareto, interrupted)
