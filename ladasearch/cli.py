"""The `ladasearch` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .cli_common import OneLineErrors, data_config, data_options, method_option, teacher_config, train_config, \
    train_options, user_errors
from .cli_export import register as register_export_commands


@click.group(cls=OneLineErrors)
@click.version_option(package_name="ladasearch")
def main():
    """Find the best LadaBERT compression of a BERT classifier at a target size, and produce it."""


@main.command()
@data_options
@train_options
@method_option
@click.option("--target", required=True, help="Reduction factor, e.g. 10x.")
@click.option("--embedding-ratio", type=float, default=None, help="Share of the word embedding kept, in (0, 1].")
@click.option("--svd-ratio", type=float, default=None, help="Share of each encoder matrix kept as SVD factors.")
@click.option("--weight-ratio", type=float, default=None, help="Share of factor entries kept by pruning.")
@click.option("--paper-ratios", is_flag=True, help="Use the paper's Table 2 embedding and SVD ratios.")
@click.option("--out", default=None, help="Output folder (default compressed/<task>-<target>x).")
@user_errors
def compress(**kw):
    """Compress once with given ratios (two of them; the third is solved from the budget)."""
    from .api import compress_once

    out = Path(kw["out"] or f"compressed/{kw['task']}-{kw['target'].rstrip('xX')}x")
    summary = compress_once(
        data_cfg=data_config(kw), model=kw["model"], teacher_path=kw["teacher_path"],
        teacher_cfg=teacher_config(kw), train_cfg=train_config(kw), target=kw["target"], method=kw["method"],
        embedding=kw["embedding_ratio"], svd=kw["svd_ratio"], weight=kw["weight_ratio"],
        paper=kw["paper_ratios"], out=out, device=kw["device"], cache_dir=kw["cache_dir"], log=click.echo)
    click.echo(f"saved {out} (achieved {summary['achieved_factor']:.3f}x, dev {summary['main_metric']} "
               f"{summary['score']:.4f}, teacher {summary['teacher_score']:.4f})")
    click.echo(json.dumps({k: summary[k] for k in ("ratios", "achieved_factor", "score")}, default=float))


def _echo_outcome(outcome) -> None:
    done = sum(t["status"] == "completed" for t in outcome.trials)
    failed = sum(t["status"] == "failed" for t in outcome.trials)
    click.echo(f"search {outcome.name}: {done} trials completed, {len(outcome.trials) - done - failed} stopped early, "
               f"{failed} failed; MLflow parent run {outcome.parent_run_id}")
    for row in outcome.pareto:
        click.echo(f"  pareto: score {row['score']:.4f}, latency {row['latency_ms']:.1f} ms, "
                   f"{row['achieved_factor']:.2f}x (trial {row['trial_id']})")
    if outcome.best_model:
        click.echo(f"best model: {outcome.best_model}")
        click.echo(f"see it in the UI: ladasearch ui   |   table: ladasearch export {outcome.name}")
    if outcome.interrupted:
        sys.exit(130)  # the shell's code for a Ctrl-C; the search can be resumed


@main.command()
@data_options
@train_options
@click.option("--target", required=True, help="Reduction factor, e.g. 10x.")
@click.option("--space", "space_name", default="default", show_default=True,
              help="Search space: a YAML file or a name in search_spaces/ (default, ratios, paper, svd_only, "
                   "prune_only, no_distill).")
@click.option("--trials", default=8, show_default=True, type=int, help="Number of trials.")
@click.option("--concurrency", default=2, show_default=True, type=int, help="Trials running at once.")
@click.option("--cpus-per-trial", default=1.0, show_default=True, type=float)
@click.option("--gpus-per-trial", default=0.0, show_default=True, type=float, help="Fractions allowed, e.g. 0.5.")
@click.option("--sampler", default="tpe", show_default=True, help="Optuna sampler: tpe, random, cmaes, qmc, nsga2, gp.")
@click.option("--startup-trials", default=None, type=int,
              help="Random trials before tpe/gp/nsga2 model the results [default: a third of --trials, 2 to 10].")
@click.option("--scheduler", default="asha", show_default=True, help="asha (early stopping over rounds) or fifo.")
@click.option("--objective", default="score", show_default=True,
              help="'score', or 'score,latency' to search accuracy and measured latency together (Pareto front).")
@click.option("--name", default=None, help="Search name (default <task>-<target>x-<time>).")
@click.option("--resume", "resume_flag", is_flag=True, help="Continue the search --name instead of starting one.")
@click.option("--storage", default="ladasearch_runs", show_default=True, help="Folder for Ray Tune's search state.")
@click.option("--address", default=None, help="Ray cluster address (default: a local Ray).")
@click.option("--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///mlruns/mlflow.db).")
@click.option("--experiment", default="ladasearch", show_default=True, help="MLflow experiment name.")
@user_errors
def run(**kw):
    """Search the fine-grained compression ratios for --target and keep the best model."""
    import time

    from .compress import parse_target
    from .search import SearchConfig, resume_search, run_search
    from .space import SearchSpace

    if kw["resume_flag"]:
        if not kw["name"]:
            raise click.UsageError("--resume needs --name of the search to continue")
        _echo_outcome(resume_search(kw["name"], kw["storage"], log=click.echo))
        return
    target = parse_target(kw["target"])
    objectives = tuple("latency_ms" if o.strip() == "latency" else o.strip() for o in kw["objective"].split(","))
    name = kw["name"] or f"{kw['task']}-{target:g}x-{time.strftime('%Y%m%d-%H%M%S')}"
    cfg = SearchConfig(name=name, target=target, num_samples=kw["trials"], max_concurrent=kw["concurrency"],
                       cpus_per_trial=kw["cpus_per_trial"], gpus_per_trial=kw["gpus_per_trial"],
                       sampler=kw["sampler"], scheduler=kw["scheduler"], objectives=objectives, seed=kw["seed"],
                       startup_trials=kw["startup_trials"], address=kw["address"], storage=kw["storage"],
                       tracking_uri=kw["tracking_uri"], experiment=kw["experiment"])
    space = SearchSpace.load(kw["space_name"])
    outcome = run_search(data_config(kw), kw["model"], teacher_config(kw), train_config(kw), space, cfg,
                         teacher_path=kw["teacher_path"], device=kw["device"], cache_dir=kw["cache_dir"],
                         log=click.echo)
    _echo_outcome(outcome)


@main.command()
@click.argument("name")
@click.option("--storage", default="ladasearch_runs", show_default=True)
@user_errors
def resume(name, storage):
    """Continue an interrupted search NAME (same as `run --resume --name NAME`)."""
    from .search import resume_search

    _echo_outcome(resume_search(name, storage, log=click.echo))


@main.command()
@click.option("--tracking-uri", default=None, help="MLflow store (default sqlite:///mlruns/mlflow.db).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@user_errors
def ui(tracking_uri, host, port):
    """Start the MLflow UI on the search store."""
    import os
    import sys

    from .tracking import DEFAULT_STORE, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    args = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    if uri.startswith("sqlite:///") and not tracking_uri:
        args += ["--default-artifact-root", (DEFAULT_STORE.resolve() / "artifacts").as_uri()]
    click.echo(f"MLflow UI on http://{host}:{port} (store {uri})")
    os.execv(sys.executable, args)


register_export_commands(main)

if __name__ == "__main__":
    main()
