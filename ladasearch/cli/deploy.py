"""`ladasearch export-model`: write a compressed model as a folder that plain transformers or onnxruntime loads."""

from __future__ import annotations

import click

from .common import user_errors
from ..errors import LadaError
from ..models import quiet_transformers
from ..runtime.export import DevData, ExportSettings, export_model
from ..runtime.formats import Timed, get_format


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        sizes = ()
    if not sizes or any(s < 1 for s in sizes):
        raise LadaError(f"--batch-sizes {text!r} must be positive integers separated by commas, e.g. 1,32")
    return sizes


@click.command("export-model")
@click.argument("source")
@click.option("--format", "fmt", required=True, help="hf (transformers, trust_remote_code), onnx, or onnx-int8.")
@click.option("--out", required=True, help="Output folder (new or empty; see --overwrite).")
@click.option("--max-drop", default=1.0, show_default=True, type=click.FloatRange(0, 100),
              help="onnx-int8: largest dev-score drop against fp32 allowed, in points (main metric x 100).")
@click.option("--data-dir", envvar="LADASEARCH_DATA_DIR", default=None,
              help="onnx-int8: local GLUE folder for the dev split; default $LADASEARCH_DATA_DIR, else the hub.")
@click.option("--dev-split", default=None,
              help="onnx-int8, mnli: dev_matched (default) or dev_mismatched; a model of a task given by a dataset: "
                   "its dev split [default: the recorded one].")
@click.option("--dev-file", default=None,
              help="onnx-int8, a model of a task given by files: its dev rows [default: the recorded --dev-file].")
@click.option("--dataset", default=None,
              help="onnx-int8, a model of a task given by a dataset: read its dev split from this hub id or folder "
                   "[default: the recorded --dataset].")
@click.option("--text-column", default=None,
              help="onnx-int8, with --dev-file or --dataset: [default: the recorded one].")
@click.option("--text-pair-column", default=None,
              help="onnx-int8, with --dev-file or --dataset: [default: the recorded one].")
@click.option("--label-column", default=None,
              help="onnx-int8, with --dev-file or --dataset: [default: the recorded one].")
@click.option("--max-dev", default=1000, show_default=True, type=click.IntRange(1),
              help="onnx-int8: dev rows the gate scores (a seeded random subset).")
@click.option("--max-length", default=128, show_default=True, type=click.IntRange(8, 512),
              help="onnx-int8: tokens per dev example.")
@click.option("--seq-len", default=128, show_default=True, type=click.IntRange(1), help="Tokens per timed row.")
@click.option("--batch-sizes", default="1,32", show_default=True, help="Timed batch sizes.")
@click.option("--runs", default=10, show_default=True, type=click.IntRange(1), help="Timed runs per batch size.")
@click.option("--threads", default=Timed().threads, show_default=True, type=click.IntRange(1),
              help="CPU threads when timing (the library's default too: one thread, what a serving worker gets).")
@click.option("--no-measure", is_flag=True, help="Skip latency and deployment memory (the card says so).")
@click.option("--opset", default=17, show_default=True, type=click.IntRange(14), help="ONNX opset.")
@click.option("--overwrite", is_flag=True,
              help="Replace a non-empty --out as a whole (never SOURCE, its teacher, or a folder holding them).")
@click.option("--tracking-uri", default=None,
              help="MLflow store of a search SOURCE (default sqlite:///mlruns/mlflow.db).")
@click.option("--teacher", "teacher", is_flag=True,
              help="Export SOURCE's teacher instead (the dense fine-tuned model it was compressed from): the baseline "
                   "to compare with, in the same format, with the same card and gate.")
@click.option("--trust-unchecked", is_flag=True,
              help="Export a model folder saved without checksums of its weights and config (older versions).")
@user_errors
def export_model_command(source, fmt, out, max_drop, data_dir, dev_split, dev_file, dataset, text_column,
                         text_pair_column, label_column, max_dev, max_length, seq_len, batch_sizes, runs, threads,
                         no_measure, opset, overwrite, tracking_uri, teacher, trust_unchecked):
    """Write SOURCE (a `compress --out` folder, or a search name / MLflow parent run id: its best model) as a
    self-contained folder: weights, config with label names, tokenizer and a model card (README.md)."""
    get_format(fmt)  # a bad format fails before anything is loaded
    quiet_transformers()
    timed = Timed(_sizes(batch_sizes), seq_len, runs, threads)
    dev = DevData(data_dir, dev_split, max_dev, max_length, dev_file=dev_file, text_column=text_column,
                  text_pair_column=text_pair_column, label_column=label_column, dataset=dataset)
    settings = ExportSettings(max_drop=max_drop, dev=dev, timed=timed,
                              measure=not no_measure, opset=opset, overwrite=overwrite, tracking_uri=tracking_uri,
                              trust_unchecked=trust_unchecked, teacher=teacher)
    record = export_model(source, fmt, out, settings, log=click.echo)
    line = f"wrote {record.folder} ({record.format}): {record.written.model_file} {record.file_bytes / 2**20:.2f} MiB"
    line += "".join(f", batch {x.batch} {x.timing.median_ms:.1f} ms" for x in record.latency)
    if record.memory is not None:
        line += f", deployment peak RSS {record.memory.peak_bytes / 2**20:.0f} MiB"
    click.echo(line)


def register(main_group: click.Group) -> click.Group:
    main_group.add_command(export_model_command)
    return main_group
