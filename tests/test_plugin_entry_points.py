"""Plug-ins across processes: a package (``tests/plugin_package``) laid out as pip installs it, with a
``ladasearch.plugins`` entry point; a real search on a private Ray uses its factorizer and unit score, with
their constructor arguments, inside the trial workers, and MLflow records both specs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import GLUE_DIR

from ladasearch.compress.registry import FACTORIZERS, Factorizer, get_factorizer
from ladasearch.errors import LadaError
from ladasearch.registry import Registry, canonical, parse_spec

HERE = Path(__file__).resolve().parent
GLUE = GLUE_DIR  # conftest: the shared GLUE folder


def install(site: Path) -> Path:
    """``tests/plugin_package`` as ``pip install`` leaves it in site-packages: the module and its dist-info."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "ladasearch_toy_plugins.py").write_text((HERE / "plugin_package" / "ladasearch_toy_plugins.py").read_text())
    info = site / "ladasearch_toy_plugins-0.1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ladasearch-toy-plugins\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[ladasearch.plugins]\ntoy = ladasearch_toy_plugins\n")
    (info / "RECORD").write_text("")
    return site


@pytest.mark.parametrize("spec, name, kwargs, spelled", [
    ("svd", "svd", {}, "svd"),
    (" mine:seed=3 ", "mine", {"seed": 3}, "mine:seed=3"),
    ("mine:b=0.5,a=x", "mine", {"b": 0.5, "a": "x"}, "mine:a='x',b=0.5"),
    ({"name": "mine", "power": 2}, "mine", {"power": 2}, "mine:power=2"),
])
def test_specs_name_a_plugin_and_its_arguments(spec, name, kwargs, spelled):
    assert parse_spec(spec) == (name, kwargs)
    assert canonical(spec) == spelled
    assert parse_spec(canonical(spec)) == (name, kwargs)


@pytest.mark.parametrize("spec, message", [
    ("", "a plug-in spec is a name"), ("mine:seed", "'seed' is not key=value"), ({"power": 2}, "needs a string 'name'"),
])
def test_malformed_specs_are_one_clear_error(spec, message):
    with pytest.raises(LadaError, match=message):
        parse_spec(spec)


def test_the_registry_refuses_a_second_class_under_a_taken_name():
    class Other(Factorizer):
        name = "svd"

        def factorize(self, weight, rank, stats):
            raise AssertionError

        def refactor(self, a, b, rank, stats):
            raise AssertionError

    with pytest.raises(LadaError, match="factorizer 'svd' is registered already .*SvdFactorizer"):
        FACTORIZERS.register(Other)
    FACTORIZERS.register(type(get_factorizer("svd")))  # the same class again (a module imported twice): no-op
    with pytest.raises(LadaError, match="factorizer 'svd' does not take the arguments {'alpha': 1}"):
        get_factorizer("svd:alpha=1")


def test_a_registry_takes_only_its_kind():
    registry = Registry("thing", Factorizer)
    with pytest.raises(LadaError, match="a thing must be a Factorizer"):
        registry.register(int)


@pytest.mark.ray
@pytest.mark.skipif(not GLUE.is_dir(), reason="shared GLUE data not found")
def test_a_search_uses_entry_point_plugins_inside_its_ray_workers(tiny_dir, tmp_path):
    from mlflow.tracking import MlflowClient

    site = install(tmp_path / "site")
    log = tmp_path / "toy.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "LADASEARCH_TOY_LOG": str(log), "PYTHONUNBUFFERED": "1"}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # heads and neurons removed (so the unit score runs) at ratios this tiny, embedding-heavy model can meet
    space = tmp_path / "plug.yaml"
    space.write_text("name: plug\nmethod: hybrid\nratios:\n  embedding_ratio: {low: 0.085, high: 0.095}\n"
                     "  svd_split: {low: 0.3, high: 0.7}\n  structured_ratio: 0.75\n")
    driver = subprocess.Popen(
        [sys.executable, "-m", "ladasearch.cli", "run", "--task", "sst2", "--target", "10x", "--data-dir", str(GLUE),
         "--model", str(tiny_dir), "--max-train", "200", "--max-dev", "64", "--teacher-steps", "5",
         "--rounds", "2", "--steps-per-round", "2", "--final-steps", "1", "--final-budget", "0", "--trials", "2",
         "--concurrency", "1", "--scheduler", "fifo", "--warm-start", "none", "--space", str(space),
         "--factorizer", "toy-basis:seed=3", "--prune-score", "magnitude", "--structure-score", "toy-units:power=2",
         "--name", "plug", "--storage", str(tmp_path / "runs"), "--tracking-uri", uri,
         "--cache-dir", str(tmp_path / "cache")],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = driver.communicate(timeout=600)
    assert driver.returncode == 0, out[-3000:]
    assert log.is_file(), out[-3000:]
    calls = [line.split() for line in log.read_text().splitlines()]
    # both plug-ins ran, with the arguments of their specs, and only in the trials' worker processes
    assert {(kind, args) for _, kind, args in calls} == {("factorize", "seed=3"), ("refactor", "seed=3"),
                                                         ("units", "power=2")}
    assert str(driver.pid) not in {pid for pid, _, _ in calls}
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("ladasearch")
    children = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2
    for child in children:
        assert child.data.params["factorizer"] == "toy-basis:seed=3"
        assert child.data.params["structure_score"] == "toy-units:power=2"
