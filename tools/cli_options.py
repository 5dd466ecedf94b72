"""Write ``ladasearch/cli/option_names.json``: every command's option names and how many values each takes (0: a
flag), so the console entry refuses an unknown command or option without loading the stack (5-20 s).

    python tools/cli_options.py           # rewrite the table after changing a command's options
    python tools/cli_options.py --check   # exit 1 when the table is not the commands' (the tests check it too)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TABLE = Path(__file__).resolve().parents[1] / "ladasearch" / "cli" / "option_names.json"


def table() -> dict[str, dict[str, int]]:
    import click

    from ladasearch.cli.commands import main

    out = {}
    for name in sorted(main.commands):
        command = main.commands[name]
        with click.Context(command, info_name=name) as ctx:
            params = command.get_params(ctx)
        out[name] = {opt: 0 if (p.is_flag or p.count) else p.nargs
                     for p in params if isinstance(p, click.Option) for opt in (*p.opts, *p.secondary_opts)}
    return out


def render(options: dict[str, dict[str, int]]) -> str:
    return json.dumps(options, indent=1) + "\n"


if __name__ == "__main__":
    text = render(table())
    if "--check" in sys.argv[1:]:
        sys.exit(0 if TABLE.read_text() == text else f"{TABLE} is not the commands' options: run tools/cli_options.py")
    TABLE.write_text(text)
    print(f"wrote {TABLE}")
