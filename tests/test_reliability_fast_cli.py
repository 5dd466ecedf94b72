"""``ladasearch --help`` and ``--version`` answer without loading torch, transformers, Ray or MLflow."""

from __future__ import annotations

import subprocess
import sys
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
