"""The layers stay one-way: the import contract holds, the bottom layers load alone, and every import that
runs inside a function says why (tools/imports_in_functions.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from imports_in_functions import function_imports  # noqa: E402

# what each layer may load of ladasearch when imported alone (a fresh interpreter, nothing else imported)
ALONE = {
    "ladasearch.nn": ("ladasearch.nn",),
    "ladasearch.compress": ("ladasearch.compress", "ladasearch.nn", "ladasearch.errors", "ladasearch.summary",
                            "ladasearch.registry"),
}


@pytest.mark.parametrize("layer", sorted(ALONE))
def test_a_bottom_layer_loads_nothing_above_it(layer):
    code = f"import json, sys, {layer}; print(json.dumps(sorted(m for m in sys.modules if m.startswith('ladasearch'))))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                       cwd=ROOT).stdout)
    above = [m for m in loaded if m != "ladasearch" and not m.startswith(ALONE[layer])]
    assert above == []
    assert f"{layer}" in loaded


def test_the_import_contract_holds():
    from importlinter.api import read_configuration  # noqa: F401  (import-linter is a pinned test dependency)

    done = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--config", str(ROOT / ".importlinter")],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout


def test_imports_inside_functions_say_why():
    rows = function_imports()
    assert [f"{r.file}:{r.line}" for r in rows if r.reason is None] == []


def test_the_import_listing_finds_a_function_import_without_a_reason(tmp_path):
    package = tmp_path / "ladasearch"
    package.mkdir()
    (package / "m.py").write_text("def f():\n    from .x import y\n\n\ndef g():\n    # cycle with x\n"
                                  "    from .x import z\n    from . import w\n    import os\n")
    rows = function_imports(package)
    assert [(r.line, r.reason) for r in rows] == [(2, None), (7, "cycle with x"), (8, "cycle with x")]


def test_the_architecture_page_lists_every_module():
    page = (ROOT / "docs" / "architecture.md").read_text().split("## Modules", 1)[1]
    listed = sorted(line.split("`")[1] for line in page.splitlines() if line.startswith("- `"))
    package = ROOT / "ladasearch"
    present = sorted(str(p.relative_to(package)) for p in package.rglob("*.py"))
    assert [m for m in present if m not in listed] == []   # a module without a line on the page
    assert [m for m in listed if m not in present] == []   # a line for a module that is gone
