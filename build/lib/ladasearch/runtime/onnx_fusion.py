"""Fused attention in an exported ONNX graph: onnxruntime's transformer optimizer, checked, with a fallback.

``fuse_attention`` rewrites the eager attention of a graph from ``export_onnx`` (MatMul, Softmax and
Transpose chains per layer) into onnxruntime's ``Attention`` contrib op, keeps the result only when its
logits stay within ``ATOL`` of the torch model's, and otherwise leaves the traced graph in place; the
returned ``Fusion`` says which graph the file holds and why.

What fuses: a layer whose query, key and value are one MatMul each on the layer input (dense, possibly
pruned to stored zeros, possibly narrowed to fewer heads).  A factorized projection (two MatMuls) does
not match onnxruntime's pattern, so compressed students with factorized Q/K/V keep the traced graph.
Head counts are written into each layer's reshapes first (transformers traces them as -1), so layers
narrowed to different numbers of heads fuse with their own count instead of the config's.

Only attention is fused.  Measured on MiniLM, batch 32 x 128, one onnxruntime thread (1.32, AMD EPYC
with AVX-512), CPU time per run (the 2-core machine ran at load 6; wall times varied 2x, CPU times within
~5%): the teacher 540-567 ms traced, 517-537 ms with fused Attention (3-5% faster), 540 ms with
MultiHeadAttention, 585-605 ms with the optimizer's full BERT set (its ``SkipLayerNormalization`` kernel
costs ~7x the ``LayerNormalization`` + ``Add`` it replaces), 600-627 ms as an opset-23 ``Attention`` graph
from the torch.export exporter with SDPA (onnxruntime fuses SkipLayerNormalization there itself); the
untrained 10x hybrid students (factorized Q/K/V, nothing to fuse) 264-272 ms traced, 330 ms through the
full optimizer; with structure 0.5 162-170 ms and 228-232 ms.  Dynamic int8 is faster quantized from the
traced graph than from the fused one (teacher: 262-272 vs 313-317 ms; onnxruntime's docs suggest fusing
first for its QAttention), so ``quantize_int8`` takes the traced graph.  Hence the fusion is opt-in and
attention-only: a few percent, for models with dense Q/K/V, on this CPU.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from ..errors import LadaError
from .onnx_export import check_onnx_folder

ATOL = 1e-4  # fused vs torch logits: as for the traced graph (float rounding of another kernel order)


@dataclass(frozen=True)
class Fusion:
    """What ``fuse_attention`` left in the file: the fused graph (``applied``) or the traced one, and why."""

    applied: bool
    attention_layers: int          # Attention nodes in the fused graph (0 when nothing matched)
    layers: int                    # encoder layers of the model
    max_abs_diff: float | None     # fused graph vs torch; None when nothing was fused
    reason: str                    # why the traced graph was kept ("" when applied)

    @property
    def graph(self) -> str:
        return "fused attention" if self.applied else "traced (unfused) attention"

    def to_json(self) -> dict:
        return {"applied": self.applied, "graph": self.graph, "attention_layers": self.attention_layers,
                "layers": self.layers, "max_abs_diff": self.max_abs_diff, "reason": self.reason}


def _constant(name: str, producers: dict, initializers: dict) -> np.ndarray | None:
    """The value of ``name`` when a Constant node or an initializer holds it (through the Identity nodes by which
    the exporter shares equal tensors)."""
    from onnx import numpy_helper

    node = producers.get(name)
    while node is not None and node.op_type == "Identity":
        name, node = node.input[0], producers.get(node.input[0])
    if node is not None and node.op_type == "Constant" and node.attribute:
        return numpy_helper.to_array(node.attribute[0].t)
    return numpy_helper.to_array(initializers[name]) if name in initializers else None


def explicit_head_counts(proto) -> int:
    """Replace the -1 head count of every ``Reshape(Add(MatMul, bias), Concat(b, s, -1, head_size))`` by the
    layer's own count (bias width / head size), in place; returns how many reshapes were rewritten."""
    from onnx import numpy_helper

    graph = proto.graph
    producers = {o: n for n in graph.node for o in n.output}
    initializers = {i.name: i for i in graph.initializer}
    rewritten = 0
    for node in (n for n in graph.node if n.op_type == "Reshape"):
        shape, data = producers.get(node.input[1]), producers.get(node.input[0])
        if shape is None or shape.op_type != "Concat" or len(shape.input) != 4 or data is None or data.op_type != "Add":
            continue
        heads, head_size = (_constant(shape.input[i], producers, initializers) for i in (2, 3))
        if heads is None or head_size is None or heads.size != 1 or int(heads.ravel()[0]) != -1:
            continue
        # the bias is an initializer, or a Constant node when the exporter folded a small or repeated tensor
        values = (_constant(i, producers, initializers) for i in data.input)
        widths = [c.shape[0] for c in values if c is not None and c.ndim == 1]
        size = int(head_size.ravel()[0])
        if len(widths) != 1 or size <= 0 or widths[0] % size:
            continue
        name = f"{node.name or node.output[0]}/ladasearch_heads"
        graph.initializer.append(numpy_helper.from_array(np.array([widths[0] // size], dtype=np.int64), name))
        shape.input[2] = name
        rewritten += 1
    return rewritten


def _optimized(path: Path, out: Path) -> int:
    """Write onnxruntime's attention-only BERT optimization of ``path`` to ``out``; returns the Attention count."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    # SkipLayerNormalization and EmbedLayerNormalization are slower on CPU here (module docstring)
    options.enable_skip_layer_norm = options.enable_bias_skip_layer_norm = False
    options.enable_embed_layer_norm = False
    # it warns for every layer it cannot match, through loggers named by its bare module names (it puts its
    # folder on sys.path); the Fusion record says it once
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        # 0 heads / hidden size: each layer's count comes from its reshapes (explicit_head_counts)
        optimized = optimize_model(str(path), model_type="bert", num_heads=0, hidden_size=0, opt_level=0,
                                   optimization_options=options)
    finally:
        logging.disable(previous)
    optimized.save_model_to_file(str(out))
    return Counter(n.op_type for n in optimized.model.graph.node)["Attention"]


def fuse_attention(model: nn.Module, path: str | Path, atol: float = ATOL) -> Fusion:
    """Replace the ONNX file ``path`` (traced from ``model`` by ``export_onnx``) by its fused-attention form when
    every check passes; otherwise leave it as it is.  The returned record says which."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise LadaError(f"no ONNX file at {str(path)!r} to fuse")
    layers = len(getattr(getattr(model.base_model, "encoder", None), "layer", ()))
    with tempfile.TemporaryDirectory(prefix="ladasearch-fuse-") as scratch:
        staged, fused = Path(scratch) / "heads.onnx", Path(scratch) / "fused.onnx"
        proto = onnx.load(str(path))
        explicit_head_counts(proto)
        onnx.save(proto, str(staged))
        try:
            count = _optimized(staged, fused)
        except Exception as exc:  # noqa: BLE001 - any optimizer failure keeps the traced graph
            return Fusion(False, 0, layers, None, f"onnxruntime's optimizer failed: {type(exc).__name__}: {exc}")
        if count == 0:
            return Fusion(False, 0, layers, None, "no layer matched onnxruntime's attention pattern (factorized "
                                                  "query/key/value projections do not)")
        try:
            gap = check_onnx_folder(model.eval(), fused).worst
        except Exception as exc:  # noqa: BLE001 - a graph onnxruntime cannot run is a failed fusion
            return Fusion(False, count, layers, None, f"the fused graph does not run: {type(exc).__name__}: {exc}")
        if not gap < atol:
            return Fusion(False, count, layers, gap,
                          f"the fused graph's logits differ by {gap:.3g} (allowed < {atol:g})")
        shutil.copyfile(fused, path)
    return Fusion(True, count, layers, gap, "")
