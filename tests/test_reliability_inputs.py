"""Bad inputs through the real CLI: exit code 2, one 'error:' line naming the bad value, no traceback,
nothing recorded earlier lost, and no teacher fine-tuned before the input is rejected.

Every case runs against a fresh copy of an "earlier" state: an MLflow store holding a finished search's
parent run, that search's spec file in the Ray storage folder, and a cached teacher.  After the failing
command the whole state must be byte-for-byte what it was (so no teacher was fine-tuned into the cache,
no spec file or MLflow run was written, nothing was deleted).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import GLUE_DIR

from ladasearch.cli.commands import main

GLUE = GLUE_DIR  # conftest: the shared GLUE folder
pytestmark = pytest.mark.skipif(not GLUE.is_dir(), reason="shared GLUE data not found")

EARLIER = "earlier"   # the search recorded before each failing command
SMALL = ["--teacher-steps", "1", "--max-train", "20", "--max-dev", "10", "--rounds", "1", "--steps-per-round", "1",
         "--final-steps", "0", "--batch-size", "4"]


@pytest.fixture(scope="module")
def earlier_template(tmp_path_factory):
    """An MLflow store with a finished search 'earlier', its spec file, and a cached teacher (built once)."""
    from ladasearch.tracking import SearchTags, Tracker

    root = tmp_path_factory.mktemp("earlier")
    tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}", "ladasearch")
    parent = tracker.start_search(EARLIER, SearchTags(task="sst2"), {"target": 5.0})
    tracker.log_metrics(parent, {"best_score": 0.75})
    tracker.finish(parent, "FINISHED")
    (root / "runs" / EARLIER).mkdir(parents=True)
    (root / "runs" / f"{EARLIER}.ladasearch.json").write_text(json.dumps({"parent_run_id": parent}))
    teacher = root / "cache" / "teachers" / "0123456789abcdef"
    teacher.mkdir(parents=True)
    (teacher / "teacher.json").write_text(json.dumps({"score": 0.8, "metrics": {"accuracy": 0.8}}))
    (teacher / "model.safetensors").write_bytes(b"weights of an earlier teacher")
    return root, parent


def _snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` -> sha256 of its bytes ('dir' for folders)."""
    out = {}
    for path in sorted(root.rglob("*")):
        out[str(path.relative_to(root))] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def state(earlier_template, tmp_path, monkeypatch):
    """A fresh copy of the earlier state in tmp_path/state; cwd is tmp_path; no tracking/data/cache env."""
    template, parent = earlier_template
    root = tmp_path / "state"
    shutil.copytree(template, root)
    monkeypatch.chdir(tmp_path)
    for var in ("MLFLOW_TRACKING_URI", "LADASEARCH_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LADASEARCH_CACHE", str(root / "cache"))
    return root, parent, _snapshot(root)


def _where(state) -> list[str]:
    root = state[0]
    return ["--storage", str(root / "runs"), "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--cache-dir", str(root / "cache")]


def _run_args(tiny_dir, state, *extra, target="5x", data_dir=GLUE, task="sst2"):
    return ["run", "--task", task, "--data-dir", str(data_dir), "--model", str(tiny_dir), "--target", target,
            "--trials", "1", "--concurrency", "1", "--name", "fresh", *SMALL, "--final-budget", "0", *_where(state),
            *extra]


def _compress_args(tiny_dir, state, *extra, target="5x"):
    return ["compress", "--task", "sst2", "--data-dir", str(GLUE), "--model", str(tiny_dir), "--target", target,
            "--cache-dir", str(state[0] / "cache"), "--out", str(state[0].parent / "out"), *SMALL, *extra]


def _assert_user_error(result, state, *fragments) -> str:
    """Exit 2, exactly one stderr line 'error: ...' containing every fragment, no traceback, state untouched."""
    root, _, before = state
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    after = _snapshot(root)
    new_teachers = sorted(p for p in after if p.startswith("cache/teachers/") and p not in before)
    assert not new_teachers, f"a teacher was fine-tuned before the input was rejected: {new_teachers} ({lines[0]})"
    assert after == before, "the earlier search state changed"
    assert not (root.parent / "out").exists()
    return lines[0]


@pytest.fixture
def runner():
    return CliRunner()


# ---- search space files ----------------------------------------------------------------------

GOOD_RATIOS = "ratios:\n  embedding_ratio: 0.1\n  svd_split: 0.5\n"

SPACES = {
    "invalid yaml": ("ratios: {embedding_ratio: [0.1, \n", ["is not valid YAML"]),
    "not a mapping": ("- embedding_ratio\n- svd_split\n", ["must be a mapping", "got list"]),
    "unknown top-level key": (GOOD_RATIOS + "sampler: tpe\n", ["unknown key(s) ['sampler']"]),
    "unknown ratios key": ("ratios:\n  embedding_ratio: 0.1\n  pruning: 0.3\n",
                           ["ratios: unknown key(s) ['pruning']"]),
    "unknown train knob": (GOOD_RATIOS + "train:\n  warmup_steps: 10\n", ["train: unknown key(s) ['warmup_steps']"]),
    "unknown range key": ("ratios:\n  embedding_ratio: {low: 0.05, hi: 0.2}\n",
                          ["embedding_ratio: unknown key(s) ['hi']"]),
    "low above high": ("ratios:\n  embedding_ratio: {low: 0.2, high: 0.05}\n",
                       ["embedding_ratio: low 0.2 is above high 0.05"]),
    "log range low 0": (GOOD_RATIOS + "train:\n  learning_rate: {low: 0.0, high: 1.0e-3, log: true}\n",
                        ["learning_rate: a log range needs low > 0, got 0.0"]),
    "log range low < 0": ("ratios:\n  embedding_ratio: 0.1\n  svd_split: {low: -0.5, high: 0.5, log: true}\n",
                          ["svd_split: a log range needs low > 0, got -0.5"]),
    "embedding ratio 0": ("ratios:\n  embedding_ratio: 0\n", ["embedding_ratio: 0 is outside (0, 1]"]),
    "embedding ratio 1.5": ("ratios:\n  embedding_ratio: 1.5\n", ["embedding_ratio: 1.5 is outside (0, 1]"]),
    "embedding range above 1": ("ratios:\n  embedding_ratio: {low: 0.1, high: 1.5}\n",
                                ["embedding_ratio: 1.5 is outside (0, 1]"]),
    "svd_split 2": ("ratios:\n  embedding_ratio: 0.1\n  svd_split: 2\n", ["svd_split: 2 is outside [0, 1]"]),
    "choices empty": (GOOD_RATIOS + "train:\n  temperature: {choices: []}\n",
                      ["temperature: 'choices' must be a non-empty list"]),
    "choices with a range": (GOOD_RATIOS + "train:\n  temperature: {choices: [1.0], low: 1.0}\n",
                             ["temperature: 'choices' must be a non-empty list and stand alone"]),
    "ratio not a number": ("ratios:\n  embedding_ratio: lots\n", ["embedding_ratio: expected float, got 'lots'"]),
    "int knob given a float": (GOOD_RATIOS + "train:\n  rounds: 2.5\n", ["rounds: expected int, got 2.5"]),
    "knob value invalid": (GOOD_RATIOS + "train:\n  learning_rate: {choices: [1.0e-4, -1.0]}\n",
                           ["train.learning_rate must be > 0, got -1.0"]),
    "bool given a string": (GOOD_RATIOS + "distill: maybe\n", ["distill must be true or false, got 'maybe'"]),
    "log given a string": ("ratios:\n  embedding_ratio: {low: 0.05, high: 0.2, log: sure}\n",
                           ["'log' must be true or false, got 'sure'"]),
    "ratios a list": ("ratios: [0.1, 0.5]\n", ["ratios must be 'paper' or a mapping"]),
    "unknown method": ("method: quantize\n" + GOOD_RATIOS, ["method 'quantize' is not one of hybrid, svd, prune"]),
    "unknown loss weight": (GOOD_RATIOS + "loss_weights:\n  cosine: 1.0\n",
                            ["loss_weights: unknown key(s) ['cosine']"]),
}


@pytest.mark.parametrize("case", list(SPACES))
def test_bad_search_space_file(runner, tiny_dir, state, tmp_path, case):
    text, fragments = SPACES[case]
    path = tmp_path / "space.yaml"
    path.write_text(text)
    result = runner.invoke(main, _run_args(tiny_dir, state, "--space", str(path)))
    _assert_user_error(result, state, f"search space {path}", *fragments)


def test_unknown_search_space_name(runner, tiny_dir, state):
    result = runner.invoke(main, _run_args(tiny_dir, state, "--space", "no_such_space"))
    line = _assert_user_error(result, state, "search space 'no_such_space' is neither a file nor one of")
    assert "default" in line and "ratios" in line


def test_embedding_range_the_target_cannot_meet(runner, tiny_dir, state, tmp_path):
    """A space that is valid YAML but has no feasible point for this model at 5x: known from the architecture
    alone, so it must be rejected before the teacher is fine-tuned."""
    path = tmp_path / "space.yaml"
    path.write_text("ratios:\n  embedding_ratio: {low: 0.95, high: 1.0}\n")
    result = runner.invoke(main, _run_args(tiny_dir, state, "--space", str(path)))
    _assert_user_error(result, state, "embedding_ratio range [0.95, 1] has no point that meets 5x")


# ---- targets -----------------------------------------------------------------------------------

TARGETS = [
    ("0x", "target '0x' must be above 1x"),
    ("abc", "target 'abc' is not a reduction factor"),
    ("1x", "target '1x' must be above 1x"),
    ("-2x", "target '-2x' is not a reduction factor"),
]


@pytest.mark.parametrize("command", ["run", "compress"])
@pytest.mark.parametrize("target, message", TARGETS)
def test_bad_target(runner, tiny_dir, state, command, target, message):
    build = _run_args if command == "run" else _compress_args
    extra = [] if command == "run" else ["--embedding-ratio", "0.1", "--svd-ratio", "0.5"]
    result = runner.invoke(main, build(tiny_dir, state, *extra, target=target))
    _assert_user_error(result, state, message)


@pytest.mark.parametrize("command", ["run", "compress"])
def test_unreachable_target(runner, tiny_dir, state, command):
    """1000x cannot be met by the tiny model (its dense part alone is over the budget): the architecture says so,
    so both commands must refuse before fine-tuning a teacher."""
    build = _run_args if command == "run" else _compress_args
    extra = ["--space", "ratios"] if command == "run" else ["--embedding-ratio", "0.1", "--svd-ratio", "0.5"]
    result = runner.invoke(main, build(tiny_dir, state, *extra, target="1000x"))
    _assert_user_error(result, state, "1000x", "unreachable")


# ---- compress ratios ---------------------------------------------------------------------------

@pytest.mark.parametrize("option, value, shown", [
    ("--embedding-ratio", "0", "0.0"),
    ("--embedding-ratio", "1.5", "1.5"),
    ("--embedding-ratio", "-0.1", "-0.1"),
    ("--embedding-ratio", "nan", "nan"),
    ("--svd-ratio", "0", "0.0"),
    ("--svd-ratio", "1.01", "1.01"),
    ("--weight-ratio", "0", "0.0"),
    ("--weight-ratio", "2", "2.0"),
])
def test_compress_ratio_outside_unit_interval(runner, tiny_dir, state, option, value, shown):
    name = option.removeprefix("--").removesuffix("-ratio")
    partner = {"embedding": ["--svd-ratio", "0.5"], "svd": ["--embedding-ratio", "0.1"],
               "weight": ["--embedding-ratio", "0.1"]}[name]
    result = runner.invoke(main, _compress_args(tiny_dir, state, option, value, *partner))
    _assert_user_error(result, state, f"{name} ratio must be a retention fraction in (0, 1], got {shown}")


# ---- data -------------------------------------------------------------------------------------

GOOD_TSV = "sentence\tlabel\n" + "a fine film\t1\na dull film\t0\n" * 6

TSVS = {
    "empty file": ("", "is empty"),
    "header only": ("sentence\tlabel\n", "has a header but no data rows"),
    "wrong header": ("text\tlabel\na fine film\t1\n", "header has no column 'sentence'"),
    "wrong label column": ("sentence\tsentiment\na fine film\t1\n", "header has no column 'label'"),
    "label not allowed": ("sentence\tlabel\na fine film\t1\na dull film\tpositive\n",
                          "line 3: unknown label 'positive'; allowed: 0, 1"),
    "too few fields": ("sentence\tlabel\na fine film\n", "line 2: expected at least 2 tab-separated fields"),
}


@pytest.mark.parametrize("which", ["train", "dev"])
@pytest.mark.parametrize("case", list(TSVS))
def test_bad_tsv(runner, tiny_dir, state, tmp_path, which, case):
    text, message = TSVS[case]
    folder = tmp_path / "glue" / "SST-2"
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_text(GOOD_TSV)
    (folder / "dev.tsv").write_text(GOOD_TSV)
    (folder / f"{which}.tsv").write_text(text)
    result = runner.invoke(main, _run_args(tiny_dir, state, "--space", "ratios", data_dir=tmp_path / "glue"))
    _assert_user_error(result, state, str(folder / f"{which}.tsv"), message)


def test_missing_data_folder(runner, tiny_dir, state, tmp_path):
    result = runner.invoke(main, _run_args(tiny_dir, state, data_dir=tmp_path / "no-such-glue"))
    _assert_user_error(result, state, f"data dir '{tmp_path / 'no-such-glue'}' does not exist")


def test_data_folder_without_the_task(runner, tiny_dir, state, tmp_path):
    (tmp_path / "glue" / "RTE").mkdir(parents=True)
    result = runner.invoke(main, _run_args(tiny_dir, state, data_dir=tmp_path / "glue"))
    _assert_user_error(result, state, "task folder 'SST-2' not found")


@pytest.mark.parametrize("command", ["run", "compress"])
def test_unknown_task(runner, tiny_dir, state, command):
    args = (_run_args(tiny_dir, state, task="sst3") if command == "run"
            else _compress_args(tiny_dir, state, "--embedding-ratio", "0.1", "--svd-ratio", "0.5"))
    args[args.index("--task") + 1] = "sst3"
    _assert_user_error(runner.invoke(main, args), state, "unknown task 'sst3'", "sst2, mnli")


# ---- search settings --------------------------------------------------------------------------

@pytest.mark.parametrize("extra, message", [
    (["--trials", "0"], "--trials must be an integer >= 1, got 0"),
    (["--concurrency", "0"], "--concurrency must be an integer >= 1, got 0"),
    (["--sampler", "grid"], "unknown sampler 'grid'"),
    (["--scheduler", "hyperband"], "unknown scheduler 'hyperband'"),
    (["--objective", "latency"], "objectives must be 'score' or 'score,latency_ms'"),
    (["--name", "../escape"], "search name '../escape' must be a plain folder name"),
])
def test_bad_search_settings(runner, tiny_dir, state, extra, message):
    result = runner.invoke(main, _run_args(tiny_dir, state, *extra))
    _assert_user_error(result, state, message)


def test_search_name_that_already_exists(runner, tiny_dir, state):
    root, parent, _ = state
    result = runner.invoke(main, _run_args(tiny_dir, state, "--name", EARLIER))
    _assert_user_error(result, state, f"a search named '{EARLIER}' already exists", f"resume {EARLIER}")
    from mlflow.tracking import MlflowClient

    run = MlflowClient(f"sqlite:///{root / 'mlflow.db'}").get_run(parent)
    assert run.info.status == "FINISHED" and run.data.metrics["best_score"] == 0.75


@pytest.mark.parametrize("how", ["resume command", "run --resume"])
def test_resume_unknown_search(runner, state, how):
    root = state[0]
    args = (["resume", "nope", "--storage", str(root / "runs")] if how == "resume command"
            else ["run", "--resume", "--name", "nope", "--task", "sst2", "--target", "5x",
                  "--storage", str(root / "runs")])
    result = runner.invoke(main, args)
    _assert_user_error(result, state, f"no search named 'nope' in {root / 'runs'}", f"known: {EARLIER}")


# ---- the MLflow store -------------------------------------------------------------------------

def test_unwritable_default_mlflow_store(runner, tiny_dir, state, tmp_path):
    """No --tracking-uri: the default store is ./mlruns.  Made unwritable (chmod 0o500; as root, where chmod does
    not stop writes, a regular FILE named mlruns instead), the run must stop with exit 2 naming the folder, before
    the teacher is fine-tuned, and leave what was there alone."""
    root, _, before = state
    store = tmp_path / "mlruns"  # tmp_path is the cwd
    store.mkdir()
    (store / "mlflow.db").write_bytes(b"an earlier store")
    store.chmod(0o500)
    try:
        (store / ".probe").write_text("x")
    except OSError:
        kept = store / "mlflow.db"  # chmod works: the folder stays read-only
        expected = f"the MLflow store folder {store} is not writable"
    else:  # root: replace the folder by a file, which can never be a folder
        store.chmod(0o700)
        shutil.rmtree(store)
        store.write_bytes(b"an earlier store")
        kept = store
        expected = f"the MLflow store {store} exists and is not a folder"
    args = ["run", "--task", "sst2", "--data-dir", str(GLUE), "--model", str(tiny_dir), "--target", "5x",
            "--trials", "1", "--name", "fresh", "--space", "ratios", *SMALL, "--final-budget", "0",
            "--storage", str(root / "runs"),
            "--cache-dir", str(root / "cache")]
    try:
        result = runner.invoke(main, args)
    finally:
        if store.is_dir():
            store.chmod(0o700)
    assert kept.read_bytes() == b"an earlier store"
    _assert_user_error(result, state, expected, "--tracking-uri")
