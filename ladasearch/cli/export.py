"""CLI commands of the report and runtime packages: ``export`` (ratio table), ``report`` (plots + table), ``measure``.

The main group adds them with ``register(main)``:

    from .export import register
    register(main)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from .common import user_errors
from ..errors import LadaError
from ..io import refuse_source_overlap
from ..models import quiet_transformers
from ..report.plots import search_plots
from ..report.sources import load_all, parent_runs
from ..report.table import format_table, ratio_table
from ..runtime.measure import compare, format_comparison
from ..tracking import Tracker

TRACKING_HELP = ("MLflow tracking URI for search sources (default: $MLFLOW_TRACKING_URI, else "
                 "sqlite:///mlruns/mlflow.db).")
SOURCES_HELP = ("Each SOURCE is a folder with summary.json (ladasearch compress --out), or an MLflow search: "
                "its name or parent run id.")


def _quiet_mlflow() -> None:
    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _load(sources, tracking_uri, include_incomplete: bool = False):
    _quiet_mlflow()
    return load_all(list(sources), tracking_uri, include_incomplete=include_incomplete)


@click.command("export", help=f"Print or write the Table-2 style ratio table of trials.  {SOURCES_HELP}")
@click.argument("sources", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json", "latex"]), default="md", show_default=True)
@click.option("--out", default=None, help="Write the table to this file (default: print it).")
@click.option("--all", "all_trials", is_flag=True,
              help="Every finished trial, not only the best one per source and target.")
@click.option("--tracking-uri", default=None, help=TRACKING_HELP)
@user_errors
def export_command(sources, fmt, out, all_trials, tracking_uri):
    text = format_table(ratio_table(_load(sources, tracking_uri), best_only=not all_trials), fmt)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
        click.echo(f"wrote {out}")
    else:
        click.echo(text, nl=False)


@click.command("report", help="Write the plots (Pareto front, learning curves, ratio split) and the ratio table "
                              f"of trials into a folder.  {SOURCES_HELP}  The plots of an MLflow search are also "
                              "logged to its parent run under plots/.")
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", required=True, help="Output folder.")
@click.option("--top-k", default=5, show_default=True, type=click.IntRange(1), help="Trials in the learning curves.")
@click.option("--tracking-uri", default=None, help=TRACKING_HELP)
@click.option("--no-log", is_flag=True, help="Do not log the plots to the MLflow parent run(s).")
@user_errors
def report_command(sources, out, top_k, tracking_uri, no_log):
    refuse_source_overlap(out, sources)  # a summary folder SOURCE must not get (or hold) the plots
    # every trial, stopped ones too: the plots are the ones the search logged, drawn from the same trials
    trials = _load(sources, tracking_uri, include_incomplete=True)
    summaries = [t for t in trials if t.complete]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = ratio_table(summaries)
    pngs = search_plots(trials, out, top_k,
                        skipped=lambda name, why: click.echo(f"plot {name} skipped: {why}", err=True))
    tables = []
    for fmt, suffix in (("md", "md"), ("csv", "csv"), ("json", "json"), ("latex", "tex")):
        path = out / f"table.{suffix}"
        path.write_text(format_table(rows, fmt))
        tables.append(path)
    click.echo(f"{len(trials)} trial(s) from {len(sources)} source(s), {len(summaries)} complete")
    for path in pngs + tables:
        click.echo(f"wrote {path}")
    if not no_log:
        for parent_id, uri in parent_runs(trials).items():
            try:
                tracker = Tracker.existing(uri)
                for png in pngs:
                    tracker.log_artifact(parent_id, png, "plots")
                click.echo(f"logged {len(pngs)} plots to MLflow run {parent_id} under plots/")
            except Exception as exc:  # noqa: BLE001 - the local files are written; say what failed
                click.echo(f"warning: could not log the plots to MLflow run {parent_id}: "
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", err=True)
    click.echo(format_table(rows, "md"), nl=False)


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise LadaError(f"--batch-sizes {text!r} must be integers separated by commas, e.g. 1,32") from None
    if not sizes or min(sizes) < 1:
        raise LadaError(f"--batch-sizes {text!r} must be integers >= 1")
    return sizes


@click.command("measure", help="Measure a teacher and its compressed student in one run: weights file size, "
                               "resident memory after loading (fresh subprocess), CPU latency at batch 1 and 32 "
                               "(sequence 128) of the plain model and of the fast inference path, and with --onnx "
                               "of onnxruntime.  The result is written into the student's summary.json and "
                               "ladasearch.json (key 'inference').")
@click.argument("teacher_dir")
@click.argument("student_dir")
@click.option("--onnx", "with_onnx", is_flag=True, help="Also export both to ONNX, check and time onnxruntime.")
@click.option("--onnx-dir", default=None, help="Where the student's model.onnx goes (default <student>/onnx).")
@click.option("--seq-len", default=128, show_default=True, type=click.IntRange(1))
@click.option("--batch-sizes", default="1,32", show_default=True)
@click.option("--runs", default=None, type=click.IntRange(1),
              help="Timed runs per batch size (default: 30 at batch 1, 7 above).")
@click.option("--threads", default=None, type=click.IntRange(1), help="Torch/onnxruntime threads (default: torch's).")
@click.option("--fast-mode", type=click.Choice(["auto", "measure", "macs"]), default="auto", show_default=True,
              help="Fast path: time every layer's candidates (measure), choose dense/factored by MACs alone "
                   "(macs), or measure unless the machine is oversubscribed (auto).")
@click.option("--no-write", is_flag=True, help="Do not write the result into the student's folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
@user_errors
def measure_command(teacher_dir, student_dir, with_onnx, onnx_dir, seq_len, batch_sizes, runs, threads, fast_mode,
                    no_write, as_json):

    quiet_transformers()
    sizes = _batch_sizes(batch_sizes)
    result = compare(teacher_dir, student_dir, seq_len=seq_len, batch_sizes=sizes,
                     runs={b: runs for b in sizes} if runs else None, threads=threads, fast_mode=fast_mode,
                     onnx=with_onnx, onnx_dir=onnx_dir, write=not no_write,
                     log=lambda message: click.echo(message, err=True))
    click.echo(json.dumps(result, indent=2, default=float) if as_json else format_comparison(result))


COMMANDS = (export_command, report_command, measure_command)


def register(main_group: click.Group) -> click.Group:
    """Add ``export``, ``report`` and ``measure`` to ``main_group`` (once)."""
    for command in COMMANDS:
        if command.name not in main_group.commands:
            main_group.add_command(command)
    return main_group
