"""`export-model --format onnx|onnx-int8`: onnxruntime folders with optional token_type_ids, and the int8 gate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import ladasearch
from ladasearch.cli.commands import main
from ladasearch.runtime.export import DevData, ExportSettings, export_model
from ladasearch.errors import LadaError
from ladasearch.runtime.inputs import INPUT_NAMES
from test_deploy_hf import METHODS, TEXTS, make_source, tiny_tokenizer

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

NO_MEASURE = ExportSettings(measure=False)


@pytest.fixture(scope="module")
def glue(tmp_path_factory):
    """A tiny SST-2 folder in the GLUE layout, over the tiny tokenizer's words."""
    root = tmp_path_factory.mktemp("glue")
    (root / "SST-2").mkdir()
    rng = np.random.default_rng(0)
    words = ["the", "movie", "is", "good", "bad", "a", "not", "at", "all"]
    for split, rows in (("train", 8), ("dev", 40)):
        lines = ["sentence\tlabel"] + [f"{' '.join(rng.choice(words, 6))}\t{i % 2}" for i in range(rows)]
        (root / "SST-2" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return {m: make_source(tmp_path_factory.mktemp(f"onnx_{m}") / "student", m) for m in METHODS}


def _session(path):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("method", METHODS)
def test_onnx_folder_lists_every_input_and_matches_torch_fed_as_serving_code_feeds_it(sources, method, tmp_path):
    from transformers import AutoTokenizer

    out = tmp_path / "onnx"
    record = export_model(sources[method], "onnx", out, NO_MEASURE, log=lambda _: None)
    graph = onnx.load(str(out / "model.onnx"))
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    for graph_input in graph.graph.input:
        assert [d.dim_param for d in graph_input.type.tensor_type.shape.dim] == ["batch", "sequence"]
    assert {o.domain: o.version for o in graph.opset_import}[""] == record.written.opset == 17
    session = _session(out / "model.onnx")
    # serving code builds its feed from get_inputs(): an input hidden as an overridable initializer is dropped
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert session.get_overridable_initializers() == []

    student = ladasearch.load(sources[method]).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)  # the tokenizer beside model.onnx
    for texts in (TEXTS, TEXTS[:1]):  # two batch sizes and sequence lengths
        enc = tokenizer(texts, padding=True, return_tensors="np")
        with torch.no_grad():
            want = student(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()
        got = session.run(["logits"], {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()})[0]
        assert np.abs(got - want).max() < 1e-4
    # an MNLI-shaped pair batch fed through get_inputs(): its second segment reaches the graph
    enc = tokenizer([TEXTS[0], TEXTS[1]], [TEXTS[1], TEXTS[0] + " indeed"], padding=True, return_tensors="np")
    assert enc["token_type_ids"].max() == 1
    feed = {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()}
    with torch.no_grad():
        want = student(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
        one_segment = student(**{k: torch.from_numpy(v) for k, v in feed.items() if k != "token_type_ids"}).logits
    gap = np.abs(session.run(["logits"], feed)[0] - want).max()
    assert gap < 1e-4
    assert np.abs(one_segment.numpy() - want).max() > 10 * gap   # the segment ids matter: the check above sees them
    assert record.written.onnx_check.worst < 1e-4
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"} and "auto_map" not in config
    assert "ONNX opset 17" in (out / "README.md").read_text()


@pytest.mark.parametrize("which", [*METHODS, "dense teacher"])
def test_int8_graph_of_every_model_runs_a_pair_batch_fed_from_get_inputs(sources, which, tmp_path):
    """A dense word embedding (pruning only, the teacher) once crashed onnxruntime's int8 graph, and a segment
    input with a default value was left out of get_inputs(), so pairs ran as one segment."""
    from transformers import AutoTokenizer

    from conftest import build_tiny
    from ladasearch.runtime.quantize import quantize_int8
    from ladasearch.runtime.onnx import export_onnx

    model = build_tiny(0).eval() if which == "dense teacher" else ladasearch.load(sources[which]).eval()
    fp32 = export_onnx(model, tmp_path / "fp32.onnx")
    int8 = quantize_int8(fp32, tmp_path / "int8.onnx")
    tokenizer = AutoTokenizer.from_pretrained(sources["hybrid"])
    enc = tokenizer([TEXTS[0], TEXTS[2]], [TEXTS[1], TEXTS[1]], padding=True, return_tensors="np")
    with torch.no_grad():
        want = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()
    for path, atol in ((fp32, 1e-4), (int8, 0.5)):   # int8: weight rounding only
        session = _session(path)
        assert [i.name for i in session.get_inputs()] == list(INPUT_NAMES)
        got = session.run(["logits"], {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()})[0]
        assert got.shape == want.shape and np.abs(got - want).max() < atol


def test_int8_passes_the_gate_and_records_both_scores(sources, glue, tmp_path):
    settings = ExportSettings(max_drop=100.0, dev=DevData(data_dir=str(glue)), measure=False)
    record = export_model(sources["hybrid"], "onnx-int8", tmp_path / "int8", settings, log=lambda _: None)
    fp32 = export_model(sources["hybrid"], "onnx", tmp_path / "fp32", NO_MEASURE, log=lambda _: None)
    gate = record.written.gate
    assert gate.rows == 40 and gate.passed and gate.metric == "accuracy"
    assert gate.drop == pytest.approx((gate.before - gate.after) * 100)
    # the fp32 score is the fp32 graph's, recomputed here on the same rows
    from ladasearch.runtime.scoring import load_dev, onnx_score

    dev = load_dev(settings.dev.for_task("sst2"), tiny_tokenizer())
    assert onnx_score(_session(fp32.folder / "model.onnx"), dev) == pytest.approx(gate.before)
    assert onnx_score(_session(record.folder / "model.onnx"), dev) == pytest.approx(gate.after)
    graph = onnx.load(str(record.folder / "model.onnx"))
    assert any(i.data_type == onnx.TensorProto.INT8 for i in graph.graph.initializer)
    assert record.file_bytes < fp32.file_bytes
    assert [i.name for i in _session(record.folder / "model.onnx").get_inputs()] == list(INPUT_NAMES)
    card = (record.folder / "README.md").read_text()
    assert f"dev accuracy {gate.before:.4f} (fp32 ONNX) -> {gate.after:.4f} (int8) on 40 rows" in card
    saved = json.loads((record.folder / "ladasearch_export.json").read_text())["int8_gate"]
    assert saved["fp32"] == gate.before and saved["int8"] == gate.after and saved["passed"]
    # the saved tokenizer is not left padding every input to the gate's length
    assert json.loads((record.folder / "tokenizer.json").read_text())["padding"] is None


def test_int8_gate_refuses_a_drop_above_max_drop(sources, glue, tmp_path, monkeypatch):
    import ladasearch.runtime.quantize as quantize

    out = tmp_path / "int8"
    args = ["export-model", str(sources["hybrid"]), "--format", "onnx-int8", "--out", str(out), "--data-dir",
            str(glue), "--no-measure"]
    real, scored = quantize.onnx_score, []

    def int8_loses_a_point(session, dev):  # the gate scores fp32 first, then int8
        scored.append(real(session, dev))
        return scored[-1] - (0.01 if len(scored) % 2 == 0 else 0.0)

    monkeypatch.setattr(quantize, "onnx_score", int8_loses_a_point)
    result = CliRunner().invoke(main, [*args, "--max-drop", "0.5"])
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: int8 refused: dev accuracy"), result.stderr
    assert "above --max-drop 0.5" in lines[0]
    assert not out.exists()  # nothing is left behind
    # ... and the same run with room for that drop passes
    assert CliRunner().invoke(main, [*args, "--max-drop", "1.5"]).exit_code == 0


def test_int8_gate_enforce_uses_points():
    from ladasearch.runtime.quantize import GateResult, enforce

    gate = GateResult("accuracy", 0.80, 0.785, 200, 1.0, "dev")
    assert gate.drop == pytest.approx(1.5) and not gate.passed
    with pytest.raises(LadaError, match="drop of 1.50 points, above --max-drop 1"):
        enforce(gate)
    assert enforce(GateResult("accuracy", 0.80, 0.795, 200, 1.0, "dev")).passed


def test_onnx_card_measures_onnxruntime(sources, tmp_path):
    from ladasearch.runtime.formats import Timed

    settings = ExportSettings(timed=Timed(batches=(2,), seq_len=16, runs=2, threads=1))
    record = export_model(sources["hybrid"], "onnx", tmp_path / "onnx", settings, log=lambda _: None)
    assert [(x.runtime, x.batch, x.seq_len) for x in record.latency] == [("onnxruntime", 2, 16)]
    assert record.memory.runtime == "onnxruntime" and record.memory.peak_bytes > record.memory.baseline_bytes
    assert "Latency in onnxruntime" in (record.folder / "README.md").read_text()


# ---- fused attention (runtime.onnx_fusion) -----------------------------------------------------------------

def _narrowed_tiny(heads: list[list[int]]):
    """The tiny classifier with each layer cut to ``heads`` (random weights in the narrowed linears)."""
    from conftest import build_tiny
    from ladasearch.nn.units import narrow_layers

    model = build_tiny(0)
    narrow_layers(model, {"heads": heads, "intermediate": [128, 128]})
    return model.eval()


def _attention_heads(path) -> list[int]:
    graph = onnx.load(str(path)).graph
    return [next(a.i for a in n.attribute if a.name == "num_heads") for n in graph.node if n.op_type == "Attention"]


@pytest.mark.parametrize("heads", [[[0, 1, 2, 3], [0, 1, 2, 3]], [[2], [0, 1, 3]]])
def test_attention_fuses_with_each_layers_head_count(heads, tmp_path):
    from ladasearch.runtime.onnx_export import check_onnx_folder
    from ladasearch.runtime.onnx import export_onnx
    from ladasearch.runtime.onnx_fusion import fuse_attention

    model = _narrowed_tiny(heads)
    path = export_onnx(model, tmp_path / "m.onnx")
    fusion = fuse_attention(model, path)
    assert fusion.applied and fusion.reason == "" and fusion.attention_layers == fusion.layers == 2
    # each layer's own count: a global 4 would split a 1-head layer into 4 heads of 4 and change the logits
    assert _attention_heads(path) == [len(h) for h in heads]
    check = check_onnx_folder(model, path)  # with and without token_type_ids, padded rows
    assert check.worst < 1e-4 and fusion.max_abs_diff == pytest.approx(check.worst)
    assert not any(n.op_type == "Softmax" for n in onnx.load(str(path)).graph.node)


def test_factorized_projections_keep_the_traced_graph(sources, tmp_path):
    from ladasearch.runtime.onnx import export_onnx
    from ladasearch.runtime.onnx_fusion import fuse_attention

    student = ladasearch.load(sources["svd"])
    path = export_onnx(student, tmp_path / "m.onnx")
    before = path.read_bytes()
    fusion = fuse_attention(student, path)
    assert not fusion.applied and fusion.attention_layers == 0 and "factorized" in fusion.reason
    assert path.read_bytes() == before
    assert fusion.to_json()["graph"] == "traced (unfused) attention"


def test_a_fusion_that_fails_its_check_or_the_optimizer_leaves_the_file(tmp_path, monkeypatch):
    from conftest import build_tiny
    from ladasearch.runtime import onnx_fusion
    from ladasearch.runtime.onnx import export_onnx

    model = build_tiny(0)
    path = export_onnx(model, tmp_path / "m.onnx")
    before = path.read_bytes()
    # no difference is below 0: the fused graph is refused however close it is
    fusion = onnx_fusion.fuse_attention(model, path, atol=0.0)
    assert not fusion.applied and fusion.attention_layers == 2 and "allowed < 0" in fusion.reason
    assert fusion.max_abs_diff < 1e-4 and path.read_bytes() == before

    def broken(src, out):
        raise RuntimeError("no pattern today")

    monkeypatch.setattr(onnx_fusion, "_optimized", broken)
    fusion = onnx_fusion.fuse_attention(model, path)
    assert not fusion.applied and fusion.reason.endswith("RuntimeError: no pattern today")
    assert path.read_bytes() == before
    with pytest.raises(LadaError, match="no ONNX file"):
        onnx_fusion.fuse_attention(model, tmp_path / "missing.onnx")
