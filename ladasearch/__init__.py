"""ladasearch: LadaBERT compression (SVD + pruning + distillation) with a hyperparameter search around it."""

from .compress import Ratios, count_parameters, parse_target, solve
from .config import DataConfig, LossWeights, TeacherConfig, TrainConfig
from .errors import LadaError
from .serialize import CompressedModel, load_compressed, save_compressed
from .trial import CompressionResult, compress_model

load = load_compressed

__all__ = [
    "CompressedModel", "CompressionResult", "DataConfig", "LadaError", "LossWeights", "Ratios", "TeacherConfig", "TrainConfig",
    "compress_model", "count_parameters", "load", "load_compressed", "parse_target", "save_compressed", "solve",
]
