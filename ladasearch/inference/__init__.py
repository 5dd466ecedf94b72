"""Inference runtime for (compressed) classifiers: the fast exact CPU path, ONNX export and measurements.

Modules: ``inputs`` (random token batches), ``timing`` (latency), ``fast`` (per-layer dense, factored or
sparse), ``onnx`` (export and onnxruntime check), ``onnx_fusion`` (onnxruntime's fused attention, checked, with a
fallback), ``measure`` (size, memory and latency of teacher vs student).
"""
