"""The `ladasearch` command line."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import click

from .common import (
    OneLineErrors,
    compression_config,
    compression_options,
    data_config,
    job_options,
    method_option,
    teacher_config,
    train_config,
    train_options,
    user_errors,
)
from .deploy import register as register_deploy_commands
from .export import register as register_export_commands
from .serve import serve
from ..compress import parse_target
from ..jobs.compress import compress_once
from ..config import FinalBudget
from ..errors import LadaError
from ..registry import load_plugins
from ..search import SearchConfig, SearchSettings, SearchSpace, resume_search, run_search
from ..search.objectives import parse_objectives
from ..search.samplers import SAMPLERS
from ..search.store import check_sqlite
from ..search.warm_start import WARM_STARTS
from ..summary import OUTCOMES
from ..tracking import DEFAULT_STORE, Tracker, resolve_tracking_uri


@click.group(cls=OneLineErrors)
@click.version_option(package_name="ladasearch")
def main():
    """Find the best LadaBERT compression of a BERT classifier at a target size, and produce it."""
    load_plugins()  # names a plug-in package registers resolve in every command (and --help lists them)


@main.command()
@job_options
@train_options
@method_option
@compression_options
@click.option("--target", required=True, help="Reduction factor, e.g. 10x.")
@click.option("--embedding-ratio", type=float, default=None, help="Share of the word embedding kept, in (0, 1].")
@click.option("--svd-ratio", type=float, default=None, help="Share of each encoder matrix kept as SVD factors.")
@click.option("--weight-ratio", type=float, default=None, help="Share of factor entries kept by pruning.")
@click.option("--paper-ratios", is_flag=True, help="Use the paper's Table 2 embedding and SVD ratios.")
@click.option("--structured-ratio", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Share of each layer's attention heads and FFN neurons kept, in (0, 1]; 1 removes none (the "
                   "paper). The other ratios then apply to the narrowed matrices.")
@click.option("--out", default=None, help="Output folder (default compressed/<task>-<target>x).")
@user_errors
def compress(**kw):
    """Compress once with given ratios (two of them; the third is solved from the budget)."""

    data_cfg = data_config(kw)
    out = Path(kw["out"] or f"compressed/{data_cfg.task}-{kw['target'].rstrip('xX')}x")
    summary = compress_once(
        data_cfg=data_cfg, model=kw["model"], teacher_path=kw["teacher_path"],
        teacher_cfg=teacher_config(kw), train_cfg=train_config(kw), target=kw["target"],
        compression=compression_config(kw), method=kw["method"], embedding=kw["embedding_ratio"],
        svd=kw["svd_ratio"], weight=kw["weight_ratio"], paper=kw["paper_ratios"], structure=kw["structured_ratio"],
        out=out, device=kw["device"], cache_dir=kw["cache_dir"], log=click.echo)
    click.echo(f"saved {out} (achieved {summary.achieved_factor:.3f}x, dev {summary.main_metric} "
               f"{summary.dev_score:.4f}, val {summary.score:.4f}, teacher dev {summary.teacher_score:.4f})")
    record = summary.to_json()
    click.echo(json.dumps({k: record[k] for k in ("ratios", "achieved_factor", "score", "dev_score")}, default=float))


def _echo_outcome(outcome) -> None:
    counts = ", ".join(f"{sum(t.outcome == o for t in outcome.trials)} {o.replace('_', ' ')}" for o in OUTCOMES)
    click.echo(f"search {outcome.name}: {len(outcome.trials)} trials: {counts}; "
               f"MLflow parent run {outcome.parent_run_id}")
    for row in outcome.pareto:
        measured = [f"latency {row.latency_ms:.2f} ms" if row.latency_ms is not None else "",
                    f"size {row.size_bytes / 2 ** 20:.2f} MiB" if row.size_bytes is not None else ""]
        click.echo(f"  pareto: score {row.score:.4f}, {', '.join(m for m in measured if m)}, "
                   f"{row.achieved_factor:.2f}x (trial {row.trial_id})")
    if outcome.best_model:
        click.echo(f"best model: {outcome.best_model}")
        click.echo(f"see it in the UI: ladasearch ui   |   table: ladasearch export {outcome.name}")
    if outcome.interrupted:
        sys.exit(130)  # the shell's code for a Ctrl-C; the search can be resumed


@main.command()
@job_options
@train_options
@compression_options
@click.option("--target", required=True, help="Reduction factor, e.g. 10x.")
@click.option("--space", "space_name", default="default", show_default=True,
              help="Search space: a YAML file or a name in search_spaces/ (default, structured, ratios, "
                   "paper, svd_only, prune_only, no_distill).")
@click.option("--trials", default=8, show_default=True, type=int, help="Number of trials.")
@click.option("--concurrency", default=2, show_default=True, type=int, help="Trials running at once.")
@click.option("--cpus-per-trial", default=1.0, show_default=True, type=float)
@click.option("--gpus-per-trial", default=0.0, show_default=True, type=float, help="Fractions allowed, e.g. 0.5.")
@click.option("--sampler", default="tpe", show_default=True, help=f"Optuna sampler: {', '.join(SAMPLERS)}.")
@click.option("--startup-trials", default=None, type=int,
              help="Random trials before tpe/gp/nsga2 model the results [default: a third of --trials, 2 to 10].")
@click.option("--scheduler", default="asha", show_default=True,
              help="asha (early stopping over training steps) or fifo.")
@click.option("--grace-period", default=None, type=click.IntRange(min=1),
              help="ASHA: training steps every trial runs before it may be stopped; the rungs follow at this "
                   "times --reduction-factor^k steps [default: one round's steps].")
@click.option("--reduction-factor", default=2.0, show_default=True, type=float,
              help="ASHA: only 1/this of the trials go on at each rung.")
@click.option("--warm-start", type=click.Choice(WARM_STARTS), default="all", show_default=True,
              help="First trials: corners (all-SVD and all-pruning encoder at a middle embedding ratio, and the "
                   "paper's ratios where they fit), history (the best points of earlier searches of this model and "
                   "task in the MLflow store, moved to this target), all, or none.")
@click.option("--objective", default="score", show_default=True,
              help="'score', or score with latency and/or size, e.g. 'score,latency,size': searched together, the "
                   "Pareto front of the target-size trials logged (trials.json) and plotted; ASHA still stops on "
                   "the score. Latency: batch 1 x --max-length tokens; size: bytes of the deployed weights file.")
@click.option("--runtime", default="torch", show_default=True,
              help="Where latency and size are measured: torch (the exported HF folder's model.safetensors, "
                   "PyTorch on the trial's device), onnx (model.onnx, onnxruntime CPU) or onnx-int8 (dynamic int8).")
@click.option("--teacher-cache-gb", default=4.0, show_default=True, type=float,
              help="Disk (GiB, in the search's folder) for the teacher's outputs on the training batches: the trials "
                   "draw the same batches, so later trials read them back instead of running the teacher again. "
                   "Deleted when the search finishes; 0 turns it off.")
@click.option("--screen", default=0, show_default=True, type=click.IntRange(0, 1000),
              help="Rung 0: compress this many random configurations untrained (one shot from the calibration "
                   "statistics), score them on validation, and enqueue the best as trials after the warm starts.")
@click.option("--final-budget", default="1000", show_default=True,
              help="Training of the best trial after the search: distilled from the teacher at its target size for "
                   "this many steps (or e.g. '2epochs'), the best checkpoint on validation shipped; 0 ships the "
                   "trial's own short checkpoint.")
@click.option("--final-rows", default=None, type=click.IntRange(min=1),
              help="Train rows the final budget may read [default: as many as it reads once, beyond --max-train].")
@click.option("--final-eval-every", default=None, type=click.IntRange(min=1),
              help="Score on validation (and checkpoint) every N final steps [default: a tenth of the budget].")
@click.option("--final-reclaim", is_flag=True,
              help="Add to --final-budget the trial steps ASHA's early stops left unspent (each stopped trial's "
                   "full length less the steps it trained), so the search spends a fixed total of training steps "
                   "and its savings go to the model that ships.")
@click.option("--name", default=None, help="Search name (default <task>-<target>x-<time>).")
@click.option("--resume", "resume_flag", is_flag=True, help="Continue the search --name instead of starting one.")
@click.option("--allow-other-teacher", is_flag=True,
              help="Resume although the teacher's weights differ from those the search started with.")
@click.option("--storage", default="ladasearch_runs", show_default=True, help="Folder for Ray Tune's search state.")
@click.option("--address", default=None,
              help="Ray cluster to join: auto (the one `ray start` made on this machine, or $RAY_ADDRESS), HOST:PORT "
                   "or ray://HOST:10001 [default: a private local Ray, never an existing cluster].")
@click.option("--connect-timeout", default=30.0, show_default=True, type=float,
              help="Seconds to reach the --address cluster before giving up.")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///mlruns/mlflow.db).")
@click.option("--experiment", default="ladasearch", show_default=True, help="MLflow experiment name.")
@user_errors
def run(**kw):
    """Search the fine-grained compression ratios for --target and keep the best model."""
    import time

    if kw["resume_flag"]:
        if not kw["name"]:
            raise click.UsageError("--resume needs --name of the search to continue")
        _echo_outcome(resume_search(kw["name"], kw["storage"], log=click.echo,
                                    allow_other_teacher=kw["allow_other_teacher"]))
        return
    target = parse_target(kw["target"])
    objectives = parse_objectives(kw["objective"])
    data_cfg = data_config(kw)
    name = kw["name"] or f"{data_cfg.task}-{target:g}x-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = SearchConfig(name=name, target=target, num_samples=kw["trials"], max_concurrent=kw["concurrency"],
                       cpus_per_trial=kw["cpus_per_trial"], gpus_per_trial=kw["gpus_per_trial"],
                       sampler=kw["sampler"], scheduler=kw["scheduler"], objectives=objectives, seed=kw["seed"],
                       startup_trials=kw["startup_trials"], address=kw["address"],
                       connect_timeout=kw["connect_timeout"], storage=kw["storage"],
                       tracking_uri=kw["tracking_uri"], experiment=kw["experiment"], warm_start=kw["warm_start"],
                       grace_period=kw["grace_period"], reduction_factor=kw["reduction_factor"], runtime=kw["runtime"],
                       screen=kw["screen"], teacher_cache_gb=kw["teacher_cache_gb"])
    space = SearchSpace.load(kw["space_name"])
    source = click.get_current_context().get_parameter_source
    given = {k: kw[k] for k in ("factorizer", "prune_score", "structure_score")
             if source(k) == click.core.ParameterSource.COMMANDLINE}
    if given:  # an option given on the command line pins what the space would otherwise choose
        space = replace(space, compression=space.compression.fixed(**given))
    settings = SearchSettings(data=data_cfg, model=kw["model"], search=cfg,
                              space=space, teacher=teacher_config(kw),
                              train=train_config(kw), compression=compression_config(kw),
                              teacher_path=kw["teacher_path"], device=kw["device"], cache_dir=kw["cache_dir"],
                              final=FinalBudget.parse(kw["final_budget"], max_rows=kw["final_rows"],
                                                      eval_every=kw["final_eval_every"],
                                                      reclaim=kw["final_reclaim"]))
    _echo_outcome(run_search(settings, log=click.echo))


@main.command()
@click.argument("name")
@click.option("--storage", default="ladasearch_runs", show_default=True)
@click.option("--allow-other-teacher", is_flag=True,
              help="Resume although the teacher's weights differ from those the search started with.")
@user_errors
def resume(name, storage, allow_other_teacher):
    """Continue an interrupted search NAME (same as `run --resume --name NAME`); a complete one is left as is."""

    _echo_outcome(resume_search(name, storage, log=click.echo, allow_other_teacher=allow_other_teacher))


def _port_free(host: str, port: int) -> None:
    """LadaError when the UI could not listen on host:port (MLflow's server would fail after start-up)."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is free
            probe.bind((host, port))
    except socket.gaierror as exc:  # before OSError: it is one, but no other --port would help
        raise LadaError(f"cannot serve the UI on {host}:{port}: the host does not resolve ({exc.strerror or exc}); "
                        f"give another --host") from None
    except OSError as exc:
        raise LadaError(f"cannot serve the UI on {host}:{port}: {exc.strerror or exc}; pick another --port") from None


@main.command()
@click.option("--tracking-uri", default=None, help="MLflow store (default sqlite:///mlruns/mlflow.db).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--start-timeout", default=120.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="Seconds the MLflow server may take to answer; after that it is stopped and `ui` exits 2.")
@user_errors
def ui(tracking_uri, host, port, start_timeout):
    """Start the MLflow UI on the search store; it serves until Ctrl-C."""
    _port_free(host, port)  # first: a UI that cannot listen leaves no store behind
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///"):
        check_sqlite(Path(uri.removeprefix("sqlite:///")))
    tracker = Tracker(uri)
    missing = tracker.missing_artifact_roots()   # opening the store re-points a moved one's artifacts first
    for moved in tracker.relocated:
        click.echo(f"the store was copied or moved: experiment {moved.experiment!r} now reads its artifacts from "
                   f"{moved.now} (was {moved.was})", err=True)
    for experiment, folder in missing:
        click.echo(f"warning: the artifacts of experiment {experiment!r} were written to {folder}, which is not here, "
                   f"and the store has no artifacts/{experiment} folder beside it: the UI will show runs without "
                   f"their models, summaries and plots. Copy the store's artifacts/ folder with it.", err=True)
    args = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    if uri.startswith("sqlite:///") and not tracking_uri:
        args += ["--default-artifact-root", (DEFAULT_STORE.resolve() / "artifacts").as_uri()]
    base = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    click.echo(f"MLflow UI on {base} (store {uri})")
    for experiment, url in tracker.runs_views(base):
        click.echo(f"  the runs of experiment {experiment!r}: {url}")
    code = serve(args, base, start_timeout, log=click.echo)
    if code:
        sys.exit(code)


register_export_commands(main)
register_deploy_commands(main)

