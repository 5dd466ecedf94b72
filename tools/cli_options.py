"""Write ``ladasearch/cli/option_names.py``: every command's option names and how many values each takes, so the
console entry refuses an unknown command or option without loading the stack.

    python tools/cli_options.py           # rewrite the table after changing a command's options
    python tools/cli_options.py --check   # exit 1 when the table is not the commands' (the tests check it too)
"""

from __future__ import annotations

import sys
from pathlib import Path

TABLE = Path(__file__).resolve().parents[1] / "ladasearch" / "cli" / "option_names.py"
HEAD = '''"""Each command's options and how many values each takes (0: a flag), in the order click's parser knows them.

Written by ``tools/cli_options.py`` from the commands themselves (``tests/test_reliability_fast_cli.py`` checks
that it still is): ``ladasearch.entry`` reads it to refuse an unknown command or option in well under a
second, where loading the commands takes 5-20 s.
"""

OPTIONS: dict[str, dict[str, int]] = {
'''


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
    lines = [HEAD]
    for name, opts in options.items():
        lines.append(f"    {name!r}: {{\n")
        lines.extend(f"        {opt!r}: {n},\n" for opt, n in opts.items())
        lines.append("    },\n")
    lines.append("}\n")
    return "".join(lines)


if __name__ == "__main__":
    text = render(table())
    if "--check" in sys.argv[1:]:
        sys.exit(0 if TABLE.read_text() == text else f"{TABLE} is not the commands' options: run tools/cli_options.py")
    TABLE.write_text(text)
    print(f"wrote {TABLE}")
