"""No output lands on what a command reads (issue 24): ``export-model SRC --out SRC --overwrite`` once wrote over
the compressed model and exited 0.  Now export-model, compress --out and report --out refuse an output that is
a source, lies inside one or holds one (one 'error:' line, exit 2, every source file byte-for-byte as before,
the model still loads), and --overwrite replaces an unrelated folder as a whole instead of merging into it.
"""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest
from click.testing import CliRunner

import ladasearch
from ladasearch.cli.commands import main
from ladasearch.errors import LadaError
from ladasearch.io import refuse_source_overlap
from test_deploy_hf import _one_error_line, make_source

EXPORT = ["--format", "hf", "--no-measure"]


@pytest.fixture(scope="module")
def saved_student(tmp_path_factory):
    """A saved tiny compressed student, built once; each test works on its own copy."""
    return make_source(tmp_path_factory.mktemp("saved") / "student", "hybrid")


@pytest.fixture
def src(saved_student, tmp_path):
    return shutil.copytree(saved_student, tmp_path / "models" / "student")


def digests(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def outs(src, tmp_path):
    (tmp_path / "link").symlink_to(src, target_is_directory=True)
    return {"same": src, "inside": src / "sub", "parent": src.parent, "symlink": tmp_path / "link",
            "dotted": src / ".." / "student"}


@pytest.mark.parametrize("where", ["same", "inside", "parent", "symlink", "dotted"])
def test_export_model_onto_its_source_is_refused(src, tmp_path, where):
    before = digests(src)
    out = outs(src, tmp_path)[where]
    result = CliRunner().invoke(main, ["export-model", str(src), *EXPORT, "--out", str(out), "--overwrite"])
    _one_error_line(result, f"--out {str(out)!r}", f"the source {str(src)!r}", "give --out a folder outside it")
    assert digests(src) == before
    assert not (src / "sub").exists()
    assert [p.name for p in src.parent.iterdir()] == ["student"]  # no staging or old folder left beside it
    ladasearch.load(src)


def test_overwrite_replaces_an_unrelated_folder_as_a_whole(src, tmp_path):
    fresh, out = tmp_path / "fresh", tmp_path / "deploy" / "hf"
    (out / "old-dir").mkdir(parents=True)
    (out / "stray.txt").write_text("from an earlier export")
    (out / "config.json").write_text("{}")
    before = digests(src)
    for args in (["--out", str(fresh)], ["--out", str(out), "--overwrite"]):
        result = CliRunner().invoke(main, ["export-model", str(src), *EXPORT, *args])
        assert result.exit_code == 0, (result.output, result.exception)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in fresh.iterdir())  # nothing stray kept
    assert digests(out)["config.json"] == digests(fresh)["config.json"]
    assert [p.name for p in out.parent.iterdir()] == ["hf"]  # the old folder and the staging one are gone
    mask = os.umask(0)
    os.umask(mask)
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask  # readable like any written file
    assert digests(src) == before


@pytest.mark.parametrize("option, where", [("--teacher", "same"), ("--teacher", "inside"), ("--teacher", "parent"),
                                           ("--model", "same")])
def test_compress_out_onto_its_teacher_or_model_is_refused(cache_dir, tiny_cli_model, tmp_path, option, where):
    teacher = shutil.copytree(tiny_cli_model, tmp_path / "models" / "teacher")
    before = digests(teacher)
    out = {"same": teacher, "inside": teacher / "student", "parent": teacher.parent}[where]
    # a data folder that does not exist: the refusal must come before any data (or model) is read
    args = ["compress", "--task", "sst2", "--data-dir", str(tmp_path / "no-glue"), "--target", "5x",
            "--embedding-ratio", "0.2", "--svd-ratio", "0.8", "--out", str(out), "--model"]
    args += [str(teacher)] if option == "--model" else [str(tiny_cli_model), "--teacher", str(teacher)]
    result = CliRunner().invoke(main, args)
    _one_error_line(result, f"--out {str(out)!r}", f"the source {str(teacher)!r}")
    assert digests(teacher) == before
    assert not cache_dir.exists()  # no teacher fine-tuned


@pytest.mark.parametrize("where", ["same", "inside", "parent"])
def test_report_out_onto_a_summary_source_is_refused(src, tmp_path, where):
    before = digests(src)
    out = outs(src, tmp_path)[where]
    result = CliRunner().invoke(main, ["report", str(src), "--out", str(out), "--no-log"])
    _one_error_line(result, f"--out {str(out)!r}", f"the source {str(src)!r}")
    assert digests(src) == before


@pytest.mark.parametrize("out, refused", [("student", True), ("student/x/y", True), (".", True),
                                          ("student-copy", False), ("other/student", False)])
def test_overlap_compares_whole_path_parts(tmp_path, monkeypatch, out, refused):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "student").mkdir()
    sources = ("student", None, "", "no-such-hub-model")  # '' and a missing name never collide
    if refused:
        with pytest.raises(LadaError, match="a folder outside it"):
            refuse_source_overlap(out, sources)
    else:
        refuse_source_overlap(out, sources)
