"""``ladasearch --help``, ``--version`` and an unknown command or option answer without loading torch,
transformers, Ray or MLflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from importlib.metadata import version

import click
import pytest

from ladasearch import entry

HEAVY = ("torch", "transformers", "ray", "mlflow", "optuna")
PROBE = """
import runpy, sys
sys.argv = ["ladasearch", *{args!r}]
try:
    runpy.run_module("ladasearch.entry", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print("\\nLOADED", sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r})), "EXIT", code)
"""


@pytest.mark.parametrize("args, shown", [
    (["--version"], f"ladasearch, version {version('ladasearch')}"),
    (["--help"], "Commands:"),
])
def test_help_and_version_load_none_of_the_stack(args, shown):
    done = subprocess.run([sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert shown in done.stdout
    assert done.stdout.rstrip().endswith("LOADED [] EXIT 0")


@pytest.mark.parametrize("width", [60, 80, 200])
def test_the_fast_listing_is_the_full_command_groups_help(width):
    from ladasearch.cli.commands import main as full

    light = entry.listing()
    helps = []
    for group in (light, full):
        with click.Context(group, info_name="ladasearch", terminal_width=width, max_content_width=width) as ctx:
            helps.append(group.get_help(ctx))
    assert helps[0] == helps[1]
    assert sorted(entry.COMMANDS) == sorted(full.commands)


def test_every_other_invocation_goes_to_the_full_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        entry.main(["run", "--no-such-option"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: No such option '--no-such-option'. (see `ladasearch run --help`)"]


BAD = [["exprot", "x"], ["bogus"], ["run", "--bogus", "1"], ["run", "--target", "5x", "--trails", "4"],
       ["export-model", "x", "--fromat", "hf"], ["ui", "--prot=5000"], ["report", "s", "--out", "o", "--top", "3"]]


def _full_line(args, capsys) -> tuple[int, list[str]]:
    from ladasearch.cli.commands import main as full

    with pytest.raises(SystemExit) as exc:
        full(args, prog_name="ladasearch")
    return exc.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("args", BAD, ids=lambda a: " ".join(a))
def test_an_unknown_command_or_option_is_refused_fast_as_the_commands_refuse_it(args, capsys):
    expected = _full_line(args, capsys)
    assert expected[0] == 2 and len(expected[1]) == 1 and "No such" in expected[1][0]
    done = subprocess.run([sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)], capture_output=True,
                          text=True, timeout=60)
    assert done.stderr.strip().splitlines() == expected[1]
    assert done.stdout.rstrip().endswith("LOADED [] EXIT 2")


@pytest.mark.parametrize("args", [["run", "--loss-weights", "--bogus"], ["run", "--", "--bogus"],
                                  ["export-model", "--help"], ["run", "--name=x", "--trials", "2", "--bogus2"]])
def test_values_and_known_options_are_left_to_the_commands(args):
    # a value that looks like an option is the option's value; past "--" nothing is an option
    assert (entry.unknown_name(args) is None) == ("--bogus2" not in args)


def test_the_option_table_is_the_commands():
    done = subprocess.run([sys.executable, "tools/cli_options.py", "--check"], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
