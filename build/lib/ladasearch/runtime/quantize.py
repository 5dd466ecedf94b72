"""Dynamic int8 quantization of the exported ONNX graph, behind an accuracy gate.

onnxruntime's ``quantize_dynamic`` stores the weight matrices (MatMul/Gemm initializers, the factors of
factorized layers among them) and embedding tables as int8 with a per-tensor scale, and quantizes
activations on the fly; LayerNorm, softmax and the rest stay fp32.  It quantizes the traced graph, not one
with fused attention: that is faster here (see ``runtime.onnx_fusion``).  The gate scores the fp32 and the int8
graph on the same dev rows with onnxruntime and refuses the int8 model when it loses more than
``max_drop`` points (the main metric x 100) against the fp32 one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import LadaError
from .onnx_export import onnx_session
from .scoring import DevSet, onnx_score


@dataclass(frozen=True)
class GateResult:
    """Dev score of the fp32 and the int8 graph on the same rows, and the allowed drop (points)."""

    metric: str
    before: float
    after: float
    rows: int
    max_drop: float
    data: str

    @property
    def drop(self) -> float:
        """Points lost by int8: (fp32 - int8) x 100 of the main metric."""
        return (self.before - self.after) * 100

    @property
    def passed(self) -> bool:
        return self.drop <= self.max_drop

    def to_json(self) -> dict:
        return {"metric": self.metric, "fp32": self.before, "int8": self.after, "drop_points": self.drop,
                "max_drop_points": self.max_drop, "rows": self.rows, "data": self.data, "passed": self.passed}


def quantize_int8(fp32: str | Path, int8: str | Path) -> Path:
    """Write the dynamic-int8 version of the ONNX graph ``fp32`` to ``int8``."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    # the quantizer logs a generic pre-processing hint to the root logger on every call
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return Path(int8)


def accuracy_gate(fp32: str | Path, int8: str | Path, dev: DevSet, max_drop: float,
                  threads: int | None = None) -> GateResult:
    """Score both graphs on ``dev``; the result says whether int8 passes (use :func:`enforce`)."""

    before = onnx_score(onnx_session(fp32, threads), dev)
    after = onnx_score(onnx_session(int8, threads), dev)
    return GateResult(dev.task.main_metric, before, after, dev.rows, max_drop, dev.source)


def enforce(gate: GateResult) -> GateResult:
    """``gate`` when int8 passed, else the one-line LadaError that refuses the int8 model."""
    if not gate.passed:
        raise LadaError(f"int8 refused: dev {gate.metric} {gate.before:.4f} (fp32) -> {gate.after:.4f} (int8) on "
                        f"{gate.rows} rows is a drop of {gate.drop:.2f} points, above --max-drop {gate.max_drop:g}; "
                        f"export --format onnx (fp32) or allow a larger drop")
    return gate
