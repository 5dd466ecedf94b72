"""The search driver: Ray Tune schedules the trials, Optuna samples the space, MLflow records them.

    settings -> data (train / val / dev) + teacher (fine-tuned once on train, cached)
             + calibration statistics of every plug-in the space may pick (gathered once, cached)
             -> TrialPayload (train + val, never dev) in Ray's object store
             -> rung 0 (``screen``: random points compressed untrained, scored on val; the best enqueued)
             -> Tuner(StudySearch with the warm starts enqueued + ASHA over training steps) -> trials (worker.run_trial)
             -> MLflow via callbacks -> results.finish (best trial on val, its dev score, Pareto front, plots)
             -> final_stage (the best trial distilled to the final budget: the model shipped, scored on dev)

State lives in ``<storage>/<name>/`` (Tune's experiment folder, and the Optuna study's journal
``optuna_study.log``: ``study``) and ``<storage>/<name>.ladasearch.json`` (``settings.SavedSearch``:
what a resume restores).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ..compress import count_parameters
from ..compress.structure import Widths
from ..nn.shared import SharedState
from ..config import DataConfig, TrainConfig
from ..data import TaskSpec
from ..errors import LadaError
from ..models import load_classifier, pick_device
from ..jobs.pipeline import data_record, prepare, prepare_teacher
from ..jobs.teacher import default_cache_dir
from ..jobs.teacher_identity import TeacherIdentity
from ..tracking import SearchTags, Tracker, resolve_tracking_uri
from .calibration import search_statistics
from .callbacks import MlflowTrials, Progress
from .cluster import NodeWatch, connect, init_ray, probe  # noqa: F401 - init_ray: the package's public name
from .dev_eval import DevSet
from .final_stage import FinalStage
from .locks import search_lock
from .recorded import recorded_outcome
from .results import SearchOutcome, finish
from .samplers import make_sampler, search_seed
from .screen import screen, screened_warm_points
from .settings import OBJECTIVES, SPEC_SUFFIX, SavedSearch, SearchConfig, SearchSettings, spec_path
from .signals import sigterm_as_sigint
from .space import SearchSpace
from .store import open_store
from .study import OBJECTIVE, make_searcher
from .trust import TUNER_STATE, check_trusted
from .warm_start import WarmContext, WarmPoint, warm_points
from .worker import SummaryContext, TrialPayload, run_trial


@dataclass(frozen=True)
class Built:
    """What the driver prepares before any trial runs."""

    payload: TrialPayload
    space: SearchSpace            # the settings' space, clipped to what the budget allows
    tokenizer: object             # saved beside the best model
    teacher_score: float
    dev: DevSet                   # scored for the chosen model(s) only, after the search


def file_params(data: DataConfig, task: TaskSpec) -> dict[str, object]:
    """MLflow params of a task given by files or a dataset: where its rows are, how they are read, its classes and
    metric."""
    if data.train_file is None and data.dataset is None:
        return {}
    names = ("train_file", "dev_file", "val_file", "dataset", "dataset_config", "train_split", "val_split",
             "text_column", "text_pair_column", "label_column")
    dataset = data.dataset_task()
    return {**{f"data.{k}": getattr(data, k) for k in names if getattr(data, k) is not None},
            **({"data.dev_split": dataset.dev_split} if dataset is not None else {}),  # resolved: the split scored
            "data.labels": ",".join(task.label_names), "data.metric": task.main_metric,
            "data.regression": task.is_regression}


def _build(settings: SearchSettings, log: Callable[[str], None]) -> Built:
    """Data, teacher and payload of a search (fresh run or resume)."""
    cfg, data_cfg = settings.search, settings.data
    device = pick_device(settings.device)
    prepared = prepare(data_cfg, settings.model, settings.teacher_path)
    task = prepared.data.task
    # the budget depends on the architecture alone: an infeasible space fails before the teacher is trained
    architecture = load_classifier(settings.teacher_source, task.num_labels, task.is_regression)
    counts = count_parameters(architecture)
    # heads and neurons per layer, for the trials that remove some (a non-BERT config fails here, untrained)
    widths = Widths.of(architecture.config) if settings.space.structured else None
    space = settings.space.bounded(counts, cfg.target)
    teacher = prepare_teacher(prepared, data_cfg, settings.model, settings.teacher, device,
                              Path(settings.cache_dir) if settings.cache_dir else None, settings.teacher_path, log)
    context = SummaryContext(target=cfg.target, model=settings.model, teacher=str(teacher.path),
                             teacher_score=teacher.score, teacher_metrics=dict(teacher.metrics),
                             data=data_record(prepared, data_cfg), space=space.name)
    payload = TrialPayload(
        teacher_config=teacher.model.config,
        teacher_state=SharedState({k: v.detach().cpu() for k, v in teacher.model.state_dict().items()}),
        train=prepared.train, val=prepared.val, task=task, counts=counts, space=space, train_cfg=settings.train,
        compression=settings.compression, threads=max(1, int(cfg.cpus_per_trial)), max_length=data_cfg.max_length,
        objectives=cfg.objectives, context=context, runtime=cfg.runtime,
        stats=search_statistics(settings, space, teacher, prepared, device, log), widths=widths,  # once, for all
        teacher_cache=cfg.teacher_cache)
    return Built(payload, space, prepared.tokenizer, teacher.score, DevSet(prepared.dev, task, device))


@dataclass(frozen=True)
class TunerArgs:
    """What a new Tuner is made from."""

    settings: SearchSettings
    space: SearchSpace
    trainable: object
    tracker: Tracker
    parent_id: str
    tags: SearchTags              # MLflow tags of the parent and every trial run
    run_params: dict[str, object]  # MLflow params every trial run shares
    warm: tuple[WarmPoint, ...] = ()  # enqueued first


def _trainable(payload: TrialPayload, settings: SearchSettings):
    from ray import tune

    cfg = settings.search
    resources = {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(run_trial, payload=payload), resources)


def make_scheduler(cfg: SearchConfig, space: SearchSpace, train_cfg: TrainConfig):
    """ASHA over training steps (its rungs at geometric step counts, whatever the rounds of a trial), or FIFO.

    ASHA stops on the score alone, also with latency/size objectives: a trial it stops has none measured (they
    are measured on the final model), so the sampler learns from the completed trials only.
    """
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if cfg.scheduler != "asha":
        return FIFOScheduler()
    horizon = space.max_steps(train_cfg)
    grace = min(cfg.grace_period or max(train_cfg.steps_per_round, 1), horizon)
    return ASHAScheduler(time_attr="steps", metric="score", mode="max", max_t=horizon, grace_period=grace,
                         reduction_factor=cfg.reduction_factor)


def _new_tuner(args: TunerArgs):
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    cfg, train_cfg = args.settings.search, args.settings.train
    multi = cfg.multi_objective
    # the sampler is told the validation score at the target size only (``study``), never an intermediate one
    metric = [OBJECTIVE if o == "score" else o for o in cfg.objectives] if multi else OBJECTIVE
    mode = [OBJECTIVES[o] for o in cfg.objectives] if multi else "max"
    seed = search_seed(cfg.seed, args.tags.task, cfg.target)
    sampler = make_sampler(cfg.sampler, seed, multi, cfg.num_samples, cfg.startup_trials)
    searcher = ConcurrencyLimiter(make_searcher(args.space.define_by_run, metric, mode, sampler,
                                                [dict(p.params) for p in args.warm], cfg.folder, cfg.name),
                                  max_concurrent=cfg.max_concurrent)
    scheduler = make_scheduler(cfg, args.space, train_cfg)
    callbacks = [MlflowTrials(args.tracker, args.parent_id, args.tags, args.run_params),
                 Progress(cfg.num_samples, "val score", cfg.target)]
    return tune.Tuner(
        args.trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=cfg.num_samples,
                                    reuse_actors=False),
        run_config=tune.RunConfig(name=cfg.name, storage_path=str(cfg.folder.parent), callbacks=callbacks,
                                  failure_config=tune.FailureConfig(max_failures=0), verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))


def run_search(settings: SearchSettings, *, log: Callable[[str], None] = print) -> SearchOutcome:
    """Run a new search named ``settings.search.name`` (LadaError if one with that name already exists)."""
    if settings.cache_dir is None and settings.teacher_path is None:  # the spec names the cache a resume uses
        settings = replace(settings, cache_dir=str(default_cache_dir().resolve()))
    cfg = settings.search
    with search_lock(cfg.folder.parent, cfg.name), sigterm_as_sigint():  # a second run of the name fails here
        if cfg.spec_file.exists() or cfg.folder.exists():
            raise LadaError(f"a search named {cfg.name!r} already exists in {cfg.folder.parent}; "
                            f"resume it with `ladasearch resume {cfg.name}` or pick another --name")
        return _execute(settings, None, log)


def resume_search(name: str, storage: str = "ladasearch_runs", *, log: Callable[[str], None] = print,
                  allow_other_teacher: bool = False) -> SearchOutcome:
    """Continue an interrupted search: finished trials, their MLflow runs and the sampler state are kept.

    A complete search is reported as recorded and left alone.  The runs folder is trusted input (Ray Tune
    unpickles its state), so one that other users can write is refused (``trust``).
    """
    path = spec_path(storage, name)
    if not path.is_file():
        known = sorted(p.name.removesuffix(SPEC_SUFFIX) for p in path.parent.glob(f"*{SPEC_SUFFIX}"))
        raise LadaError(f"no search named {name!r} in {path.parent}" + (f"; known: {', '.join(known)}" if known else ""))
    with search_lock(path.parent, name), sigterm_as_sigint():
        check_trusted(path.parent, name, path)
        saved = SavedSearch.read(path)
        cfg = saved.settings.search
        tracker = open_store(resolve_tracking_uri(cfg.tracking_uri), cfg.experiment)
        done = recorded_outcome(tracker, name, saved.parent_run_id, log)
        if done is not None:
            return done
        return _execute(saved.settings, saved.parent_run_id, log, saved.teacher, allow_other_teacher)


def _execute(settings: SearchSettings, parent_id: str | None, log: Callable[[str], None],
             saved_teacher: TeacherIdentity | None = None, allow_other_teacher: bool = False) -> SearchOutcome:
    """Check the store and cluster, build, connect to Ray, then record the MLflow parent run (new, or the saved
    one on resume) and the spec, run the Tuner, finish.  Nothing is recorded before Ray is reached."""
    from ray import tune

    cfg = settings.search
    probe(cfg.address, cfg.connect_timeout)  # an unreachable cluster or store fails before the teacher is made
    tracker = open_store(resolve_tracking_uri(cfg.tracking_uri), cfg.experiment)
    if parent_id is None:  # a name is one search per store: `export NAME` must not have to pick between two
        other = tracker.find_search(cfg.name)
        if other is not None:
            raise LadaError(f"the MLflow store already records a search named {cfg.name!r} (parent run "
                            f"{other.run_id}) under another --storage; pick another --name, or resume that one "
                            f"from its --storage")
    built = _build(settings, log)
    teacher = TeacherIdentity.of(built.payload.context.teacher, built.payload.teacher_state)
    if saved_teacher is not None:
        saved_teacher.check(teacher, allow_other_teacher, log)
    task = built.payload.task.name
    tags = SearchTags(task, cfg.target, settings.model, built.space.name)
    run_params = {"target": cfg.target, "task": task, "model": settings.model, "space": built.space.name,
                  "sampler": cfg.sampler, "scheduler": cfg.scheduler, "teacher_score": built.teacher_score,
                  "max_length": settings.data.max_length, **file_params(settings.data, built.payload.task)}

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ray_session = connect(cfg.address, cfg.connect_timeout, log)  # connect first, record after
    watch = None
    try:
        resuming, warm = parent_id is not None, []
        if resuming:
            tracker.reopen(parent_id)
            log(f"resuming search {cfg.name} (MLflow parent run {parent_id})")
        else:
            parent_id = tracker.start_search(cfg.name, tags, {**run_params, "num_samples": cfg.num_samples,
                                                              "max_concurrent": cfg.max_concurrent,
                                                              "objectives": ",".join(cfg.objectives)})
            tracker.log_json(parent_id, settings.space.to_dict(), "search_space.json")
            SavedSearch(settings, parent_id, teacher).write()
            tracker.log_metrics(parent_id, {"teacher_score": built.teacher_score})
            log(f"search {cfg.name}: {cfg.num_samples} trials, target {cfg.target:g}x, space {built.space.name}, "
                f"MLflow parent run {parent_id} at {tracker.tracking_uri}")
            warm = warm_points(cfg.warm_start, WarmContext(built.space, built.payload.counts, cfg.target),
                               cfg.num_samples, tracker, settings.model, task, parent_id)
            if cfg.screen:
                points = screen(built.payload, cfg.screen, search_seed(cfg.seed, task, cfg.target),
                                built.dev.device, log)
                tracker.log_json(parent_id, {"screened": len(points), "points": [p.to_json() for p in points]},
                                 "screen.json")
                warm += screened_warm_points(points, cfg.num_samples - len(warm))
            tracker.log_json(parent_id, [p.to_json() for p in warm], "warm_starts.json")
            if warm:
                log(f"warm starts ({cfg.warm_start}): " + "; ".join(p.describe() for p in warm))

        watch = NodeWatch(lambda why: _node_died(tracker, parent_id, cfg.name, why))
        trainable = _trainable(built.payload, settings)
        if resuming and (cfg.folder / TUNER_STATE).is_file():
            tuner = tune.Tuner.restore(str(cfg.folder), trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=False)
        else:  # a new search, or one stopped after it was recorded but before Ray Tune saved any state
            tuner = _new_tuner(TunerArgs(settings, built.space, trainable, tracker, parent_id, tags, run_params,
                                         tuple(warm)))
        final = FinalStage(settings, built.payload, built.dev.device, log)
        outcome = finish(cfg, tuner.fit(), tracker, parent_id, built.tokenizer, log, built.dev, final)
        if cfg.teacher_cache is not None:  # gigabytes no later run of this search reads (a resume recomputes)
            shutil.rmtree(cfg.teacher_cache.folder, ignore_errors=True)
    except BaseException:
        if parent_id is not None:
            tracker.finish(parent_id, "KILLED")
        raise
    finally:
        if watch is not None:
            watch.stop()
        if ray_session.owned:
            import ray

            ray.shutdown()
    return outcome


def _node_died(tracker: Tracker, parent_id: str, name: str, why: str) -> str:
    """Record a search whose Ray node died (``NodeWatch``): its runs FAILED; the line the user reads."""
    tracker.fail_search(parent_id, why)
    return (f"search {name} cannot go on: {why}. Its MLflow parent run {parent_id} is FAILED; the finished trials "
            f"are kept and `ladasearch resume {name}` continues it")
