"""Inference of compressed models: random inputs, the timer, ONNX, the fast path, file size on disk, and
measure.compare."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from ladasearch.compress import compress_step, count_parameters, make_plan, solve
from ladasearch.errors import LadaError
from ladasearch.runtime.fast import logits_diff, optimize_for_inference
from ladasearch.runtime.sparse import SparseFactorizedLinear, SparseLinear
from ladasearch.serialize import load_compressed, save_compressed
from ladasearch.summary import ParamRecord, RatioRecord, TrialSummary


def params(counts) -> ParamRecord:
    return ParamRecord(counts.embedding, counts.encoder, counts.dense)


def summary_of(teacher, student, ratios, target: float, score: float = 0.5) -> TrialSummary:
    teacher_counts, student_counts = count_parameters(teacher), count_parameters(student)
    return TrialSummary(
        task="sst2", main_metric="accuracy", ratios=RatioRecord("hybrid", ratios.embedding, ratios.svd, ratios.weight),
        achieved_factor=teacher_counts.total / student_counts.total, teacher_params=params(teacher_counts),
        student_params=params(student_counts), matrices=(), score=score, metrics={"accuracy": score}, history=(),
        target=target)


def compressed(model, ratios, rounds: int = 2):
    student = copy.deepcopy(model)
    plans = make_plan(student, ratios)
    for k in range(1, rounds + 1):
        compress_step(student, plans, k / rounds)
    return student.eval()


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    """(teacher folder, student folder, teacher model, loaded student with masks) of a tiny 5x hybrid."""
    from conftest import build_tiny, feasible_ratios

    teacher = build_tiny(0)
    counts = count_parameters(teacher)
    ratios = feasible_ratios(counts, 5.0)
    student = compressed(teacher, ratios)
    root = tmp_path_factory.mktemp("export_models")
    summary = summary_of(teacher, student, ratios, 5.0)
    save_compressed(student, root / "student", summary)
    (root / "student" / "summary.json").write_text(json.dumps(summary.to_json()))
    teacher.save_pretrained(root / "teacher")
    return root / "teacher", root / "student", teacher, load_compressed(root / "student")


def test_onnx_export_matches_torch_logits(tiny_pair, tmp_path):
    onnx = pytest.importorskip("onnx")
    from ladasearch.runtime.onnx import check_onnx, export_onnx

    _, _, _, student = tiny_pair
    path = export_onnx(student, tmp_path / "m.onnx", seq_len=16)
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in graph.output] == ["logits"]
    dims = [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert all(dims), f"batch and sequence axes must be dynamic, got {dims}"
    # checked at another shape (3 x 37) than the one exported (2 x 16)
    assert check_onnx(student, path) < 1e-4
    assert check_onnx(student, path, batch=1, seq_len=5) < 1e-4
    # the masks of the student were not touched by the export
    assert any(n.endswith("_mask") for n, _ in student.named_buffers())


def test_fast_path_equals_plain_logits(tiny_pair):
    _, _, _, student = tiny_pair
    plain = load_compressed(tiny_pair[1], keep_masks=False)
    fast, report = optimize_for_inference(plain, mode="measure", tokens=64, runs=2)
    assert report["max_abs_diff"] < 1e-4
    assert logits_diff(student, fast) < 1e-4
    linear = {k: v for k, v in report["layers"].items() if v["kind"] == "linear"}
    assert linear and all(set(v["ms"]) == {"factored", "dense", "sparse"} for v in linear.values())
    assert report["layers"]["bert.embeddings.word_embeddings"]["choice"] == "factored"
    assert sum(report["counts"].values()) == len(report["layers"])
    # every layer forced sparse: still the same logits
    sparse, _ = optimize_for_inference(student, mode="plan", plan={k: "sparse" for k in linear})
    assert logits_diff(student, sparse) < 1e-4
    assert any(isinstance(m, SparseFactorizedLinear) for m in sparse.modules())
    # the input model is left as it was
    assert any(n.endswith("_mask") for n, _ in student.named_buffers())


def test_fast_path_merges_when_factors_cost_more(make_tiny):
    teacher = make_tiny(0)
    counts = count_parameters(teacher)
    # svd ratio 1: r*(m+n) >= m*n, so the merged dense matrix is cheaper
    ratios = solve(counts, 1.5, embedding=0.5, svd=1.0)
    student = compressed(teacher, ratios)
    fast, report = optimize_for_inference(student, mode="macs")
    linear = [v for v in report["layers"].values() if v["kind"] == "linear"]
    assert all(v["choice"] == "dense" for v in linear if v["macs_factored"] >= v["macs_dense"])
    assert report["counts"]["dense"] > 0
    assert logits_diff(student, fast) < 1e-4
    # pruning only: dense linear layers with masks -> dense or CSR weight
    pruned = compressed(teacher, solve(counts, 1.5, method="prune", embedding=0.5))
    fast, report = optimize_for_inference(pruned, mode="plan", plan={
        k: "sparse" for k in ("bert.encoder.layer.0.attention.self.query", "bert.pooler.dense")})
    assert isinstance(fast.bert.pooler.dense, SparseLinear)
    assert logits_diff(pruned, fast) < 1e-4


def test_fast_path_times_sparse_kernels_of_a_pruned_model_loaded_without_masks(make_tiny, tmp_path):
    teacher = make_tiny(0)
    counts = count_parameters(teacher)
    student = compressed(teacher, solve(counts, 2.0, method="prune", embedding=0.5))
    save_compressed(student, tmp_path / "p")
    plain = load_compressed(tmp_path / "p", keep_masks=False)  # what `ladasearch measure` times
    assert not any(n.endswith("_mask") for n, _ in plain.named_buffers())
    fast, report = optimize_for_inference(plain, mode="measure", tokens=64, runs=2, max_sparse_density=1.0)
    linear = {k: v for k, v in report["layers"].items() if v["kind"] == "linear"}
    assert linear and all(set(v["ms"]) == {"dense", "sparse"} and v["ms"]["sparse"] > 0 for v in linear.values())
    assert all(v["density"] < 1.0 for v in linear.values())
    assert logits_diff(student, fast) < 1e-4


def test_10x_model_file_is_at_most_a_sixth_of_the_teacher(make_tiny, ratios_for, tmp_path):
    teacher = make_tiny(0, vocab_size=3000, hidden_size=128, num_attention_heads=4, intermediate_size=512)
    counts = count_parameters(teacher)
    student = compressed(teacher, ratios_for(counts, 10.0))
    assert counts.total / count_parameters(student).total == pytest.approx(10.0, rel=1e-3)
    save_compressed(student, tmp_path / "student")
    save_compressed(teacher, tmp_path / "teacher")
    teacher.save_pretrained(tmp_path / "hf_teacher")
    student_bytes = (tmp_path / "student" / "model.safetensors").stat().st_size
    for folder in ("teacher", "hf_teacher"):
        teacher_bytes = (tmp_path / folder / "model.safetensors").stat().st_size
        assert student_bytes <= teacher_bytes / 6, (folder, student_bytes, teacher_bytes)
    loaded = load_compressed(tmp_path / "student")
    assert logits_diff(student, loaded) < 1e-5


def test_compare_measures_and_writes_the_summary(tiny_pair):
    from ladasearch.runtime.measure import compare, file_bytes, format_comparison

    teacher_dir, student_dir, _, _ = tiny_pair
    result = compare(teacher_dir, student_dir, seq_len=16, batch_sizes=(1, 4), runs={1: 2, 4: 2},
                     warmup={1: 1, 4: 1}, threads=1, fast_mode="macs")
    for role, folder in (("teacher", teacher_dir), ("student", student_dir)):
        info = result[role]
        assert info["file_bytes"] == file_bytes(folder) == (folder / "model.safetensors").stat().st_size
        assert set(info["latency_ms"]) == {"plain", "fast"}
        assert set(info["latency_ms"]["fast"]) == {"1", "4"}
        assert info["latency_ms"]["plain"]["4"]["median_ms"] > 0
        assert info["rss"]["plain"]["rss_bytes"] > 0 and "fast" in info["rss"]
    assert result["teacher"]["params"] / result["student"]["params"] == pytest.approx(5.0, rel=1e-2)
    assert result["teacher_over_student"]["file"] > 2
    assert result["student"]["fast_path"]["max_abs_diff"] < 1e-4
    summary = json.loads((student_dir / "summary.json").read_text())
    meta = json.loads((student_dir / "ladasearch.json").read_text())
    assert summary["inference"]["student"]["file_bytes"] == result["student"]["file_bytes"]
    assert meta["summary"]["inference"]["teacher"]["params"] == result["teacher"]["params"]
    assert summary["score"] == 0.5  # the rest of the summary is kept
    load_compressed(student_dir)  # still loadable
    assert "latency plain b4" in format_comparison(result)


def test_fast_path_difference_names_the_layer(tiny_pair):
    _, _, _, student = tiny_pair
    _, report = optimize_for_inference(student, mode="macs")
    linear = [name for name, layer in report["layers"].items() if layer["kind"] == "linear"]
    with pytest.raises(LadaError, match=r"changes the logits by .* \(allowed: < 0\); largest layer difference: "
                                        r"bert\..* \(dense\) by "):
        optimize_for_inference(student, mode="plan", plan=dict.fromkeys(linear, "dense"), atol=0.0)
    with pytest.raises(LadaError, match="no layer was replaced"):
        optimize_for_inference(student, mode="plan", plan={}, attention=None, atol=0.0)


def test_compare_rejects_a_hand_edited_summary(tiny_pair, tmp_path):
    import shutil

    from ladasearch.runtime.measure import write_inference

    _, student_dir, _, _ = tiny_pair
    folder = tmp_path / "edited"
    shutil.copytree(student_dir, folder)
    data = json.loads((folder / "summary.json").read_text())
    (folder / "summary.json").write_text(json.dumps({**data, "student_params": {"embedding": "many"}}))
    with pytest.raises(LadaError, match=r"summary.json.student_params.embedding must be int, got 'many'"):
        write_inference(folder, {"seq_len": 16})
    (folder / "summary.json").unlink()
    assert write_inference(folder, {"seq_len": 16}) == [folder / "ladasearch.json"]
    assert json.loads((folder / "ladasearch.json").read_text())["summary"]["inference"] == {"seq_len": 16}


@pytest.mark.parametrize("batch, seq_len, padded", [(1, 8, False), (3, 16, True), (2, 64, True)])
def test_random_inputs(make_tiny, batch, seq_len, padded):
    from ladasearch.runtime.inputs import INPUT_NAMES, random_inputs

    model = make_tiny(0)
    inputs = random_inputs(model, batch, seq_len, seed=3, padded=padded)
    assert tuple(inputs) == INPUT_NAMES
    assert all(t.shape == (batch, seq_len) and t.dtype == torch.int64 for t in inputs.values())
    assert int(inputs["input_ids"].max()) < model.config.vocab_size
    assert torch.equal(inputs["input_ids"], random_inputs(model, batch, seq_len, seed=3)["input_ids"])
    padding = int((inputs["attention_mask"] == 0).sum())
    assert padding == (seq_len - seq_len // 2 if padded else 0)
    assert int(inputs["token_type_ids"].sum()) == (seq_len - seq_len // 2 if padded and batch > 1 else 0)
    with pytest.raises(LadaError, match="above the model's maximum of 64"):
        random_inputs(model, batch, 65)


def test_timer_counts_and_orders_runs(make_tiny):
    import time

    from ladasearch.runtime.timing import forward_latency, latency_ms, time_interleaved

    calls = []
    timings = time_interleaved({"fast": lambda: calls.append("f"),
                                "slow": lambda: (calls.append("s"), time.sleep(0.004))}, runs=3, warmup=1)
    assert calls == ["f", "s", "f", "s", "f", "s", "f", "s"]  # warm-up, then interleaved
    assert timings["slow"].runs == 3 and timings["slow"].min_ms >= 4.0 > timings["fast"].median_ms
    assert timings["fast"].min_ms <= timings["fast"].median_ms
    model = make_tiny(0)
    assert 0 < latency_ms(model, 16, "cpu", repeats=3)
    assert forward_latency(model, 2, 16, runs=4).runs == 4
