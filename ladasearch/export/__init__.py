"""Export of compression results: ratio tables, plots, ONNX, the fast inference path and measurements.

Modules (imported lazily, so ``import ladasearch.export`` stays cheap):
    sources   ``load_summaries``: trial summaries from a compress folder or an MLflow search
    table     ``ratio_table``, ``format_table``: the paper's Table-2 style ratio table (md, csv, json, latex)
    plots     ``pareto_plot``, ``learning_curves``, ``ratio_split``: PNGs (matplotlib, Agg)
    fast      ``optimize_for_inference``: the fastest exact CPU path (per layer: dense, factored or sparse)
    onnx      ``export_onnx``, ``check_onnx``: ONNX export and an onnxruntime check
    measure   ``compare``: file size, resident memory and CPU latency of a teacher and its student
"""

from __future__ import annotations

import importlib

_WHERE = {
    "load_summaries": "sources", "best_per_group": "table", "ratio_table": "table", "format_table": "table",
    "pareto_front": "plots", "pareto_plot": "plots", "learning_curves": "plots", "ratio_split": "plots",
    "optimize_for_inference": "fast", "fold_masks": "fast", "export_onnx": "onnx", "check_onnx": "onnx",
    "compare": "measure", "load_model": "measure", "latency": "measure",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
