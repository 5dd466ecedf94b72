"""Pruned matrices stored packed: the bitmask codec (``nn.packed``), the ONNX graph that unpacks itself when
onnxruntime loads it (``runtime.packing``), and export files of pruned students smaller than dense ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import build_tiny
from ladasearch.nn.packed import pack, pack_bits, packed_bytes, unpack, unpack_bits, worth_packing
from ladasearch.runtime.export import DevData, ExportSettings, export_model
from ladasearch.runtime.packing import pack_onnx
from test_deploy_hf import make_source

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _sparse(shape, density: float, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(shape, generator=g).to(dtype)
    return values * (torch.rand(shape, generator=g) < density)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (64, 7), (2, 3, 4)])
@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pack_then_unpack_gives_the_tensor_back(shape, density, dtype):
    tensor = _sparse(shape, density, dtype)
    values, bits = pack(tensor)
    assert values.dtype == dtype and values.numel() == int(torch.count_nonzero(tensor))
    assert bits.dtype == torch.uint8 and bits.numel() == (tensor.numel() + 7) // 8
    assert torch.equal(unpack(values, bits, shape), tensor)
    assert packed_bytes(tensor) == values.numel() * values.element_size() + bits.numel()
    # numpy's bit order: the ONNX packer and the compressed checkpoint read the same bits
    present = (tensor != 0).reshape(-1)
    assert bits.tolist() == pack_bits(present).tolist() == np.packbits(present.numpy()).tolist()
    assert torch.equal(unpack_bits(bits, present.numel()), present)


def test_a_damaged_bitmask_is_refused():
    values, bits = pack(_sparse((8, 8), 0.5))
    bits[0] ^= 0b1000_0000
    with pytest.raises(ValueError, match="set bits: the file is damaged"):
        unpack(values, bits, (8, 8))


@pytest.mark.parametrize("zeros, worth", [(0, False), (128, False), (129, True), (4096, True)])
def test_an_fp32_matrix_is_packed_when_more_than_one_entry_in_32_is_zero(zeros, worth):
    tensor = torch.ones(64, 64)
    tensor.view(-1)[:zeros] = 0   # 4096 entries: packed costs 4 bytes a non-zero + 512 bytes of bits
    assert worth_packing(tensor) is worth
    assert not worth_packing(torch.zeros(4096))                       # a vector (bias, LayerNorm) stays
    assert not worth_packing(torch.zeros(64, 64, dtype=torch.int64))  # ids are not weights


def _matmul_graph(path, weight: np.ndarray, zero_point: int = 0):
    """y = x @ W for a float W; for an integer W, y = x @ (float(W) - zero_point), as a quantized graph reads its
    weights."""
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", weight.shape[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", weight.shape[1]])
    inits = [numpy_helper.from_array(weight, "W")]
    if weight.dtype.kind == "f":
        nodes = [helper.make_node("MatMul", ["x", "W"], ["y"])]
    else:
        inits.append(numpy_helper.from_array(np.array(zero_point, np.float32), "zp"))
        nodes = [helper.make_node("Cast", ["W"], ["Wf"], to=TensorProto.FLOAT),
                 helper.make_node("Sub", ["Wf", "zp"], ["Wd"]), helper.make_node("MatMul", ["x", "Wd"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("dtype, zero_point", [(np.float32, 0), (np.int8, 0), (np.uint8, 128)])
def test_a_packed_onnx_graph_is_smaller_and_computes_the_same(tmp_path, dtype, zero_point):
    """An int8 weight's pruned entries are 0; a uint8 table's are its zero point (the value packing leaves out)."""
    rng = np.random.default_rng(0)
    kept = rng.random((96, 80)) < 0.25
    if dtype == np.float32:
        weight = (rng.standard_normal((96, 80)) * kept).astype(dtype)
    else:
        weight = np.where(kept, rng.integers(1, 100, (96, 80)) + zero_point // 2, zero_point).astype(dtype)
    dense_weight = weight.astype(np.float32) - zero_point
    path = _matmul_graph(tmp_path / "m.onnx", weight, zero_point)
    dense_size = path.stat().st_size
    packed = pack_onnx(path)
    assert packed.tensors == 1 and packed.dense_bytes == weight.nbytes
    # a quarter kept: a quarter of the entries plus an eighth of a byte each (and the nodes that unpack)
    assert packed.packed_bytes < 0.4 * packed.dense_bytes and path.stat().st_size < dense_size
    x = rng.standard_normal((3, 96)).astype(np.float32)
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        options.optimized_model_filepath = str(tmp_path / f"optimized-{int(level)}.onnx")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        assert np.allclose(session.run(["y"], {"x": x})[0], x @ dense_weight, atol=1e-3)
    # with optimizations on, onnxruntime unpacks once at load: what runs is the dense graph
    folded = onnx.load(str(tmp_path / f"optimized-{int(ort.GraphOptimizationLevel.ORT_ENABLE_ALL)}.onnx"))
    assert "Gather" not in {n.op_type for n in folded.graph.node}
    with pytest.raises(ValueError, match="packed already"):
        pack_onnx(path)


def test_a_graph_without_zeros_is_left_as_it_is(tmp_path):
    path = _matmul_graph(tmp_path / "m.onnx", np.ones((16, 8), np.float32))
    before = path.read_bytes()
    assert pack_onnx(path).tensors == 0 and path.read_bytes() == before


@pytest.fixture(scope="module")
def pruned_sources(tmp_path_factory):
    return {m: make_source(tmp_path_factory.mktemp(f"packed_{m}") / "student", m) for m in ("prune", "hybrid")}


@pytest.fixture(scope="module")
def dense_teacher_files(tmp_path_factory):
    """The tiny teacher's weights file in each format (nothing to pack: every entry is non-zero)."""
    from ladasearch.runtime.onnx import export_onnx
    from ladasearch.runtime.quantize import quantize_int8

    root = tmp_path_factory.mktemp("teacher")
    teacher = build_tiny(0).eval()
    teacher.save_pretrained(root / "hf")
    fp32 = export_onnx(teacher, root / "fp32.onnx")
    return {"hf": root / "hf" / "model.safetensors", "onnx": fp32,
            "onnx-int8": quantize_int8(fp32, root / "int8.onnx")}


@pytest.mark.parametrize("method", ["prune", "hybrid"])
@pytest.mark.parametrize("fmt", ["hf", "onnx", "onnx-int8"])
def test_a_pruned_students_export_is_packed_and_smaller_than_the_dense_teachers(
        pruned_sources, dense_teacher_files, method, fmt, tmp_path):
    settings = ExportSettings(max_drop=100.0, measure=False, dev=DevData(data_dir=str(_tiny_glue(tmp_path))))
    record = export_model(pruned_sources[method], fmt, tmp_path / fmt, settings, log=lambda _: None)
    packed = record.written.packed
    assert packed.tensors > 0 and packed.packed_bytes < 0.6 * packed.dense_bytes
    teacher = dense_teacher_files[fmt]
    # 5x by pruning: the dense-zeros file of a pruning-only student was the teacher's size
    assert record.file_bytes < teacher.stat().st_size
    student, dense = _weight_bytes(record.folder / record.written.model_file), _weight_bytes(teacher)
    assert student < 0.6 * dense, (student, dense)
    saved = json.loads((record.folder / "ladasearch_export.json").read_text())["packed"]
    assert saved == packed.to_json()
    assert f"{packed.tensors} pruned matrices are stored packed" in (record.folder / "README.md").read_text()


def _weight_bytes(path) -> int:
    """Bytes of the weights a file stores (an ONNX graph's structure is most of a tiny model's file)."""
    if path.suffix == ".onnx":
        return sum(i.ByteSize() for i in onnx.load(str(path)).graph.initializer)
    return path.stat().st_size


def _tiny_glue(root):
    """A tiny SST-2 folder in the GLUE layout (the int8 gate's dev rows)."""
    words = ["the", "movie", "is", "good", "bad", "a", "not", "at", "all"]
    rng = np.random.default_rng(0)
    (root / "glue" / "SST-2").mkdir(parents=True)
    for split, rows in (("train", 8), ("dev", 24)):
        lines = ["sentence\tlabel"] + [f"{' '.join(rng.choice(words, 6))}\t{i % 2}" for i in range(rows)]
        (root / "glue" / "SST-2" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root / "glue"
