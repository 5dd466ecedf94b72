"""ladasearch: LadaBERT compression (SVD + pruning + distillation) with a hyperparameter search around it.

The public names below load on first use (PEP 562), so importing one layer (``ladasearch.nn``,
``ladasearch.compress``) does not pull in the layers above it (deploy, inference, search, MLflow, Ray).
"""

from __future__ import annotations

import importlib

# public name -> (module, attribute)
_PUBLIC = {
    "Ratios": ("compress", "Ratios"), "count_parameters": ("compress", "count_parameters"),
    "parse_target": ("compress", "parse_target"), "solve": ("compress", "solve"),
    "Factorizer": ("compress.registry", "Factorizer"), "PruningScore": ("compress.registry", "PruningScore"),
    "register_factorizer": ("compress.registry", "register_factorizer"),
    "register_pruning_score": ("compress.registry", "register_pruning_score"),
    "UnitScore": ("compress.unit_scores", "UnitScore"), "register_unit_score": ("compress.unit_scores", "register_unit_score"),
    "CompressionMethod": ("compress.methods", "CompressionMethod"),
    "register_method": ("compress.methods", "register_method"), "load_plugins": ("registry", "load_plugins"),
    "CompressionConfig": ("config", "CompressionConfig"), "DataConfig": ("config", "DataConfig"),
    "LossWeights": ("config", "LossWeights"), "TeacherConfig": ("config", "TeacherConfig"),
    "TrainConfig": ("config", "TrainConfig"),
    "ExportSettings": ("runtime.export", "ExportSettings"), "export_model": ("runtime.export", "export_model"),
    "LadaError": ("errors", "LadaError"),
    "export_onnx": ("runtime.onnx", "export_onnx"),
    "CompressionResult": ("train.ladabert", "CompressionResult"), "LoopHooks": ("train.ladabert", "LoopHooks"),
    "TrialFailed": ("train.ladabert", "TrialFailed"), "compress_model": ("train.ladabert", "compress_model"),
    "CompressedModel": ("serialize", "CompressedModel"), "load_compressed": ("serialize", "load_compressed"),
    "save_compressed": ("serialize", "save_compressed"), "load": ("serialize", "load_compressed"),
    "TrialSummary": ("summary", "TrialSummary"),
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'ladasearch' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
