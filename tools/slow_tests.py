"""Write ``tests/slow_tests.txt``: the tests the ``slow`` marker selects, from a full run's timings.

    python -m pytest --durations=0 -p no:cacheprovider > run.log      # the whole suite, timed
    python tools/slow_tests.py run.log                                # -> tests/slow_tests.txt

A test function is slow when setup + call + teardown of its slowest parametrization took at least
``--threshold`` seconds (default 2.0) in that run; ``tests/conftest.py`` marks every parametrization of a listed
function ``slow``.  ``pytest -m "not slow"`` is the fast selection; CI runs everything.  A new test is fast
until a timed run lists it.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

LINE = re.compile(r"^\s*(?P<seconds>[\d.]+)s (?P<phase>setup|call|teardown)\s+(?P<node>tests/\S+)")
OUT = Path(__file__).resolve().parents[1] / "tests" / "slow_tests.txt"


def slow_functions(log: str, threshold: float) -> list[str]:
    per_node: dict[str, float] = defaultdict(float)
    for line in log.splitlines():
        match = LINE.match(line)
        if match:
            per_node[match["node"]] += float(match["seconds"])
    per_function: dict[str, float] = defaultdict(float)
    for node, seconds in per_node.items():
        function = node.split("[", 1)[0]
        per_function[function] = max(per_function[function], seconds)
    return sorted(f for f, s in per_function.items() if s >= threshold)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("log", help="the output of a full `pytest --durations=0` run")
    p.add_argument("--threshold", type=float, default=2.0)
    args = p.parse_args(argv)
    slow = slow_functions(Path(args.log).read_text(), args.threshold)
    if not slow:
        print(f"no timings in {args.log}: run pytest with --durations=0", file=sys.stderr)
        return 2
    OUT.write_text("# written by tools/slow_tests.py from a full timed run; one test function per line\n"
                   + "\n".join(slow) + "\n")
    print(f"{len(slow)} slow test functions -> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
