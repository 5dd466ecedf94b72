"""Every import of a ladasearch module made inside a function, with the reason written beside it.

    python tools/imports_in_functions.py            # the listing: file:line, the import, its reason
    python tools/imports_in_functions.py --check    # exit 1 when one has no reason (tests/test_architecture.py)

A reason is a comment on the import's line, or on the line above the run of imports it belongs to.  Imports of other packages inside
functions (onnx, mlflow, ray, ...) are not listed: deferring a heavy dependency to the code that needs it is
the rule for them, not an exception.  Type-only imports (``if TYPE_CHECKING:``) never run and are not listed.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ladasearch"


@dataclass(frozen=True)
class FunctionImport:
    file: str
    line: int
    statement: str
    reason: str | None


def _own(node: ast.ImportFrom | ast.Import) -> bool:
    if isinstance(node, ast.ImportFrom):
        return bool(node.level) or (node.module or "").split(".")[0] == "ladasearch"
    return any(alias.name.split(".")[0] == "ladasearch" for alias in node.names)


def _comment(line: str) -> str | None:
    if "#" not in line:
        return None
    text = line.split("#", 1)[1].strip()
    return text or None


def function_imports(package: Path = PACKAGE) -> list[FunctionImport]:
    found = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()

        class Visitor(ast.NodeVisitor):
            depth = 0

            def visit_FunctionDef(self, node):
                self.depth += 1
                self.generic_visit(node)
                self.depth -= 1

            visit_AsyncFunctionDef = visit_FunctionDef

            def visit_If(self, node):
                if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                    self.generic_visit(node)

            def generic_visit(self, node):
                if self.depth:  # a run of imports shares the comment above its first statement
                    for field in ("body", "orelse", "finalbody"):
                        run_start = None
                        statements = getattr(node, field, None)
                        for statement in statements if isinstance(statements, list) else []:
                            if isinstance(statement, (ast.Import, ast.ImportFrom)):
                                run_start = run_start or statement
                                if _own(statement):
                                    above = lines[run_start.lineno - 2].strip()
                                    reason = _comment(lines[statement.end_lineno - 1]) or (
                                        above[1:].strip() if above.startswith("#") else None)
                                    found.append(FunctionImport(str(path.relative_to(package.parent)),
                                                                statement.lineno,
                                                                ast.get_source_segment(text, statement), reason))
                            else:
                                run_start = None
                super().generic_visit(node)

        Visitor().visit(ast.parse(text))
    return found


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 when an import inside a function has no reason")
    args = p.parse_args(argv)
    rows = function_imports()
    for row in rows:
        print(f"{row.file}:{row.line}: {row.statement}  --  {row.reason or 'NO REASON'}")
    missing = [r for r in rows if r.reason is None]
    print(f"{len(rows)} imports of ladasearch modules inside functions, {len(missing)} without a reason")
    return 1 if args.check and missing else 0


if __name__ == "__main__":
    sys.exit(main())
