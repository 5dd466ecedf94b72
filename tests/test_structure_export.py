"""Structured students (heads and FFN neurons removed) survive every way out of ladasearch with their logits.

A student whose layers were narrowed by ``Ratios.structure`` is saved, reloaded, exported as a Hugging Face
folder (plain transformers with ``trust_remote_code=True``), as ONNX (onnxruntime) and through the fast
path; each must give the student's logits, and the stored matrices must have the narrow shapes (no zero
padding standing in for a removed head or neuron).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import ladasearch
from conftest import build_tiny, hf_shapes, random_features
from ladasearch.cli.commands import main
from ladasearch.compress import count_parameters, solve
from ladasearch.compress.structure import Widths
from ladasearch.config import CompressionConfig, TrainConfig
from ladasearch.data import get_task
from ladasearch.runtime.export import ExportSettings, export_model
from ladasearch.train.ladabert import compress_model
from ladasearch.serialize import load_compressed, save_compressed
from test_deploy_hf import TEXTS, tiny_tokenizer

ort = pytest.importorskip("onnxruntime")

METHODS = ("hybrid", "svd", "prune")
NO_MEASURE = ExportSettings(measure=False)
HEAD_SIZE = 16  # the tiny model: hidden 64, 4 heads


def structured_student(method: str):
    """A tiny student of ``method`` at 5x keeping half of every layer's heads and neurons, two short rounds."""
    teacher = build_tiny(0)
    counts = count_parameters(teacher)
    allowed = counts.total / 5.0 - counts.dense
    extra = {"svd": 0.6} if method == "hybrid" else {}
    ratios = solve(counts, 5.0, method=method, embedding=0.4 * allowed / counts.embedding, structure=0.5,
                   widths=Widths.of(teacher.config), **extra)
    return compress_model(teacher, random_features(32, seed=1), random_features(16, seed=2), get_task("sst2"),
                          ratios, TrainConfig(rounds=2, steps_per_round=2, final_steps=1, batch_size=8),
                          compression=CompressionConfig(calibration_batches=2, structure_batches=2))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """``saved(method)`` -> (compression result, its saved folder), made once per method."""
    made = {}

    def get(method: str):
        if method not in made:
            result = structured_student(method)
            folder = tmp_path_factory.mktemp(f"structured_{method}") / "student"
            save_compressed(result.student, folder, result.summary(target=5.0, model="tiny-bert"), tiny_tokenizer())
            made[method] = result, folder
        return made[method]

    return get


@pytest.fixture(params=METHODS)
def structured(request, saved):
    """(method, compression result, its saved folder)."""
    return (request.param, *saved(request.param))


def _inputs():
    return {k: v for k, v in tiny_tokenizer()(TEXTS, padding=True, return_tensors="pt").items()}


def _logits(model, inputs):
    with torch.no_grad():
        return model.eval()(**inputs).logits


def _kept(result) -> tuple[list[list[int]], list[int]]:
    widths = result.student.config.ladasearch_widths
    return widths["heads"], widths["intermediate"]


def test_the_student_is_narrowed(structured):
    _, result, _ = structured
    heads, neurons = _kept(result)
    # half of 4 heads and of 128 neurons per layer: the structure ratio took effect
    assert [len(h) for h in heads] == [2, 2] and neurons == [64, 64]


def test_save_and_load_give_equal_logits_and_parameter_counts(structured):
    _, result, folder = structured
    inputs = _inputs()
    want = _logits(result.student, inputs)
    for load in (ladasearch.load, load_compressed):
        loaded = load(folder)
        assert torch.allclose(_logits(loaded, inputs), want, atol=1e-5, rtol=0)
        assert count_parameters(loaded).total == count_parameters(result.student).total == result.student_params.total
        assert loaded.config.ladasearch_widths == result.student.config.ladasearch_widths


def _check_narrow(shapes: dict[str, tuple[int, ...]], heads, neurons, factorized: set[str]) -> None:
    """Every matrix around a removed unit has the kept width: rows (query/key/value, intermediate) or columns
    (attention output, FFN output); a factorized one's A holds the rows, its B the columns."""
    for i, (kept, width) in enumerate(zip(heads, neurons)):
        prefix = f"bert.encoder.layer.{i}."
        sides = [(f"attention.self.{n}", len(kept) * HEAD_SIZE, 0) for n in ("query", "key", "value")]
        sides += [("attention.output.dense", len(kept) * HEAD_SIZE, 1), ("intermediate.dense", width, 0),
                  ("output.dense", width, 1)]
        for name, size, axis in sides:
            full = prefix + name
            if full in factorized:
                assert shapes[f"{full}.A" if axis == 0 else f"{full}.B"][0] == size, full
            else:
                assert shapes[f"{full}.weight"][axis] == size, full
            if axis == 0:
                assert shapes[f"{full}.bias"] == (size,), full


def test_hf_folder_loads_narrow_with_the_students_logits(structured, tmp_path):
    from transformers import AutoModelForSequenceClassification, pipeline

    _, result, folder = structured
    out = tmp_path / "hf"
    export_model(folder, "hf", out, NO_MEASURE, log=lambda _: None)
    inputs = _inputs()
    want = _logits(ladasearch.load(folder), inputs)
    model = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True)
    assert torch.allclose(_logits(model, inputs), want, atol=1e-5, rtol=0), (_logits(model, inputs) - want).abs().max()
    classify = pipeline("text-classification", model=str(out), trust_remote_code=True, function_to_apply="none",
                        top_k=None)
    for text, row in zip(TEXTS, classify(TEXTS)):
        single = _logits(ladasearch.load(folder), dict(tiny_tokenizer()([text], return_tensors="pt")))[0]
        scores = {r["label"]: r["score"] for r in row}
        assert scores["negative"] == pytest.approx(float(single[0]), abs=1e-5)
        assert scores["positive"] == pytest.approx(float(single[1]), abs=1e-5)

    config = json.loads((out / "config.json").read_text())
    heads, neurons = _kept(result)
    assert config["ladasearch_widths"] == {"heads": heads, "intermediate": neurons}
    _check_narrow(hf_shapes(out), heads, neurons, set(config["factorized"]))


def test_saved_weights_are_narrow(structured):
    _, result, folder = structured
    heads, neurons = _kept(result)
    student = load_compressed(folder, keep_masks=False)
    factorized = {n for n, m in student.named_modules() if hasattr(m, "A") and hasattr(m, "B")}
    loaded = student.state_dict()
    _check_narrow({k: tuple(v.shape) for k, v in loaded.items()}, heads, neurons, factorized)
    # the file stores exactly those shapes: a dense tensor as it is, a pruned one as its kept values and a mask
    # of one bit per entry of the narrow matrix (8 per byte), never a padded teacher-width matrix
    for name, tensor in load_file(str(folder / "model.safetensors")).items():
        base, _, part = name.partition("::")
        if part == "mask":
            assert tensor.numel() == -(-loaded[base].numel() // 8), name
        elif part == "values":
            assert tensor.numel() <= loaded[base].numel(), name
        else:
            assert tensor.shape == loaded[base].shape, name


@pytest.mark.parametrize("pair", [True, False])
def test_onnx_matches_on_pairs_and_single_sentences_fed_from_get_inputs(structured, tmp_path, pair):
    _, result, folder = structured
    out = tmp_path / "onnx"
    record = export_model(folder, "onnx", out, NO_MEASURE, log=lambda _: None)
    assert record.written.onnx_check.worst < 1e-4
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(out / "model.onnx"), options, providers=["CPUExecutionProvider"])
    enc = tiny_tokenizer()(TEXTS, TEXTS[::-1] if pair else None, padding=True, return_tensors="np")
    assert enc["token_type_ids"].max() == (1 if pair else 0)
    got = session.run(["logits"], {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()})[0]
    with torch.no_grad():
        want = ladasearch.load(folder).eval()(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()
    assert np.abs(got - want).max() < 1e-4


def test_fast_path_keeps_the_logits(structured):
    from ladasearch.runtime.fast import optimize_for_inference

    _, result, folder = structured
    student = ladasearch.load(folder)
    for mode in ("macs", "measure"):
        fast, report = optimize_for_inference(student, mode=mode, check=True)
        inputs = _inputs()
        assert torch.allclose(_logits(fast, inputs), _logits(student, inputs), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fmt", ["hf", "onnx"])
def test_cli_export_model_of_a_structured_folder(saved, tmp_path, fmt):
    result, folder = saved("hybrid")  # the CLI path does not depend on the method
    out = tmp_path / fmt
    run = CliRunner().invoke(main, ["export-model", str(folder), "--format", fmt, "--out", str(out), "--no-measure"])
    assert run.exit_code == 0, (run.output, run.exception)
    assert f"wrote {out} ({fmt})" in run.output
    saved_record = json.loads((out / "ladasearch_export.json").read_text())
    assert saved_record["format"] == fmt and saved_record["achieved_factor"] == pytest.approx(result.achieved_factor)
    inputs = _inputs()
    want = _logits(ladasearch.load(folder), inputs).numpy()
    if fmt == "hf":
        from ladasearch.runtime.hf import load_hf_folder

        got = _logits(load_hf_folder(out), inputs).numpy()
    else:
        session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
        got = session.run(["logits"], {k: v.numpy().astype(np.int64) for k, v in inputs.items()})[0]
    assert np.abs(got - want).max() < 1e-4
