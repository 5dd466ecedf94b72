"""ONNX export of a (compressed) sequence classifier, and a check of the export with onnxruntime.

The graph has inputs ``input_ids``, ``attention_mask`` and, where the family has segment embeddings,
``token_type_ids`` (int64, dynamic batch and sequence axes; ``inputs.input_names``) and the output ``logits`` (dynamic batch axis).  Pruning masks are folded first (pruned
entries are zeros in the traced initializers; ``runtime.packing`` stores them packed in an export's file),
factorized layers export as two MatMuls, and attention is exported in
its eager form.  The TorchScript-based exporter (``dynamo=False``) is used by default: it is quick and
exact here; the torch.export-based one (``dynamo=True``) is the fallback when it fails.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import LadaError
from ..nn.masks import copy_model, fold_masks
from .inputs import input_names, max_length, random_inputs
from .sparse import densify

OUTPUT = "logits"


class LogitsOnly(nn.Module):
    """(input_ids, attention_mask[, token_type_ids]) -> logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.names = input_names(model)

    def forward(self, *inputs):
        return self.model(**dict(zip(self.names, inputs))).logits


def inference_copy(model: nn.Module) -> nn.Module:
    """A CPU copy with masks folded, sparse modules made dense and eager attention (what the export traces)."""
    model = densify(fold_masks(copy_model(model).cpu().eval()))
    if getattr(model.config, "_attn_implementation", "eager") != "eager":
        model.set_attn_implementation("eager")
    return model


def export_onnx(model: nn.Module, path: str | Path, seq_len: int = 128, *, batch: int = 2, opset: int = 17,
                dynamo: bool | None = None) -> Path:
    """Write ``model`` (a loaded compressed or dense classifier) to the ONNX file ``path``; returns the path.

    dynamo: None tries the TorchScript exporter and falls back to torch.export; True/False forces one.
    Every input is a plain graph input that ``session.get_inputs()`` lists: serving code builds its feed from
    that list, and an input given a default (an overridable initializer) is silently left out of it - the
    graph then runs on all-zero segments, wrong for pair tasks, and an int8 graph of a dense embedding fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = LogitsOnly(inference_copy(model)).eval()
    # only an example shape (the axes are dynamic): capped at what the model can take
    inputs = random_inputs(model, batch, max_length(model, seq_len), padded=True)
    names = input_names(model)
    args = tuple(inputs[n] for n in names)
    errors = []
    for use_dynamo in ([False, True] if dynamo is None else [dynamo]):
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                if use_dynamo:
                    from torch.export import Dim

                    dims = {0: Dim("batch"), 1: Dim("sequence")}
                    torch.onnx.export(wrapped, args, str(path), dynamo=True, input_names=list(names),
                                      output_names=[OUTPUT], opset_version=max(opset, 18),
                                      dynamic_shapes=tuple(dims for _ in names), verbose=False)
                else:
                    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {OUTPUT: {0: "batch"}}
                    torch.onnx.export(wrapped, args, str(path), dynamo=False, input_names=list(names),
                                      output_names=[OUTPUT], opset_version=opset, dynamic_axes=axes,
                                      do_constant_folding=True)
            break
        except Exception as exc:  # noqa: BLE001 - report every exporter's failure together
            errors.append(f"{'dynamo' if use_dynamo else 'torchscript'} exporter: {type(exc).__name__}: {exc}")
    else:
        raise LadaError("ONNX export failed: " + " | ".join(e.splitlines()[0] for e in errors))
    import onnx

    onnx.checker.check_model(str(path))
    return path


def onnx_session(path: str | Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_onnx(model: nn.Module, path: str | Path, *, batch: int = 3, seq_len: int = 37,
               inputs: dict[str, torch.Tensor] | None = None, session=None) -> float:
    """Run the ONNX file with onnxruntime and return max |logits(onnx) - logits(torch model)|.

    The default shape (3 x 37) differs from the export's example shape, so the dynamic axes are checked too.
    """
    inputs = inputs or random_inputs(model, batch, max_length(model, seq_len), seed=1, padded=True)
    session = session or onnx_session(path)
    feed = {i.name: inputs[i.name].cpu().numpy().astype(np.int64) for i in session.get_inputs()}
    got = session.run([OUTPUT], feed)[0]
    with torch.inference_mode():
        want = model.eval()(**{k: v.to(next(model.parameters()).device) for k, v in inputs.items()}).logits
    return float(np.abs(got - want.float().cpu().numpy()).max())
