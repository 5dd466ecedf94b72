"""Deployable output: a compressed model as a folder that plain transformers or onnxruntime loads.

Modules (imported lazily, so ``import ladasearch.deploy`` stays cheap):
    source               ``open_source``: a compress folder, or a search's best model from MLflow
    modeling_ladasearch  the self-contained modeling file copied into every HF folder (torch + transformers only)
    hf                   ``deploy_model``, ``write_hf_folder``, ``load_hf_folder``: the transformers folder
    onnx_export          ``write_onnx_folder``: model.onnx (optional token_type_ids, dynamic axes) + tokenizer
    quantize             ``quantize_int8``, ``accuracy_gate``: dynamic int8 behind a dev-score gate
    scoring              ``load_dev``, ``onnx_score``: the task's dev split scored through onnxruntime
    latency, memory      ``measure_latency``; ``deployment_memory``: peak RSS of a fresh serving process
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
    "ExportSettings": "export", "ExportRecord": "export",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
