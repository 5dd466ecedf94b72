"""The runtime: a compressed model as people deploy it (torch, onnxruntime, onnxruntime int8), written, loaded,
timed and measured; ``export-model`` and ``--runtime`` both stand on it.

Modules (imported lazily, so ``import ladasearch.runtime`` stays cheap):
    source               ``open_source``: a compress folder, or a search's best model from MLflow
    modeling_ladasearch  the transformers classes of the modeling file every HF folder carries
    hf                   ``deploy_model``, ``write_hf_folder``, ``load_hf_folder``; ``modeling_source`` assembles the
                         modeling file from ``nn.layers``, ``nn.units`` and ``modeling_ladasearch``
    fast, sparse         the fastest exact torch path on CPU (per-layer dense, factored or sparse)
    onnx, onnx_export    ``export_onnx`` (the traced graph, checked in onnxruntime); ``write_onnx_folder``:
                         model.onnx + tokenizer, ``onnx_feed`` from ``session.get_inputs()``
    onnx_fusion          onnxruntime's fused attention, checked, with a fallback
    quantize             ``quantize_int8``, ``accuracy_gate``: dynamic int8 behind a dev-score gate
    scoring              ``load_dev``, ``onnx_score``: the task's dev split scored through onnxruntime
    inputs, timing       random token batches; interleaved latency
    latency, memory      ``measure_latency``; ``deployment_memory``: peak RSS of a fresh serving process
    footprint, measure   size, memory and latency of teacher vs student
    formats              ``get_format``: hf, onnx, onnx-int8
    card                 ``render_card``: the model card (README.md)
    export               ``export_model``: all of it, behind ``ladasearch export-model``
"""

from __future__ import annotations

import importlib

_WHERE = {
    "open_source": "source", "deploy_model": "hf", "write_hf_folder": "hf", "load_hf_folder": "hf",
    "write_onnx_folder": "onnx_export", "quantize_int8": "quantize", "accuracy_gate": "quantize",
    "load_dev": "scoring", "onnx_score": "scoring", "measure_latency": "latency",
    "deployment_memory": "memory", "get_format": "formats", "render_card": "card", "export_model": "export",
    "ExportSettings": "export", "ExportRecord": "export", "export_onnx": "onnx",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
