"""The wheel: built from the source tree, installed non-editable into a fresh venv, and a search run from it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from conftest import GLUE_DIR as GLUE
from ladasearch.search.settings import spec_path

ROOT = Path(__file__).resolve().parents[1]
SPACES = sorted(p.name for p in (ROOT / "search_spaces").glob("*.yaml"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 68:
        pytest.skip(f"setuptools {setuptools.__version__} is older than the build needs (68)")
    out = tmp_path_factory.mktemp("wheel")
    # setuptools builds in the source folder (build/, *.egg-info): a copy of the sources keeps the tree clean
    source = tmp_path_factory.mktemp("source") / "ladasearch"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", "mlruns", "ladasearch_runs",
        ".ladasearch_cache", "site", "compressed", "out"))
    # no build isolation: the venv's setuptools builds it, so the test needs no package index
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(source)], check=True, timeout=300, capture_output=True)
    (found,) = out.glob("ladasearch-*.whl")
    return found


def test_the_wheel_carries_every_search_space_and_the_exported_model_sources(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("ladasearch/search/spaces/")) == SPACES
    # what runtime.hf assembles the exported modeling file from
    assert {"ladasearch/nn/layers.py", "ladasearch/nn/units.py", "ladasearch/runtime/modeling_ladasearch.py"} <= names
    assert "ladasearch/cli/option_names.json" in names   # what the console entry checks option names against
    assert not any(n.startswith(("tests/", "benchmarks/", "search_spaces/")) for n in names)


@pytest.mark.ray
@pytest.mark.skipif(not GLUE.is_dir(), reason="shared GLUE data not found")
def test_a_fresh_venv_with_the_wheel_runs_a_search_on_the_default_space(wheel, tiny_dir, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # the dependencies (torch, ray, ...) from this venv, as plain path entries: its .pth files (the editable
    # install of this tree among them) are not run for a path added this way, so only the wheel gives ladasearch
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, timeout=300, capture_output=True)
    where = subprocess.run([str(python), "-c", "import ladasearch.search.space as s; print(s.__file__); "
                            "print(s.SPACE_DIR)"], cwd=tmp_path, check=True, capture_output=True, text=True)
    module, spaces = where.stdout.split()
    assert Path(module).is_relative_to(site) and Path(spaces) == site / "ladasearch" / "search" / "spaces"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    run = subprocess.run(
        [str(venv / "bin" / "ladasearch"), "run", "--task", "sst2", "--target", "5x", "--data-dir", str(GLUE),
         "--model", str(tiny_dir), "--max-train", "120", "--max-dev", "32", "--teacher-steps", "2", "--rounds", "1",
         "--steps-per-round", "1", "--final-steps", "1", "--final-budget", "2", "--trials", "1",
         "--scheduler", "fifo", "--warm-start", "none", "--space", "default", "--name", "wheel",
         "--storage", str(tmp_path / "runs"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--cache-dir", str(tmp_path / "cache")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    best = next(line.split("best model: ", 1)[1] for line in run.stdout.splitlines() if line.startswith("best model: "))
    assert (Path(best) / "model.safetensors").is_file()
    spec = json.loads(spec_path(tmp_path / "runs", "wheel").read_text())
    assert spec["space"]["name"] == "default"
