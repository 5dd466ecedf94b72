"""ladasearch: LadaBERT compression (SVD + pruning + distillation) with a hyperparameter search around it."""

from .compress import Ratios, count_parameters, parse_target, solve
from .compress.registry import Factorizer, PruningScore, register_factorizer, register_pruning_score
from .config import CompressionConfig, DataConfig, LossWeights, TeacherConfig, TrainConfig
from .deploy.export import ExportSettings, export_model
from .errors import LadaError
from .inference.onnx import export_onnx
from .ladabert import CompressionResult, LoopHooks, TrialFailed, compress_model
from .serialize import CompressedModel, load_compressed, save_compressed
from .summary import TrialSummary

load = load_compressed

__all__ = [
    "CompressedModel", "CompressionConfig", "CompressionResult", "DataConfig", "ExportSettings", "Factorizer",
    "LadaError", "LoopHooks", "LossWeights", "PruningScore", "Ratios", "TeacherConfig", "TrainConfig",
    "TrialFailed", "TrialSummary", "compress_model", "count_parameters", "export_model", "export_onnx", "load",
    "load_compressed", "parse_target", "register_factorizer", "register_pruning_score", "save_compressed", "solve",
]
