"""A saved model folder is checked before anything is allocated: edited ranks, huge ranks, truncated or
tampered weights and garbage metadata are one LadaError (one `error:` line, exit 2 in the CLI)."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import build_tiny, feasible_ratios
from test_serialize import _logits, _summary, _trained_student

import ladasearch
from ladasearch.cli.commands import main
from ladasearch.compress import count_parameters
from ladasearch.errors import LadaError
from ladasearch.integrity import DIGEST_KEY, RECORD_KEY
from ladasearch.serialize import META, WEIGHTS, save_compressed, verify_saved

EMBEDDING = "bert.embeddings.word_embeddings"
QUERY = "bert.encoder.layer.0.attention.self.query"


@pytest.fixture(scope="module", params=["hybrid", "svd"])
def saved(request, tmp_path_factory):
    """(folder, logits, method) of a tiny 5x student: hybrid = pruned factors (masks), svd = plain factors."""
    student = _trained_student(build_tiny(0), feasible_ratios(count_parameters(build_tiny(0)), 5.0, request.param))
    folder = save_compressed(student, tmp_path_factory.mktemp(request.param) / "model", summary=_summary(0.5))
    return folder, _logits(student), request.param


@pytest.fixture
def folder(saved, tmp_path) -> Path:
    """A fresh copy of the saved folder, free to damage."""
    return Path(shutil.copytree(saved[0], tmp_path / "model"))


def _edit_meta(folder: Path, edit) -> None:
    meta = json.loads((folder / META).read_text())
    edit(meta)
    (folder / META).write_text(json.dumps(meta))


def _set_rank(name: str, rank):
    return lambda meta: meta["layers"][name].update(rank=rank)


def _tensor_bytes(file: Path, key: str) -> tuple[int, int]:
    """Absolute [start, end) byte range of tensor ``key``'s data in a safetensors file."""
    raw = file.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    start, end = json.loads(raw[8:8 + size])[key]["data_offsets"]
    return 8 + size + start, 8 + size + end


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _load_error(folder: Path) -> str:
    with pytest.raises(LadaError) as info:
        ladasearch.load(folder)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def test_untampered_folder_loads_identical_logits(saved, folder):
    meta = json.loads((folder / META).read_text())
    assert meta[DIGEST_KEY] == hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest()
    assert not list(folder.glob("*.tmp"))
    verify_saved(folder)
    assert torch.equal(_logits(ladasearch.load(folder)), saved[1])
    assert torch.equal(_logits(ladasearch.load(folder, keep_masks=False)), saved[1])


@pytest.mark.parametrize("key, what", [(DIGEST_KEY, "the weights"), (RECORD_KEY, "config.json")])
@pytest.mark.parametrize("edit", ["removed", "null"])
def test_a_folder_without_a_checksum_loads_only_when_trusted(saved, folder, capfd, key, what, edit):
    """A missing or null checksum used to mean "unchecked": flipped weight bytes then loaded silently."""
    _edit_meta(folder, (lambda meta: meta.pop(key)) if edit == "removed" else (lambda meta: meta.update({key: None})))
    assert _load_error(folder) == (f"{folder / META} records no {key}, so {what} cannot be checked; load it with "
                                   f"trust_unchecked=True (export-model --trust-unchecked) only if you know where "
                                   f"it came from")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = ladasearch.load(folder, trust_unchecked=True)
    assert torch.equal(_logits(model), saved[1])
    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize("edit", [
    lambda c: c.update(hidden_act="relu"),
    lambda c: c.update(layer_norm_eps=0.5),
    lambda c: c.update(attention_probs_dropout_prob=0.3),
])
def test_an_edited_config_is_refused(folder, edit):
    """config.json was not covered: hidden_act relu or layer_norm_eps 0.5 loaded silently with other logits."""
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    assert _load_error(folder).endswith("changed after saving (their SHA-256 is not the recorded one): the model "
                                        "would not compute what was saved")


@pytest.mark.parametrize("layer", [EMBEDDING, QUERY])
@pytest.mark.parametrize("delta", [1, -1])
def test_rank_edited_by_one_is_refused(folder, layer, delta):
    rank = json.loads((folder / META).read_text())["layers"][layer]["rank"]
    _edit_meta(folder, _set_rank(layer, rank + delta))
    message = _load_error(folder)
    assert f"{folder / WEIGHTS}: {layer}.A" in message
    assert message.endswith("(was a rank or config.json edited?)")
    assert f", {rank + delta}]" in message  # the shape the edited rank implies, against the stored one


def _peak_rss() -> int:
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]) * 1024


@pytest.mark.parametrize("layer, limit", [(EMBEDDING, 64), (QUERY, 64)])
@pytest.mark.parametrize("rank", [65, 60000, 10**9])
def test_huge_rank_refused_fast_without_allocating(folder, layer, limit, rank):
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc for the peak resident memory")
    _edit_meta(folder, _set_rank(layer, rank))
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current resident size
    before = _peak_rss()
    message = _load_error(folder)
    grown = _peak_rss() - before
    assert message == (f"{folder / META}: layer {layer!r} has rank {rank}; its {1000 if layer == EMBEDDING else 64}"
                       f" x 64 matrix allows ranks 1 to {limit}")
    # refused before allocating: the peak memory, not the wall time (a loaded machine makes any time bound flaky)
    assert grown < 20 * 2**20  # rank 60000 alone would be a 240 MB factor, 10**9 four terabytes


def test_huge_config_refused_without_allocating(folder):
    """A config.json edited to a huge vocabulary builds no table: the file's tensors must match it first."""
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": 10**9}))
    if Path("/proc/self/clear_refs").exists():
        Path("/proc/self/clear_refs").write_text("5")
    before = _peak_rss()
    message = _load_error(folder)
    assert f"{EMBEDDING}.A" in message and "1000000000" in message
    assert _peak_rss() - before < 20 * 2**20  # a 10**9 x 64 table would be 256 GB


@pytest.mark.parametrize("keep", [0, 7, 8, 100, 0.5, -1])
def test_truncated_weights_refused(folder, keep):
    data = (folder / WEIGHTS).read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else (len(data) + keep if keep < 0 else keep)
    (folder / WEIGHTS).write_bytes(data[:cut])
    assert _load_error(folder).startswith(f"{folder / WEIGHTS} is not a readable safetensors file "
                                          f"(truncated or damaged?): ")


@pytest.mark.parametrize("payload", [b"", b"garbage" * 20, b"\xff" * 64, b"PK\x03\x04 not safetensors"])
def test_non_safetensors_weights_refused(folder, payload):
    (folder / WEIGHTS).write_bytes(payload)
    assert "is not a readable safetensors file" in _load_error(folder)


@pytest.mark.parametrize("key", ["classifier.weight", f"{QUERY}.bias", "bert.pooler.dense.bias"])
def test_tampered_byte_refused_by_checksum(folder, key):
    start, end = _tensor_bytes(folder / WEIGHTS, key)
    data = bytearray((folder / WEIGHTS).read_bytes())
    data[(start + end) // 2] ^= 0x01  # one bit of one float: same shapes, same header
    (folder / WEIGHTS).write_bytes(bytes(data))
    message = _load_error(folder)
    assert message.startswith(f"{folder / WEIGHTS} has SHA-256 ")
    assert message.endswith("the weights changed after saving (damaged or edited)")


@pytest.mark.parametrize("saved", ["hybrid"], indirect=True)  # the svd student has no masks
def test_tampered_mask_refused(folder):
    start, _ = _tensor_bytes(folder / WEIGHTS, f"{QUERY}.A::mask")
    data = bytearray((folder / WEIGHTS).read_bytes())
    data[start] ^= 0x01  # one entry more or less kept than ::values holds
    (folder / WEIGHTS).write_bytes(bytes(data))
    _edit_meta(folder, lambda meta: meta.pop(DIGEST_KEY))  # even without a checksum
    with pytest.raises(LadaError, match=f"{QUERY}.A::mask keeps "):
        ladasearch.load(folder, trust_unchecked=True)


@pytest.mark.parametrize("text, fragment", [
    ("{not json", "is not valid JSON"),
    ("", "is not valid JSON"),
    ("\udcff", "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('"format"', "must hold a JSON object"),
    ('{"format": "1"}', "has format '1'; this ladasearch reads format 1"),
])
def test_garbage_meta_refused(folder, text, fragment):
    (folder / META).write_bytes(text.encode("utf-8", "surrogateescape"))
    message = _load_error(folder)
    assert message.startswith(str(folder / META)) and fragment in message


@pytest.mark.parametrize("edit, fragment", [
    (lambda m: m.update(architecture="system"), "has architecture 'system'; allowed: a transformers model class"),
    (lambda m: m.update(architecture="AutoModel"), "has architecture 'AutoModel'"),
    (lambda m: m.update(architecture=7), "has architecture '7'"),
    (lambda m: m.update(layers=[]), "'layers' must be an object"),
    (lambda m: m["layers"][QUERY].update(type="sparse"), "has type 'sparse'; allowed: dense, factorized_linear"),
    (lambda m: m["layers"][QUERY].update(rank="16"), "has rank '16'; a rank is an integer >= 1"),
    (lambda m: m["layers"][QUERY].update(rank=True), "has rank 'True'; a rank is an integer >= 1"),
    (lambda m: m["layers"][QUERY].update(rank=0), "has rank '0'; a rank is an integer >= 1"),
    (lambda m: m["layers"][QUERY].update(rank=16.5), "has rank '16.5'"),
    (lambda m: m["layers"][QUERY].update(type="dense"), "is dense and has rank"),
    (lambda m: m["layers"][QUERY].update(pruned=["C"]), "lists pruned tensor(s) ['C']; allowed: A, B, bias"),
    (lambda m: m["layers"][QUERY].update(pruned="A"), "has pruned 'A'; allowed: a list of distinct tensor names"),
    (lambda m: m["layers"].update({"bert.nope": m["layers"][QUERY]}), "'bert.nope' is not a compressible module"),
    (lambda m: m["layers"].update({"classifier": m["layers"][QUERY]}), "'classifier' is not a compressible"),
    (lambda m: m["layers"][EMBEDDING].update(type="factorized_linear"), "but BertForSequenceClassification has a "
                                                                        "Embedding there"),
    (lambda m: m["layers"].pop(QUERY), "does not match its architecture (ladasearch.json and config.json)"),
    (lambda m: m.update({DIGEST_KEY: "abc"}), "records weights_sha256 'abc'; allowed: 64 hex digits"),
    (lambda m: m.update({DIGEST_KEY: "0" * 64}), "the weights changed after saving"),
])
def test_edited_meta_refused(folder, edit, fragment):
    _edit_meta(folder, edit)
    assert fragment in _load_error(folder)


@pytest.mark.parametrize("name, fragment", [
    (WEIGHTS, f"{WEIGHTS} is missing"),
    (META, "is not a ladasearch model folder (no ladasearch.json in it)"),
    ("config.json", "config.json is missing"),
])
def test_missing_file_refused(folder, name, fragment):
    (folder / name).unlink()
    assert fragment in _load_error(folder)


@pytest.mark.parametrize("text", ["{broken", '{"model_type": "bert", "hidden_size": "wide"}', "[]"])
def test_garbage_config_refused(folder, text):
    (folder / "config.json").write_text(text)
    assert str(folder / "config.json") in _load_error(folder)


# ---- through the CLI: one `error:` line, exit 2, nothing in the folder changed -------------------------

def _truncate(folder: Path) -> None:
    (folder / WEIGHTS).write_bytes((folder / WEIGHTS).read_bytes()[:-9])


def _flip_byte(folder: Path) -> None:
    start, _ = _tensor_bytes(folder / WEIGHTS, "classifier.weight")
    data = bytearray((folder / WEIGHTS).read_bytes())
    data[start] ^= 0x80
    (folder / WEIGHTS).write_bytes(bytes(data))


DAMAGE = {
    "rank+1": (lambda f: _edit_meta(f, _set_rank(QUERY, 17)), "was a rank or config.json edited?"),
    "rank 60000": (lambda f: _edit_meta(f, _set_rank(EMBEDDING, 60000)), "has rank 60000; its 1000 x 64 matrix"),
    "truncated": (_truncate, "is not a readable safetensors file"),
    "tampered": (_flip_byte, "the weights changed after saving"),
    "garbage json": (lambda f: (f / META).write_text("{\"format\": 1, "), "is not valid JSON"),
}


@pytest.fixture
def teacher_dir(tmp_path) -> Path:
    build_tiny(0).save_pretrained(tmp_path / "teacher")
    return tmp_path / "teacher"


def _one_error_line(result, fragment: str) -> str:
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    return lines[0]


@pytest.mark.parametrize("damage", DAMAGE)
def test_measure_refuses_damaged_student(folder, teacher_dir, damage):
    DAMAGE[damage][0](folder)
    before = _digest(folder)
    result = CliRunner().invoke(main, ["measure", str(teacher_dir), str(folder), "--runs", "1", "--batch-sizes",
                                       "1", "--seq-len", "8", "--fast-mode", "macs"])
    line = _one_error_line(result, DAMAGE[damage][1])
    assert str(folder) in line
    assert _digest(folder) == before  # nothing written into the student
    assert "student: loading" not in result.output  # refused before any model was loaded


def test_export_reads_the_record_and_refuses_garbage_json(folder):
    result = CliRunner().invoke(main, ["export", str(folder), "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert "sst2" in result.output and "0.5" in result.output
    (folder / META).write_text("{\"format\": 1, ")
    _one_error_line(CliRunner().invoke(main, ["export", str(folder)]), f"could not read {folder / META}")


def test_cli_process_exits_2_with_one_line(folder, teacher_dir):
    """A real process (no CliRunner): the truncated file is one line on stderr and exit 2."""
    _truncate(folder)
    proc = subprocess.run([sys.executable, "-m", "ladasearch.cli", "measure", str(teacher_dir), str(folder)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"error: {folder / WEIGHTS} is not a readable safetensors file (truncated or damaged?): "
                     f"Error while deserializing header: incomplete metadata, file not fully covered"]
