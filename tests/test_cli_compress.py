"""`ladasearch compress`: user errors exit 2 with one 'error:' line; a tiny end-to-end run saves a loadable model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

import ladasearch
from ladasearch.cli.commands import main
from ladasearch.compress import count_parameters


def _base(glue_dir, model, *extra):
    return ["compress", "--task", "sst2", "--data-dir", str(glue_dir), "--model", str(model),
            "--max-train", "20", "--max-dev", "10", *extra]


def _assert_user_error(result, *fragments):
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


@pytest.fixture
def runner(cache_dir):
    return CliRunner()


@pytest.mark.parametrize("target, message", [
    ("0x", "target '0x' must be above 1x"),
    ("abc", "target 'abc' is not a reduction factor"),
    ("0.5x", "target '0.5x' must be above 1x"),
    ("1x", "target '1x' must be above 1x"),
    ("-3x", "target '-3x' is not a reduction factor"),
])
def test_bad_target(runner, glue_dir, tiny_cli_model, target, message):
    result = runner.invoke(main, _base(glue_dir, tiny_cli_model, "--target", target, "--embedding-ratio", "0.2",
                                       "--svd-ratio", "0.8"))
    _assert_user_error(result, message)


def test_unknown_task(runner, glue_dir, tiny_cli_model):
    args = _base(glue_dir, tiny_cli_model, "--target", "5x")
    args[args.index("sst2")] = "nope"
    _assert_user_error(runner.invoke(main, args), "unknown task 'nope'", "sst2")


def test_unreachable_target(runner, glue_dir, tiny_cli_model):
    result = runner.invoke(main, _base(glue_dir, tiny_cli_model, "--target", "1000x", "--embedding-ratio", "0.2",
                                       "--svd-ratio", "0.8"))
    _assert_user_error(result, "target 1000x is unreachable", "largest reachable target is below")


def test_missing_data_folder(runner, glue_dir, tiny_cli_model, tmp_path):
    result = runner.invoke(main, _base(tmp_path / "no-such-glue", tiny_cli_model, "--target", "5x"))
    _assert_user_error(result, "no-such-glue", "does not exist")


def test_data_folder_without_task(runner, tiny_cli_model, tmp_path):
    (tmp_path / "glue" / "RTE").mkdir(parents=True)
    result = runner.invoke(main, _base(tmp_path / "glue", tiny_cli_model, "--target", "5x"))
    _assert_user_error(result, "task folder 'SST-2' not found")


@pytest.mark.parametrize("kind", ["empty folder", "file", "missing", "bad config"])
def test_model_path_not_a_model(runner, glue_dir, tmp_path, kind):
    path = tmp_path / "notamodel"
    if kind == "empty folder":
        path.mkdir()
    elif kind == "file":
        path.write_text("hello")
    elif kind == "bad config":
        path.mkdir()
        (path / "config.json").write_text("{not json")
    result = runner.invoke(main, _base(glue_dir, path, "--target", "5x", "--embedding-ratio", "0.2",
                                       "--svd-ratio", "0.8"))
    _assert_user_error(result, str(path))


@pytest.mark.parametrize("option, value, message", [
    ("--embedding-ratio", "1.5", "embedding ratio must be a retention fraction in (0, 1], got 1.5"),
    ("--embedding-ratio", "0", "embedding ratio must be a retention fraction in (0, 1], got 0.0"),
    ("--svd-ratio", "-0.5", "svd ratio must be a retention fraction in (0, 1], got -0.5"),
])
def test_ratio_out_of_range(runner, glue_dir, tiny_cli_model, option, value, message):
    others = ["--svd-ratio", "0.8"] if option == "--embedding-ratio" else ["--embedding-ratio", "0.2"]
    result = runner.invoke(main, _base(glue_dir, tiny_cli_model, "--target", "5x", option, value, *others))
    _assert_user_error(result, message)


def test_missing_ratios(runner, glue_dir, tiny_cli_model):
    result = runner.invoke(main, _base(glue_dir, tiny_cli_model, "--target", "5x"))
    _assert_user_error(result, "give exactly two of embedding, svd, weight")


def test_method_fixing_a_ratio(runner, glue_dir, tiny_cli_model):
    result = runner.invoke(main, _base(glue_dir, tiny_cli_model, "--target", "5x", "--method", "svd",
                                       "--embedding-ratio", "0.2", "--weight-ratio", "0.5"))
    _assert_user_error(result, "method 'svd' fixes the weight ratio at 1, got 0.5")


def test_paper_ratios_not_fitting(runner, glue_dir, tiny_cli_model):
    result = runner.invoke(main, _base(glue_dir, tiny_cli_model, "--target", "3x", "--paper-ratios"))
    _assert_user_error(result, "the paper gives ratios for 2.5x, 5x, 7.5x, 10x, not 3x")


@pytest.mark.parametrize("option, message", [
    ("--factorizer", "unknown factorizer 'nope'; allowed: "),
    ("--prune-score", "unknown pruning score 'nope'; allowed: "),
])
def test_unknown_plugin(runner, glue_dir, tiny_cli_model, option, message):
    result = runner.invoke(main, _base(glue_dir, tiny_cli_model, "--target", "5x", option, "nope"))
    line = _assert_user_error(result, message)
    assert ("svd" if option == "--factorizer" else "magnitude") in line


def test_bad_train_option(runner, glue_dir, tiny_cli_model):
    result = runner.invoke(main, _base(glue_dir, tiny_cli_model, "--target", "5x", "--rounds", "0"))
    _assert_user_error(result, "train.rounds must be an integer >= 1, got 0")


def test_compress_tiny_model_end_to_end(runner, glue_dir, tiny_cli_model, tmp_path, cache_dir):
    out = tmp_path / "out"
    result = runner.invoke(main, _base(glue_dir, tiny_cli_model, "--target", "5x", "--embedding-ratio", "0.19",
                                       "--svd-ratio", "0.8", "--teacher-steps", "2", "--rounds", "2",
                                       "--steps-per-round", "2", "--final-steps", "1", "--batch-size", "8",
                                       "--out", str(out)))
    assert result.exit_code == 0, (result.output, result.exception)
    lines = result.stdout.strip().splitlines()
    assert sum(line.startswith("round ") for line in lines) == 2
    assert any(line.startswith("final: val accuracy") for line in lines)  # rounds are scored on validation rows
    assert any(line.startswith(f"saved {out} (achieved 5.000x, dev accuracy") for line in lines)
    printed = json.loads(lines[-1])
    assert printed["ratios"]["embedding"] == 0.19 and printed["ratios"]["svd"] == 0.8

    summary = json.loads((out / "summary.json").read_text())
    assert summary["achieved_factor"] == pytest.approx(5.0, rel=0.01)
    assert summary["achieved_factor"] == printed["achieved_factor"] and summary["score"] == printed["score"]
    assert summary["task"] == "sst2" and summary["target"] == 5.0 and summary["distill"] is True
    assert len(summary["history"]) == 3
    assert (summary["factorizer"], summary["prune_score"]) == ("svd", "magnitude")
    assert summary["data"]["train_rows"] == 20 and summary["data"]["task"] == "sst2"
    assert (summary["data"]["val_rows"], summary["data"]["dev_rows"], summary["data"]["dev_split"]) == (1000, 10, "dev")
    assert summary["score_split"] == "val" and summary["dev_score"] == printed["dev_score"] == summary["dev_metrics"][
        "accuracy"]
    assert ladasearch.TrialSummary.from_json(summary).achieved_factor == summary["achieved_factor"]
    assert (cache_dir / "teachers").is_dir()  # the teacher was fine-tuned into the tmp cache

    student = ladasearch.load(out)
    assert count_parameters(student).total == summary["student_params"]["total"]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    enc = tokenizer(["a fine film", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert student(**enc).logits.shape == (2, 2)


def test_no_distill_flag(runner, glue_dir, tiny_cli_model, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(main, _base(glue_dir, tiny_cli_model, "--target", "5x", "--embedding-ratio", "0.19",
                                       "--svd-ratio", "0.8", "--teacher-steps", "1", "--rounds", "1",
                                       "--steps-per-round", "1", "--final-steps", "0", "--batch-size", "8",
                                       "--no-distill", "--out", str(out)))
    assert result.exit_code == 0, (result.output, result.exception)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["distill"] is False
    assert set(summary["history"][0]["losses"]) >= {"loss", "loss_task"}
    assert "loss_logits" not in summary["history"][0]["losses"]


def test_exit_code_through_real_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ladasearch.cli", "compress", "--task", "sst2", "--target", "abc"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: target 'abc' is not a reduction factor; write it like '10x' or '2.5x'")
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("args, message", [
    (["compress", "--task", "sst2", "--target", "5x", "--method", "foo"], "Invalid value for '--method': 'foo'"),
    (["compress", "--task", "sst2", "--target", "5x", "--precision", "fp16"], "Invalid value for '--precision'"),
    (["compress", "--task", "sst2", "--target", "5x", "--threads", "0"], "Invalid value for '--threads': 0"),
    (["run", "--task", "sst2", "--target", "5x", "--trials", "many"], "Invalid value for '--trials': 'many'"),
    (["compress", "--target", "5x"], "Missing option '--task'"),
    (["compress", "--task", "sst2", "--bogus", "1"], "No such option '--bogus'"),
    (["compres"], "No such command 'compres'"),
])
def test_usage_errors_are_one_line(runner, args, message):
    line = _assert_user_error(runner.invoke(main, args), message)
    assert "--help`" in line


def test_help_and_version_exit_0(runner):
    assert runner.invoke(main, ["compress", "--help"]).exit_code == 0
    version = runner.invoke(main, ["--version"])
    assert version.exit_code == 0 and ", version " in version.output
