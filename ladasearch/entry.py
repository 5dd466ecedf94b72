"""The ``ladasearch`` console command: answers ``--help`` and ``--version`` without loading the stack.

The commands' options name what the registries hold (methods, plug-ins, precisions), so importing them loads
torch and transformers: 5-20 s on a loaded machine, before a single option is read.  The two questions a new
user asks first need none of it; everything else goes to ``ladasearch.cli``, loaded then.  The listing below
must render exactly as the full command group does (``tests/test_reliability_fast_cli.py`` compares them).
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path

import click

# each command's option names and how many values each takes: written by tools/cli_options.py from the
# commands themselves (the tests check that it still is), so a typo costs no import of the stack
OPTIONS: dict[str, dict[str, int]] = json.loads((Path(__file__).parent / "cli" / "option_names.json").read_text())
NAME = "ladasearch"
HELP = "Find the best LadaBERT compression of a BERT classifier at a target size, and produce it."
# each command's first sentence, which is what a group's listing shows of it
COMMANDS = {
    "compress": "Compress once with given ratios (two of them; the third is solved from the budget).",
    "export": "Print or write the Table-2 style ratio table of trials.",
    "export-model": "Write SOURCE (a `compress --out` folder, or a search name / MLflow parent run id: its best "
                    "model) as a self-contained folder: weights, config with label names, tokenizer and a model "
                    "card (README.md).",
    "measure": "Measure a teacher and its compressed student in one run: weights file size, resident memory "
               "after loading (fresh subprocess), CPU latency at batch 1 and 32 (sequence 128) of the plain model "
               "and of the fast inference path, and with --onnx of onnxruntime.",
    "report": "Write the plots (Pareto front, learning curves, ratio split) and the ratio table of trials into a "
              "folder.",
    "resume": "Continue an interrupted search NAME (same as `run --resume --name NAME`); a complete one is left "
              "as is.",
    "run": "Search the fine-grained compression ratios for --target and keep the best model.",
    "ui": "Start the MLflow UI on the search store; it serves until Ctrl-C.",
}


def listing() -> click.Group:
    """The command group as ``--help`` shows it, without the commands' code."""
    group = click.Group(NAME, help=HELP)
    group.params.append(click.Option(["--version"], is_flag=True, help="Show the version and exit."))
    for name, text in COMMANDS.items():
        group.add_command(click.Command(name, help=text))
    return group


def unknown_name(args: list[str]) -> str | None:
    """Click's message for an unknown command or an unknown option of a known one, or None (the commands parse
    everything else).  Read from the table of option names, so a typo costs no import of the stack."""
    if not args or args[0].startswith("-"):
        return None
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        error = click.exceptions.NoSuchCommand(command, possibilities=sorted(COMMANDS))
        return f"{error.format_message()} (see `{NAME} --help`)"
    known, values = OPTIONS[command], 0
    for token in rest:
        if values:  # a value of the option before it, whatever it looks like
            values -= 1
            continue
        if token == "--":
            break
        if token.startswith("--"):
            name, equals, _ = token.partition("=")
            if name not in known:
                error = click.NoSuchOption(name, possibilities=list(known))
                return f"{error.format_message()} (see `{NAME} {command} --help`)"
            values = 0 if equals else known[name]
    return None


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    message = unknown_name(args)
    if message is not None:
        click.echo(f"error: {message}", err=True)
        sys.exit(2)
    if args == ["--version"]:
        click.echo(f"{NAME}, version {version(NAME)}")
        sys.exit(0)
    if args == ["--help"]:
        group = listing()
        with click.Context(group, info_name=NAME) as ctx:
            click.echo(group.get_help(ctx))
        sys.exit(0)
    from .cli.commands import main as commands  # deferred: the commands load torch and transformers (see above)

    commands(args, prog_name=NAME)


if __name__ == "__main__":
    main()
