"""Ambiguous or out-of-range options are one error line and exit 2, refused before any work."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ladasearch.cli.commands import main


@pytest.mark.parametrize("args, fragment", [
    (["ui", "--port", "-1"], "--port"),
    (["ui", "--port", "70000"], "--port"),
    (["run", "--task", "sst2", "--target", "5x", "--teacher-cache-gb", "-1"], "--teacher-cache-gb must be in [0, 1024]"),
    (["ui", "--host", "nosuch.invalid", "--port", "5999"], "give another --host"),
    (["export-model", "x", "--format", "hf", "--out", "o", "--max-drop", "inf"], "--max-drop"),
    (["export-model", "x", "--format", "hf", "--out", "o", "--max-drop", "-1"], "--max-drop"),
    (["run", "--task", "sst2", "--target", "5x", "--val-size", "1.0"], "ambiguous"),
    (["run", "--task", "sst2", "--target", "5x", "--val-size", "250.5"], "ambiguous"),
    (["compress", "--task", "sst2", "--target", "5x", "--val-size", "1.0"], "ambiguous"),
    (["run", "--task", "sst2", "--target", "5x", "--val-size", "200", "--val-file", "v.tsv"], "not both"),
    (["compress", "--task", "sst2", "--target", "5x", "--val-size", "0.2", "--val-file", "v.tsv"], "not both"),
])
def test_refused_in_one_line(args, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "v.tsv").write_text("sentence\tlabel\na\t1\n")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "v.tsv"]  # nothing written


@pytest.mark.parametrize("text, expected", [("0.1", 0.1), ("500", 500), ("1e3", 1000), ("0.5", 0.5)])
def test_val_size_forms_that_stay(text, expected):
    from ladasearch.cli.common import _val_size

    assert _val_size(None, None, text) == expected


@pytest.mark.parametrize("text", ["ratios: " + "[" * 1000 + "]" * 1000 + "\n",
                                  "".join("  " * i + f"k{i}:\n" for i in range(400)) + "  " * 400 + "x: 1\n"])
def test_deeply_nested_space_is_one_line(text, tmp_path):
    space = tmp_path / "deep.yaml"
    space.write_text(text)
    result = CliRunner().invoke(main, ["run", "--task", "sst2", "--target", "5x", "--space", str(space),
                                       "--storage", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nesting deeper than 20 levels" in lines[0] and "at line" in lines[0], result.stderr


@pytest.mark.parametrize("out", ["afile/sub", "/proc/nope/out"])
def test_export_out_that_cannot_be_made_is_one_line(out, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    (tmp_path / "src").mkdir()
    result = CliRunner().invoke(main, ["export-model", str(tmp_path / "src"), "--format", "hf", "--out", out])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot be written" in lines[0], result.stderr
