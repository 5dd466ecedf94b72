"""Pruned matrices stored packed in an export: the record of what was packed, and the ONNX packer.

The HF folder packs with ``nn.packed`` (the loading model unpacks).  In an ONNX file, the graph itself
unpacks when onnxruntime loads it.  ONNX has no bitmask tensor format (its ``SparseTensorProto`` spends an
8-byte index per kept entry: smaller than the dense fp32 matrix only below a density of one third), so a
matrix ``W`` with zeros is stored as its non-zero entries ``W/packed_values`` (after one leading fill value)
and ``W/packed_bits`` (one bit per entry, the order of ``nn.packed``), and a few nodes rebuild ``W`` under its
own name::

    present  = (bits >> [7..0]) mod 2, flattened to the entry count      (1 where W is not the fill value)
    position = cumsum(present) * present                                   (k for the k-th kept entry, else 0)
    W        = reshape(gather(values, position), shape)                    (values[0] = the fill value)

The fill value is 0, or in an integer table the most common entry: the int8 graph stores an embedding as
uint8 with a zero point, which is what its pruned zeros become.

Every input of those nodes is an initializer, so onnxruntime's constant folding (on by default, any
optimization level but ``ORT_DISABLE_ALL``) computes ``W`` once when the session is built: the graph that
runs is the dense one, with the same kernels and speed; a session with optimizations off still gets the right
``W``, rebuilt on each run.  Only initializers that packing makes smaller are packed (matrices with more than
about one entry in ``8 * itemsize`` pruned); the int8 graph is packed after quantization.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

_PREFIX = "ladasearch_pack/"
# the element types whose zeros are packed (the fp32 graph's and the int8 graph's weights)
_PACKABLE = (np.float32, np.float16, np.float64, np.int8, np.uint8)


@dataclass(frozen=True)
class Packed:
    """What an export stored packed: how many tensors, and their bytes dense and packed."""

    tensors: int
    dense_bytes: int     # the packed tensors as dense arrays
    packed_bytes: int    # the same, packed (values, bits and shape)

    def to_json(self) -> dict:
        return {"tensors": self.tensors, "dense_bytes": self.dense_bytes, "packed_bytes": self.packed_bytes}


def _fill(array: np.ndarray):
    """The value the pruned entries hold: 0, or in an integer table the most common value (an embedding
    quantized to uint8 stores its pruned zeros as the zero point)."""
    if array.dtype.itemsize == 1 and array.dtype.kind in "iu":   # int8 / uint8: count each of the 256 values
        counts = np.bincount(array.reshape(-1).view(np.uint8), minlength=256)
        return np.array(np.argmax(counts), np.uint8).view(array.dtype)[()]
    return array.dtype.type(0)


def _packed_parts(array: np.ndarray) -> dict[str, np.ndarray] | None:
    """The initializers that store ``array`` packed, or None where that is not smaller."""
    if array.ndim < 2 or array.dtype.type not in _PACKABLE:
        return None
    flat = array.reshape(-1)
    fill = _fill(array)
    present = flat != fill
    parts = {"packed_values": np.concatenate([np.full(1, fill, flat.dtype), flat[present]]),
             "packed_bits": np.packbits(present),
             "packed_numel": np.array([flat.size], np.int64),
             "packed_shape": np.array(array.shape, np.int64)}
    return parts if sum(v.nbytes for v in parts.values()) < array.nbytes else None


def _constants(graph) -> None:
    from onnx import numpy_helper

    for name, value in (("shifts", np.arange(7, -1, -1, dtype=np.uint8)), ("two", np.array(2, np.int64)),
                        ("axis1", np.array([1], np.int64)), ("flat", np.array([-1], np.int64)),
                        ("start", np.array([0], np.int64)), ("axis0", np.array(0, np.int64))):
        graph.initializer.append(numpy_helper.from_array(value, _PREFIX + name))


def _unpack_nodes(name: str) -> list:
    """The nodes that rebuild ``name`` from ``name/packed_values``, ``name/packed_bits``, ``name/packed_shape``."""
    from onnx import TensorProto, helper

    def c(x: str) -> str:
        return _PREFIX + x

    def t(x: str) -> str:
        return f"{name}/unpack/{x}"

    return [
        helper.make_node("Unsqueeze", [f"{name}/packed_bits", c("axis1")], [t("bytes")], name=t("Unsqueeze")),
        helper.make_node("BitShift", [t("bytes"), c("shifts")], [t("shifted")], direction="RIGHT",
                         name=t("BitShift")),
        helper.make_node("Cast", [t("shifted")], [t("wide")], to=TensorProto.INT64, name=t("Cast")),
        helper.make_node("Mod", [t("wide"), c("two")], [t("bit")], name=t("Mod")),
        helper.make_node("Reshape", [t("bit"), c("flat")], [t("padded")], name=t("Reshape_bits")),
        helper.make_node("Slice", [t("padded"), c("start"), f"{name}/packed_numel"], [t("present")],
                         name=t("Slice")),
        helper.make_node("CumSum", [t("present"), c("axis0")], [t("count")], name=t("CumSum")),
        helper.make_node("Mul", [t("count"), t("present")], [t("position")], name=t("Mul")),
        helper.make_node("Gather", [f"{name}/packed_values", t("position")], [t("flat")], axis=0,
                         name=t("Gather")),
        helper.make_node("Reshape", [t("flat"), f"{name}/packed_shape"], [name], name=t("Reshape")),
    ]


def pack_onnx(path: str | Path) -> Packed:
    """Rewrite the ONNX file ``path`` with every initializer that packing makes smaller stored packed."""
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    model = onnx.load(str(path))
    graph = model.graph
    if any(i.name.startswith(_PREFIX) for i in graph.initializer):
        raise ValueError(f"{path} is packed already")
    keep, nodes, count, dense, packed = [], [], 0, 0, 0
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        parts = _packed_parts(array)
        if parts is None:
            keep.append(init)
            continue
        keep += [numpy_helper.from_array(v, f"{init.name}/{k}") for k, v in parts.items()]
        nodes += _unpack_nodes(init.name)
        count += 1
        dense += array.nbytes
        packed += sum(v.nbytes for v in parts.values())
    if not nodes:
        return Packed(0, 0, 0)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    _constants(graph)
    # the rebuilt tensors come first: every node that reads one follows them
    rest = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + rest)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Packed(count, dense, packed)
