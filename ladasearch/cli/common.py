"""Options and config builders shared by the CLI commands."""

from __future__ import annotations

import functools
import sys

import click

from ..compress.methods import get_method, method_names
from ..compress.registry import get_factorizer, get_pruning_score
from ..compress.unit_scores import get_unit_score
from ..config import CompressionConfig, DataConfig, LossWeights, TeacherConfig, TrainConfig
from ..data import dataset_task_name, task_name
from ..errors import LadaError
from ..precision import PRECISIONS

MAX_ERROR_CHARS = 300   # a message quoting a huge input (a 50 MB YAML key, a 100k-character name) stays one short line


def fail(message: str) -> None:
    """One-line error (at most MAX_ERROR_CHARS characters of message), exit code 2."""
    line = " ".join(str(message).splitlines())
    if len(line) > MAX_ERROR_CHARS:
        line = line[:MAX_ERROR_CHARS - 3] + "..."
    click.echo(f"error: {line}", err=True)
    sys.exit(2)


class OneLineErrors(click.Group):
    """Click's usage errors (bad option values, missing or unknown options) as one ``error:`` line, exit 2."""

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:  # bare `ladasearch`: the help, as click prints it
            click.echo(exc.format_message())
            sys.exit(2)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else self.name
            fail(f"{exc.format_message()} (see `{where} --help`)")
        except click.ClickException as exc:
            fail(exc.format_message())
        except click.Abort:  # Ctrl-C outside a running search (which handles it itself)
            click.echo("interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


def user_errors(fn):
    """Turn LadaError (and a few unambiguous OS errors) into a one-line message and exit code 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LadaError as exc:
            fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except PermissionError as exc:
            fail(f"permission denied: {exc.filename or exc}")
    return wrapper


def parse_loss_weights(text: str | None) -> LossWeights:
    if not text:
        return LossWeights()
    values = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in LossWeights.__dataclass_fields__:
            raise LadaError(f"--loss-weights item {item!r} must be NAME=VALUE with NAME one of "
                            f"{', '.join(LossWeights.__dataclass_fields__)}")
        try:
            values[key] = float(value)
        except ValueError:
            raise LadaError(f"--loss-weights value {value!r} for {key} is not a number") from None
    return LossWeights(**values)


def job_options(fn):
    """What every job needs besides its training: the task data, the model and its teacher, device, seed, threads."""
    options = [
        click.option("--task", default=None,
                     help="GLUE task: sst2, mnli, qnli, qqp, mrpc, rte, cola, stsb. With --train-file or --dataset: "
                          "a free name for your task [default: the train file's name up to its first dot; the "
                          "dataset's name, with its config]."),
        click.option("--train-file", default=None,
                     help="Your own task instead of a GLUE one: the train rows, as CSV, TSV, JSON, JSON Lines or "
                          "Parquet (by extension). Needs --dev-file."),
        click.option("--dev-file", default=None, help="With --train-file: the dev rows (same columns and format)."),
        click.option("--dataset", default=None,
                     help="Your own task from a dataset instead of files: a Hugging Face hub id (imdb, "
                          "stanfordnlp/sst2) or a local folder laid out as a hub dataset (train.csv, "
                          "validation.jsonl, data/train-*.parquet, ...). Read with --train-split and --dev-split."),
        click.option("--dataset-config", default=None,
                     help="With --dataset: its config name [default: its only or default one]."),
        click.option("--train-split", default=None, help="With --dataset: the split trained on [default: train]."),
        click.option("--text-column", default=None,
                     help="With --train-file or --dataset: the text column [default: text]."),
        click.option("--text-pair-column", default=None,
                     help="With --train-file or --dataset: the second text of a pair task [default: none, single "
                          "texts]."),
        click.option("--label-column", default=None,
                     help="With --train-file or --dataset: the label column [default: label]. Text or integer "
                          "labels are classes (ids in sorted order; a dataset's class labels by their names); "
                          "non-integer numbers make a regression."),
        click.option("--metric", default=None,
                     help="With --train-file or --dataset: accuracy, f1 (binary), mcc (or matthews), pearson or "
                          "spearman (these two make a regression) [default: accuracy; pearson for regression]."),
        click.option("--data-dir", envvar="LADASEARCH_DATA_DIR", default=None,
                     help="Local GLUE folder (root or task folder); default: $LADASEARCH_DATA_DIR, else the hub."),
        click.option("--dev-split", default=None,
                     help="mnli: dev_matched (default) or dev_mismatched. With --dataset: the split the chosen model "
                          "is scored on [default: validation]."),
        click.option("--max-length", default=64, show_default=True, type=int, help="Tokens per example."),
        click.option("--max-train", default=None, type=int, help="Use a random subset of this many train rows."),
        click.option("--max-dev", default=None, type=int, help="Use a random subset of this many dev rows."),
        click.option("--val-size", default="0.1", show_default=True, callback=_val_size,
                     help="Validation rows held out of the train file before --max-train (every choice is made on "
                          "them; dev is scored only for the chosen model): a fraction (at most 1000 rows) or a "
                          "row count."),
        click.option("--val-file", default=None,
                     help="Validation rows instead of --val-size: a TSV in the GLUE task's train layout, or with "
                          "--train-file a file with its columns (any supported format)."),
        click.option("--val-split", default=None,
                     help="With --dataset: its split of validation rows instead of --val-size (train is then used "
                          "whole)."),
        click.option("--val-rule", default=None, type=click.Choice(["rows", "sentences"]),
                     help="How validation rows are carved from train: 'rows' (random rows) or 'sentences' (whole "
                          "sentences, their phrases dropped from train). Default: the task's rule (sentences for "
                          "SST-2, whose train file holds phrases while dev holds sentences; rows otherwise)."),
        click.option("--model", default="minilm", show_default=True,
                     help="Base model: hub id (bert-base-uncased), local folder, or 'minilm' (offline MiniLM-L6)."),
        click.option("--teacher", "teacher_path", default=None,
                     help="A fine-tuned teacher folder to use as is (skips teacher fine-tuning)."),
        click.option("--teacher-steps", default=300, show_default=True, type=int,
                     help="Fine-tuning steps when the teacher is made (and cached)."),
        click.option("--teacher-lr", default=5e-5, show_default=True, type=float),
        click.option("--cache-dir", default=None, help="Teacher cache (default $LADASEARCH_CACHE or ~/.cache/ladasearch)."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N."),
        click.option("--seed", default=0, show_default=True, type=int),
        click.option("--threads", default=None, type=click.IntRange(min=1),
                     help="Torch CPU threads of this process (teacher fine-tuning, compression) [default: torch's "
                          "choice]. Search trials use --cpus-per-trial threads each."),
    ]

    @functools.wraps(fn)
    def with_threads(*args, threads=None, **kwargs):
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        return fn(*args, **kwargs)

    return functools.reduce(lambda f, opt: opt(f), reversed(options), with_threads)


def train_options(fn):
    options = [
        click.option("--rounds", default=4, show_default=True, type=int, help="Compression rounds."),
        click.option("--steps-per-round", default=100, show_default=True, type=int),
        click.option("--final-steps", default=100, show_default=True, type=int,
                     help="Distillation steps after the last round."),
        click.option("--batch-size", default=32, show_default=True, type=int),
        click.option("--lr", default=1e-4, show_default=True, type=float, help="Student learning rate."),
        click.option("--temperature", default=1.0, show_default=True, type=float),
        click.option("--loss-weights", default=None, help="e.g. embedding=1,attention=1,hidden=1,logits=1"),
        click.option("--no-distill", is_flag=True, help="Ablation: train the student on gold labels only."),
        click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
                     help="Training forward passes of teacher fine-tuning and students: fp32, or bf16 autocast "
                          "(GPU tensor cores; weights and losses stay fp32)."),
    ]
    return functools.reduce(lambda f, opt: opt(f), reversed(options), fn)


def _val_size(ctx, param, value) -> float | int:
    """'0.1' -> 0.1 (a fraction), '500' -> 500 (rows); checked by DataConfig."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise click.BadParameter(f"{value!r} is not a number (a fraction like 0.1 or a row count like 500)") from None
    if number >= 1 and "." in str(value):  # '1.0' could mean all of train or one row: neither is meant
        raise click.BadParameter(f"{value!r} is ambiguous: give a fraction below 1 (e.g. 0.1) or a whole row "
                                 f"count without a decimal point (e.g. 500)")
    return int(number) if number >= 1 and number == int(number) else number


def data_config(kw: dict) -> DataConfig:
    val_size = kw.get("val_size")  # scripts that build their options themselves may leave it out
    context = click.get_current_context(silent=True)

    def on_command_line(name: str) -> bool:
        return context is not None and name in kw \
            and context.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE

    for rows in ("val_file", "val_split"):
        if kw.get(rows) and on_command_line("val_size"):
            option = "--" + rows.replace("_", "-")
            raise click.UsageError(f"give {option} or --val-size, not both: the {option[6:]}'s rows are the "
                                   f"validation split")
    task, train_file, dataset = kw.get("task"), kw.get("train_file"), kw.get("dataset")
    if train_file and dataset:
        raise click.UsageError("give --train-file or --dataset, not both: each names the task's rows")
    if dataset and kw.get("data_dir") and on_command_line("data_dir"):
        raise click.UsageError("give --dataset or --data-dir, not both: --data-dir is a GLUE folder (a local "
                               "dataset folder goes in --dataset)")
    # DataConfig checks them: it names one given without --train-file or --dataset, or given with the other
    own = {k: kw.get(k) for k in FILE_OPTIONS + DATASET_OPTIONS if kw.get(k) is not None}
    if train_file:
        task = task_name(task, train_file)
        own["train_file"] = train_file
    elif dataset:
        task = dataset_task_name(task, dataset, kw.get("dataset_config"))
        own["dataset"] = dataset
    elif not task:
        raise click.UsageError("Missing option '--task' (a GLUE task) or '--train-file' / '--dataset' (your own "
                               "data)")
    # a task given by files or a dataset reads no GLUE folder: $LADASEARCH_DATA_DIR would only be recorded, misleading
    data_dir = None if train_file or dataset else kw["data_dir"]
    return DataConfig(task=task, data_dir=data_dir, max_length=kw["max_length"],
                      max_train=kw["max_train"], max_dev=kw["max_dev"], dev_split=kw["dev_split"], seed=kw["seed"],
                      **({} if val_size is None else {"val_size": val_size}), val_file=kw.get("val_file"),
                      val_rule=kw.get("val_rule"), **own)


FILE_OPTIONS = ("dev_file", "text_column", "text_pair_column", "label_column", "metric")
DATASET_OPTIONS = ("dataset_config", "train_split", "val_split")


def teacher_config(kw: dict) -> TeacherConfig:
    return TeacherConfig(steps=kw["teacher_steps"], learning_rate=kw["teacher_lr"], seed=kw["seed"],
                         precision=kw.get("precision", "fp32"))


def train_config(kw: dict) -> TrainConfig:
    return TrainConfig(rounds=kw["rounds"], steps_per_round=kw["steps_per_round"], final_steps=kw["final_steps"],
                       batch_size=kw["batch_size"], learning_rate=kw["lr"], temperature=kw["temperature"],
                       loss_weights=parse_loss_weights(kw["loss_weights"]), distill=not kw["no_distill"],
                       seed=kw["seed"], precision=kw["precision"])


def compression_options(fn):
    """The compression plug-ins (``ladasearch.compress.registry``); names are checked by CompressionConfig."""
    options = [
        click.option("--factorizer", default="svd", show_default=True, callback=_registered(get_factorizer),
                     help="How matrices are factorized: a registered factorizer (svd, fisher, activation). In "
                          "`run`, given here it pins the search space's choice."),
        click.option("--prune-score", default="magnitude", show_default=True,
                     callback=_registered(get_pruning_score),
                     help="How entries are scored for pruning: a registered score (magnitude, taylor, movement, "
                          "wanda). In `run`, given here it pins the search space's choice."),
        click.option("--calibration-batches", default=16, show_default=True, type=int,
                     help="Train batches through the teacher when the factorizer or score needs statistics "
                          "(gathered once per teacher and data, cached beside the teacher)."),
        click.option("--structure-score", default="taylor", show_default=True, callback=_registered(get_unit_score),
                     help="How attention heads and FFN neurons are ranked when a structured ratio below 1 removes "
                          "some: a registered unit score, taylor (|activation x gradient|) or activation (mean "
                          "|activation| x column norm). Plug-ins take arguments as NAME:key=value,..."),
    ]
    return functools.reduce(lambda f, opt: opt(f), reversed(options), fn)


def compression_config(kw: dict) -> CompressionConfig:
    return CompressionConfig(factorizer=kw["factorizer"], prune_score=kw["prune_score"],
                             calibration_batches=kw["calibration_batches"], structure_score=kw["structure_score"])


def _registered(build):
    """An option callback: the plug-in spec must name a registered one (checked before any work, as click's usage
    line naming the option, exit code 2)."""
    def check(ctx, param, value: str) -> str:
        try:
            build(value)
        except LadaError as exc:
            raise click.BadParameter(f"{value!r}: {exc}") from None
        return value
    return check


method_option = click.option(
    "--method", default="hybrid", show_default=True, callback=_registered(get_method),
    help="; ".join(f"{name} = {get_method(name).description}" for name in method_names())
         + "; or a method a plug-in registered.")
