"""The ONNX folder of a compressed model: ``model.onnx`` that onnxruntime runs, with its tokenizer and labels.

The graph is traced from the exported model (see ``hf``: masks folded, factors merged where cheaper) by
``runtime.onnx.export_onnx``: inputs ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64,
dynamic batch and sequence axes; all three are graph inputs ``session.get_inputs()`` lists), output
``logits`` (dynamic batch axis).  The folder also holds ``config.json`` (label names, architecture
sizes; no ``auto_map``: there is no torch code in this folder) and the tokenizer.

Optimum's ``ORTModelForSequenceClassification`` is not targeted: ``optimum-onnx`` (the package that holds
it since optimum 2.0) requires transformers < 4.58, and this project pins transformers 5.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import LadaError
from .inputs import max_length, random_inputs
from .onnx import export_onnx, onnx_session
from .packing import Packed, pack_onnx

OPSET = 17
ONNX_FILE = "model.onnx"
ATOL = 1e-4  # onnxruntime vs. torch logits: float rounding of a different kernel order only


@dataclass(frozen=True)
class OnnxCheck:
    """max |logits(onnxruntime) - logits(torch)| on a pair batch (segment 1 used) and on one-segment rows."""

    pair: float
    single: float

    @property
    def worst(self) -> float:
        return max(self.pair, self.single)


def onnx_feed(session, inputs: dict) -> dict[str, np.ndarray]:
    """The feed of every input ``session.get_inputs()`` lists, as serving code builds it; ``token_type_ids``
    as zeros when the inputs have none (a tokenizer without segments: one segment)."""
    arrays = {k: (v.cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)).astype(np.int64)
              for k, v in inputs.items()}
    if "token_type_ids" not in arrays and "input_ids" in arrays:
        arrays["token_type_ids"] = np.zeros_like(arrays["input_ids"])
    missing = [i.name for i in session.get_inputs() if i.name not in arrays]
    if missing:
        raise LadaError(f"the ONNX graph needs the inputs {', '.join(missing)}, which the batch does not have")
    return {i.name: arrays[i.name] for i in session.get_inputs()}


def run_onnx(session, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    """Logits of ``session`` for ``inputs`` (see :func:`onnx_feed`)."""
    return session.run(["logits"], onnx_feed(session, inputs))[0]


def check_onnx_folder(model: nn.Module, path: str | Path, session=None) -> OnnxCheck:
    """Compare ``path`` with ``model`` on a batch of another shape than the traced one (padding, segment 1), and
    on the same rows in one segment, each fed as :func:`onnx_feed` builds it."""

    session = session or onnx_session(path)
    inputs = random_inputs(model, 3, max_length(model, 37), seed=1, padded=True)
    single = {k: v for k, v in inputs.items() if k != "token_type_ids"}
    gaps = []
    for feed in (inputs, single):
        with torch.no_grad():
            want = model(**feed).logits.float().numpy()
        gaps.append(float(np.abs(run_onnx(session, feed) - want).max()))
    return OnnxCheck(*gaps)


def onnx_config(exported: nn.Module):
    """The exported model's config without ``auto_map`` (this folder has no modeling code)."""
    import copy

    config = copy.deepcopy(exported.config)
    if hasattr(config, "auto_map"):
        del config.auto_map
    return config


def write_onnx_folder(exported: nn.Module, folder: str | Path, tokenizer, opset: int = OPSET,
                      pack: bool = True) -> tuple[OnnxCheck, Packed | None]:
    """``model.onnx`` (fp32; its pruned matrices packed unless ``pack`` is False), ``config.json`` and the
    tokenizer in ``folder``; LadaError if the graph is off."""

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = export_onnx(exported, folder / ONNX_FILE, opset=opset)
    packed = pack_onnx(path) if pack else None
    check = check_onnx_folder(exported, path)
    if not check.worst < ATOL:
        raise LadaError(f"the ONNX graph's logits differ from torch's by {check.worst:.3g} (allowed < {ATOL:g})")
    onnx_config(exported).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return check, packed
