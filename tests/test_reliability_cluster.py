"""Which Ray a search runs on, concurrent searches, and resume under real conditions, on a tiny model.

An "existing cluster" is started here (``ray.cluster_utils.Cluster``, token authentication on, always shut
down) and named by ``RAY_ADDRESS``, as `ray start` would have made it: a default `run` must not join it,
`--address auto` must, and only with its token.  Every search runs in its own process, as a user runs it; the
checks of what is recorded read the MLflow store and hash the store and the runs folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import GLUE_DIR
from test_reliability_faults import _runs

from ladasearch.cli.commands import main
from ladasearch.cli.common import MAX_ERROR_CHARS

GLUE = GLUE_DIR  # conftest: the shared GLUE folder
pytestmark = [pytest.mark.skipif(not GLUE.is_dir(), reason="shared GLUE data not found"), pytest.mark.ray]
CLI = [sys.executable, "-m", "ladasearch.cli"]
TOKEN = "ladasearch-test-token-" + "0" * 42
BASE_ENV = {k: v for k, v in os.environ.items()
            if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS") and not k.startswith("RAY_AUTH")}
ENV = {**BASE_ENV, "PYTHONUNBUFFERED": "1"}


def run_args(model: Path, root: Path, name: str, *extra: str) -> list[str]:
    return ["run", "--task", "sst2", "--target", "5x", "--data-dir", str(GLUE), "--model", str(model),
            "--teacher", str(model), "--max-train", "200", "--max-dev", "64", "--rounds", "2",
            "--steps-per-round", "3", "--final-steps", "2", "--final-budget", "0", "--space", "ratios",
            "--concurrency", "1",
            "--name", name, "--storage", str(root / "runs"), "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}",
            *extra]


def runs(root: Path, search: str):
    """(parent runs, child runs by start time) of ``search`` in root/mlflow.db."""
    return _runs(f"sqlite:///{root / 'mlflow.db'}", search)


def snapshot(*paths: Path) -> dict[str, str]:
    """Every file under ``paths`` -> sha256 of its bytes."""
    out = {}
    for top in paths:
        for path in sorted([top] if top.is_file() else top.rglob("*")):
            if path.is_file():
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def one_line(result, *fragments) -> str:
    """A CliRunner result or CompletedProcess: exit 2, one capped 'error:' line holding every fragment."""
    code = result.exit_code if hasattr(result, "exit_code") else result.returncode
    stderr = result.stderr
    assert code == 2, (code, result.stdout[-2000:], stderr[-2000:])
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-2000:]
    assert len(lines[0]) <= len("error: ") + MAX_ERROR_CHARS and "Traceback" not in result.stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


HEAD = """
import sys
from ray.cluster_utils import Cluster

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
print(cluster.address, *[node.node_id for node in cluster.list_all_nodes()], flush=True)
sys.stdin.read()  # until the test closes it
cluster.shutdown()
"""


@contextlib.contextmanager
def ray_head():
    """(address, node ids) of a one-CPU Ray head with token authentication, started in its own process (Ray
    reads the authentication mode once per process), always shut down."""
    head = subprocess.Popen([sys.executable, "-c", HEAD], env={**BASE_ENV, "RAY_AUTH_MODE": "token",
                                                               "RAY_AUTH_TOKEN": TOKEN},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        address, *nodes = head.stdout.readline().split()
        assert nodes, "the Ray head did not start"
        yield address, set(nodes)
    finally:
        head.stdin.close()
        try:
            head.wait(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(head.pid, signal.SIGKILL)  # whatever of the head is left
            head.wait()


@pytest.fixture(scope="module")
def existing_cluster():
    with ray_head() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def store_template(tmp_path_factory):
    """An empty MLflow store with its tables made (once: that takes seconds)."""
    from ladasearch.search.store import open_store

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    open_store(f"sqlite:///{path}", "ladasearch")
    return path


@pytest.fixture
def root(tmp_path, store_template):
    shutil.copy(store_template, tmp_path / "mlflow.db")
    return tmp_path


# ---- an address nobody answers at: one line within the time-out, nothing recorded --------------------------

def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("form", ["host:port", "ray://", "auto", "malformed"])
def test_unreachable_address_fails_within_the_timeout_and_records_nothing(tiny_dir, root, monkeypatch, form):
    port = closed_port()
    address = {"host:port": f"127.0.0.1:{port}", "ray://": f"ray://127.0.0.1:{port}", "auto": "auto",
               "malformed": "headnode"}[form]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")  # what `auto` finds: a head that died
    monkeypatch.chdir(root)
    before = snapshot(root)
    started = time.monotonic()
    result = CliRunner().invoke(main, run_args(tiny_dir, root, "dead", "--address", address, "--connect-timeout", "2",
                                               "--cache-dir", str(root / "cache")))
    assert time.monotonic() - started < 2 + 15  # the time-out, plus the interpreter's imports
    expected = "must be 'local', 'auto', HOST:PORT or ray://HOST:PORT" if form == "malformed" \
        else "could not reach the Ray cluster at"
    one_line(result, expected)
    # a search that never started: nothing recorded, its name free
    assert snapshot(root) == before
    assert runs(root, "dead") == ([], [])
    assert not (root / "runs" / "dead.ladasearch.json").exists() and not (root / "runs" / "dead").exists()


class QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # the server runs in the test's process: its log would be on the CLI's stderr
        pass


@contextlib.contextmanager
def not_a_ray_head(kind: str):
    """A local port that takes TCP but is no Ray head: a web server, or a process that never answers."""
    if kind == "web server":
        server = http.server.HTTPServer(("127.0.0.1", 0), QuietHandler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            server.server_close()
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(8)
            yield s.getsockname()[1]


@pytest.mark.parametrize("kind, why", [("web server", "it answered, but not as a gRPC server"),
                                       ("silent", "it accepted a connection but gave no gRPC answer within 2 s")])
def test_an_address_that_is_not_a_ray_head_fails_before_the_teacher(tiny_dir, root, monkeypatch, kind, why):
    """Used to pass the TCP probe, fine-tune the teacher, then block in ray.init for 845 s (a web server) or for
    good (a silent listener)."""
    monkeypatch.chdir(root)
    before = snapshot(root)
    with not_a_ray_head(kind) as port:
        started = time.monotonic()
        result = CliRunner().invoke(main, run_args(tiny_dir, root, "nothead", "--address", f"127.0.0.1:{port}",
                                                   "--connect-timeout", "2", "--cache-dir", str(root / "cache")))
        seconds = time.monotonic() - started
    assert seconds < 2 * 2 + 15  # the TCP probe and the gRPC probe, plus the interpreter's imports
    one_line(result, f"127.0.0.1:{port} is not a Ray head: {why}", "--connect-timeout")
    assert snapshot(root) == before
    assert not (root / "cache").exists()  # no teacher was fine-tuned
    assert runs(root, "nothead") == ([], [])


# ---- an existing cluster: a default run never joins it, --address auto does (with the token) ---------------

def test_default_run_is_private_sigterm_stops_it_and_resume_checks_the_teacher(tiny_dir, make_tiny, root,
                                                                               existing_cluster):
    address, cluster_nodes = existing_cluster
    teacher = root / "teacher"
    shutil.copytree(tiny_dir, teacher)
    env = {**ENV, "RAY_ADDRESS": address}  # ray.init() would join it; `run` must not
    log = root / "first.log"
    with open(log, "w") as out:
        first = subprocess.Popen(CLI + run_args(teacher, root, "t", "--trials", "3", "--scheduler", "fifo",
                                                "--steps-per-round", "15"),
                                 cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and first.poll() is None:
            time.sleep(1)
            try:
                _, children = runs(root, "t")
            except Exception:  # noqa: BLE001 - the store is being written
                continue
            if any(c.info.status == "FINISHED" for c in children):
                break
        assert first.poll() is None, log.read_text()[-3000:]
        first.send_signal(signal.SIGTERM)  # what `kill`, a scheduler or a container stop sends
        first.wait(timeout=180)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    text = log.read_text()
    assert first.returncode == 130, text[-3000:]
    assert "Ray: a private local Ray (1 node" in text and "ladasearch resume t" in text and "Traceback" not in text
    parents, children = runs(root, "t")
    assert len(parents) == 1 and parents[0].info.status == "KILLED"
    assert children and not {c.data.params["ray.node_id"] for c in children} & cluster_nodes

    # another teacher in its place: the resume refuses it, changing nothing
    make_tiny(seed=7, vocab_size=30522, hidden_size=32, num_attention_heads=2, intermediate_size=64,
              max_position_embeddings=128).save_pretrained(teacher)
    state = (root / "mlflow.db", root / "runs")
    before = snapshot(*state)
    refused = CliRunner().invoke(main, ["resume", "t", "--storage", str(root / "runs")])
    one_line(refused, "the teacher is not the one this search started with", "--allow-other-teacher")
    assert snapshot(*state) == before and runs(root, "t")[0][0].info.status == "KILLED"

    # told to, it goes on with it, and completes the search (another process, as after a reboot)
    done = subprocess.run(CLI + ["resume", "t", "--storage", str(root / "runs"), "--allow-other-teacher"], cwd=root,
                          env=ENV, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "allowed by --allow-other-teacher" in done.stdout
    parents, children = runs(root, "t")
    ids = [c.data.tags["ladasearch.trial_id"] for c in children]
    assert parents[0].info.status == "FINISHED" and len(ids) == len(set(ids)) == 3
    assert all(c.info.status == "FINISHED" for c in children)

    # resuming the complete search says so and changes nothing: no new parent metrics, the same best trial
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    history = {k: len(client.get_metric_history(parents[0].info.run_id, k)) for k in parents[0].data.metrics}
    before = snapshot(*state)
    again = CliRunner().invoke(main, ["resume", "t", "--storage", str(root / "runs")])
    assert again.exit_code == 0, (again.output[-2000:], again.exception)
    assert "search t is complete" in again.stdout and "nothing changed" in again.stdout
    assert "search t: " in again.stdout and "3 trials" in again.stdout
    assert snapshot(*state) == before
    parent = client.get_run(parents[0].info.run_id)
    assert parent.data.tags["ladasearch.best_trial"] == parents[0].data.tags["ladasearch.best_trial"]
    assert {k: len(client.get_metric_history(parent.info.run_id, k)) for k in parent.data.metrics} == history


@pytest.mark.cluster
def test_address_auto_joins_the_existing_cluster_with_its_token(tiny_dir, root, existing_cluster):
    address, cluster_nodes = existing_cluster
    env = {**ENV, "RAY_ADDRESS": address}
    args = CLI + run_args(tiny_dir, root, "j", "--trials", "1", "--address", "auto", "--connect-timeout", "5")

    before = snapshot(root / "mlflow.db")
    refused = subprocess.run(args, cwd=root, env={**env, "RAY_AUTH_MODE": "disabled"}, capture_output=True, text=True,
                             timeout=300)
    one_line(refused, "could not join the Ray cluster at 'auto'", "RAY_AUTH_MODE=token")
    assert snapshot(root / "mlflow.db") == before and runs(root, "j") == ([], [])
    assert not (root / "runs" / "j.ladasearch.json").exists()

    joined = subprocess.run(args, cwd=root, env={**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN},
                            capture_output=True, text=True, timeout=400)
    assert joined.returncode == 0, joined.stdout[-3000:] + joined.stderr[-3000:]
    assert "Ray: the Ray cluster at auto (1 node, 1 CPU)" in joined.stdout
    parents, children = runs(root, "j")
    assert parents[0].info.status == "FINISHED" and len(children) == 1
    assert children[0].data.params["ray.node_id"] in cluster_nodes


@pytest.mark.cluster
def test_a_dead_raylet_of_the_joined_node_fails_the_search_in_one_line(tiny_dir, root):
    """The node a joined search's driver runs on loses its raylet (``ray stop`` on that machine, a crash): as on
    the private Ray, one line, exit 1, and the parent run FAILED with the reason instead of RUNNING."""
    import psutil

    with ray_head() as (address, nodes):
        env = {**ENV, "RAY_ADDRESS": address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}
        log = root / "search.log"
        with open(log, "w") as out:
            search = subprocess.Popen(CLI + run_args(tiny_dir, root, "jd", "--trials", "2", "--address", "auto",
                                                     "--scheduler", "fifo", "--steps-per-round", "60"),
                                      cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + 300
            while time.time() < deadline and search.poll() is None:
                time.sleep(1)
                with contextlib.suppress(Exception):  # the store is being written
                    if runs(root, "jd")[1]:
                        break
            time.sleep(2)  # the trial trains
            assert search.poll() is None, log.read_text()[-3000:]
            raylets = [p for p in psutil.process_iter(["name", "cmdline"]) if p.info["name"] == "raylet"
                       and any(f"--node_id={n}" in (p.info["cmdline"] or ()) for n in nodes)]
            assert len(raylets) == 1
            raylets[0].send_signal(signal.SIGKILL)
            rc = search.wait(timeout=120)
        finally:
            if search.poll() is None:
                os.killpg(search.pid, signal.SIGKILL)
                search.wait()
    output = log.read_text()
    assert rc == 1, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and output.rstrip().endswith(errors[0]), output[-3000:]
    assert f"the raylet of this machine's Ray node (pid {raylets[0].pid}) died" in errors[0]
    assert "`ladasearch resume jd`" in errors[0] and "Traceback" not in output
    parents, children = runs(root, "jd")
    assert parents[0].info.status == "FAILED" and "raylet" in parents[0].data.tags["ladasearch.error"]
    assert children and all(c.info.status != "RUNNING" for c in children)


# ---- concurrent searches -----------------------------------------------------------------------------

def test_concurrent_runs_on_a_new_store_and_one_name(tiny_dir, tmp_path):
    """Three `run`s at once on a store that does not exist yet: 'a', 'b' and 'a' again.  Both names run to the
    end (the store is made once); exactly one 'a' runs, the other says the name is taken."""
    names = ["a", "b", "a"]
    procs = [subprocess.Popen(CLI + run_args(tiny_dir, tmp_path, name, "--trials", "1", "--rounds", "1",
                                             "--final-steps", "1"),
                              cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True) for name in names]
    try:
        outs = [p.communicate(timeout=500) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    codes = [p.returncode for p in procs]
    assert codes[1] == 0, outs[1][0][-2000:] + outs[1][1][-2000:]
    assert sorted([codes[0], codes[2]]) == [0, 2], [o[1][-2000:] for o in outs]
    loser = procs.index(next(p for p, n in zip(procs, names) if n == "a" and p.returncode == 2))
    line = one_line(subprocess.CompletedProcess([], 2, outs[loser][0], outs[loser][1]))
    assert "the search name 'a' is taken" in line or "a search named 'a' already exists" in line
    for name in ("a", "b"):
        parents, children = runs(tmp_path, name)
        assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(children) == 1
    assert not list((tmp_path / "runs").glob(".*.lock")) and not list(tmp_path.glob("*.lock"))
