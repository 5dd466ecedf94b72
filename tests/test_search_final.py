"""The search's final budget: the best trial distilled further becomes best_model (MLflow's parent run, export-model),
scored once on dev; the trial keeps its own checkpoint; a kill during the final distillation is resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_search import GLUE, _args, _client, _runs

from ladasearch.cli.commands import main
from ladasearch.serialize import saved_summary
from ladasearch.tracking import Tracker

pytestmark = [pytest.mark.skipif(not GLUE.is_dir(), reason="shared GLUE data not found"), pytest.mark.ray]


def test_the_final_budget_trains_the_best_trial_and_ships_it(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = CliRunner().invoke(main, _args(tiny_dir, tmp_path, "fb", 2, ["--final-budget", "8",
                                                                         "--final-eval-every", "4",
                                                                         "--concurrency", "1", "--scheduler", "fifo"]))
    assert result.exit_code == 0, result.output[-3000:]
    assert "final distillation: step 8/8" in result.output
    shipped = tmp_path / "runs" / "fb" / "final" / "best"
    assert f"best model: {shipped}" in result.output
    summary = saved_summary(shipped)
    assert summary.final["steps"] == 8 and [p["step"] for p in summary.final["curve"]] == [0, 4, 8]
    best = max(summary.final["curve"], key=lambda p: (p["score"], -p["step"]))
    assert summary.score_at_target == best["score"] and summary.final["best_step"] == best["step"]
    assert summary.dev_score is not None and summary.history[-1].split == "val"

    (parent,), children = _runs(uri, "fb")
    client = _client(uri)
    curve = client.get_metric_history(parent.info.run_id, "final_val_score")
    assert [(m.step, m.value) for m in curve] == [(p["step"], p["score"]) for p in summary.final["curve"]]
    assert parent.data.metrics["val_score"] == summary.score_at_target
    assert parent.data.metrics["dev_score"] == summary.dev_score
    recorded = Tracker(uri).read_summary(parent.info.run_id, "best_summary.json")
    assert recorded["final"]["steps"] == 8 and recorded["dev_score"] == summary.dev_score
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/final_curve.png" in artifacts
    shipped_meta = client.download_artifacts(parent.info.run_id, "best_model/ladasearch.json", str(tmp_path / "dl"))
    assert json.loads(Path(shipped_meta).read_text())["summary"]["final"]["steps"] == 8
    # the chosen trial keeps its own checkpoint and record, scored on dev as the trial it was
    chosen = [c for c in children if c.data.tags.get("ladasearch.chosen") == "best"]
    assert len(chosen) == 1 and "dev_score" in chosen[0].data.metrics
    assert parent.data.metrics["trial_dev_score"] == chosen[0].data.metrics["dev_score"]
    trial_summary = Tracker(uri).read_summary(chosen[0].info.run_id)
    assert trial_summary.get("final") is None
    # the trials drew the same batches: the second read the teacher's outputs the first one wrote, and the
    # cache is gone once the search is done
    reads = sorted((int(c.data.params["teacher_cache.read_back"]), int(c.data.params["teacher_cache.computed"]))
                   for c in children)
    assert reads == [(0, 8), (8, 0)], reads
    assert not (tmp_path / "runs" / "fb" / "teacher_outputs").exists()


def test_no_final_budget_ships_the_trial_checkpoint(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, _args(tiny_dir, tmp_path, "nf", 1, ["--final-budget", "0"]))
    assert result.exit_code == 0, result.output[-3000:]
    assert "final distillation" not in result.output
    assert not (tmp_path / "runs" / "nf" / "final").exists()
    assert saved_summary(result.output.split("best model: ", 1)[1].split()[0]).final is None


@pytest.mark.parametrize("budget", ["ten", "-3", "1.5steps"])
def test_a_bad_final_budget_is_one_line(budget, tmp_path):
    result = CliRunner().invoke(main, ["run", "--task", "sst2", "--target", "5x", "--final-budget", budget,
                                       "--storage", str(tmp_path)])
    assert result.exit_code == 2 and "final budget" in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_kill_during_the_final_distillation_is_resumed(tiny_dir, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "ladasearch.cli"]
    log_file = tmp_path / "first.log"
    with open(log_file, "w") as log:
        first = subprocess.Popen(cli + _args(tiny_dir, tmp_path, "fk", 1, ["--final-budget", "1200",
                                                                         "--final-eval-every", "40",
                                                                         "--final-rows", "400"]),
                                 cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 600
        while time.time() < deadline and first.poll() is None:
            if "final distillation: step" in log_file.read_text():
                break
            time.sleep(0.5)
        assert first.poll() is None, log_file.read_text()[-2000:]
        os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray it started
        first.wait()
    assert (tmp_path / "runs" / "fk" / "final" / "resume" / "trainer.pt").is_file()
    done = subprocess.run(cli + ["resume", "fk", "--storage", str(tmp_path / "runs")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1800)  # CI ran it at load 4-5 on 2 cores
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "final distillation: continuing at step" in done.stdout
    assert "final distillation: step 1200/1200" in done.stdout
    (parent,), _ = _runs(uri, "fk")
    assert parent.info.status == "FINISHED"
    assert saved_summary(tmp_path / "runs" / "fk" / "final" / "best").final["steps"] == 1200


def test_screened_points_become_the_first_trials_and_never_rank(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = CliRunner().invoke(main, _args(tiny_dir, tmp_path, "sc", 2, ["--screen", "4", "--warm-start", "none",
                                                                         "--concurrency", "1"]))
    assert result.exit_code == 0, result.output[-3000:]
    assert [line.split(":")[0] for line in result.output.splitlines() if line.startswith("screen ")] == \
        [f"screen {i}/4" for i in range(1, 5)]
    (parent,), children = _runs(uri, "sc")
    tracker = Tracker(uri)
    screened = tracker.read_summary(parent.info.run_id, "screen.json")["points"]
    warm = json.loads(Path(_client(uri).download_artifacts(parent.info.run_id, "warm_starts.json",
                                                           str(tmp_path / "dl"))).read_text())
    assert len(screened) == 4
    scores = [p["score"] for p in screened if p["score"] is not None]
    assert scores == sorted(scores, reverse=True)                      # best first
    ranked = [p for p in screened if p["score"] is not None][:2]
    assert [w["params"] for w in warm] == [p["params"] for p in ranked]  # the best two are the trials
    assert sorted(json.dumps(c.data.params.get("embedding_ratio")) for c in children) == sorted(
        json.dumps(str(p["params"]["embedding_ratio"])) for p in ranked)
    # a screened score is no trial's: the ranked score is a trained round's, at the target
    best = Tracker(uri).read_summary(parent.info.run_id, "best_summary.json")
    assert best["history"][-1]["losses"] and len(children) == 2


def test_a_bad_screen_count_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["run", "--task", "sst2", "--target", "5x", "--screen", "-1",
                                       "--storage", str(tmp_path)])
    assert result.exit_code == 2 and "--screen" in result.stderr and len(result.stderr.splitlines()) == 1
