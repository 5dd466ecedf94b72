"""Saving and loading compressed models in a form that delivers the compression on disk.

Folder layout:
    config.json          the Hugging Face config of the architecture
    tokenizer files      when a tokenizer is given
    ladasearch.json      format version, the factorized/pruned layers (type, rank), the SHA-256 of
                         model.safetensors and the run summary
    model.safetensors    dense tensors as they are; a pruned tensor T as ``T::values`` (its kept
                         entries, row-major) and ``T::mask`` (its mask packed 8 entries a byte)

So the file holds ~4 bytes per stored non-zero parameter plus 1 bit per factor entry.  Loading checks the
folder first (``integrity``): a hand-edited, truncated or tampered folder is one LadaError, and nothing is
allocated before the metadata, the tensors' header and the checksum agree.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import prune

from .compress.accounting import compressible_modules
from .errors import LadaError, first_line
from .integrity import (
    DIGEST_KEY,
    RECORD_KEY,
    LayerRecord,
    check_digest,
    check_record,
    check_tensors,
    expected_shapes,
    kind_of,
    parse_layers,
    read_header,
    record_digest,
    swap_in_layers,
    weights_digest,
)
from .io import umask, write_json_atomic
from .nn.masks import masks_of
from .nn.packed import pack_bits, unpack_bits
from .nn.units import WIDTHS_KEY, narrow_layers
from .summary import TrialSummary

FORMAT = 1
WEIGHTS = "model.safetensors"
META = "ladasearch.json"


def layer_structure(model: nn.Module) -> dict[str, dict]:
    """``{module name: {"type", "rank", "pruned"}}`` for every factorized or pruned compressible module."""
    layers = {}
    for name, (_, module) in compressible_modules(model).items():
        kind, pruned = kind_of(module), tuple(sorted(masks_of(module)))
        if kind.saved is not None or pruned:
            layers[name] = LayerRecord(name, kind, getattr(module, "rank", None), pruned).to_json()
    return layers


def save_compressed(model: nn.Module, path: str | Path, summary: TrialSummary | None = None,
                    tokenizer=None) -> Path:
    """Write ``model`` (as produced by ``compress_model``) and the record of its compression to the folder ``path``."""
    if summary is not None and not isinstance(summary, TrialSummary):
        raise TypeError(f"summary must be a TrialSummary, got {type(summary).__name__}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for mname, module in model.named_modules():
        masks = masks_of(module)
        prefix = f"{mname}." if mname else ""
        for pname, param in module._parameters.items():
            if param is None:
                continue
            name = pname.removesuffix("_orig")
            if name in masks:
                keep = masks[name].bool()
                tensors[f"{prefix}{name}::values"] = param.detach()[keep].cpu().contiguous()
                tensors[f"{prefix}{name}::mask"] = pack_bits(keep)
            else:
                tensors[f"{prefix}{name}"] = param.detach().cpu().contiguous()
        for bname, buf in module._buffers.items():
            if buf is not None and not bname.endswith("_mask") and bname not in module._non_persistent_buffers_set:
                tensors[f"{prefix}{bname}"] = buf.detach().cpu().contiguous()
    # through a temporary file: a reader never sees half a weights file under the recorded checksum's name
    staging = path / f"{WEIGHTS}.{os.getpid()}.tmp"
    save_file(tensors, str(staging))
    os.chmod(staging, 0o666 & ~umask())  # safetensors creates it private; the folder's other files are not
    digest = weights_digest(staging)
    os.replace(staging, path / WEIGHTS)
    model.config.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    meta = {"format": FORMAT, "architecture": type(model).__name__, "layers": layer_structure(model),
            DIGEST_KEY: digest, "summary": summary.to_json() if summary is not None else {}}
    meta[RECORD_KEY] = record_digest(path / "config.json", meta)
    write_json_atomic(path / META, meta, sort_keys=True)
    return path


def read_meta(path: str | Path) -> dict:
    meta_file = Path(path) / META
    if not meta_file.is_file():
        raise LadaError(f"{str(path)!r} is not a ladasearch model folder (no {META} in it)")
    try:
        meta = json.loads(meta_file.read_text())
    except ValueError as exc:
        raise LadaError(f"{meta_file} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise LadaError(f"{meta_file} must hold a JSON object (format, architecture, layers), got "
                        f"{type(meta).__name__}")
    version = meta.get("format")
    if version != FORMAT:
        raise LadaError(f"{meta_file} has format {version!r:.40}; this ladasearch reads format {FORMAT}")
    return meta


def saved_summary(path: str | Path) -> TrialSummary | None:
    """The compression record saved with the model in ``path``, or None when it was saved without one."""
    data = read_meta(path).get("summary")
    return TrialSummary.from_json(data, f"{Path(path) / META} summary") if data else None


def _architecture(meta: dict, meta_file: Path) -> type:
    import transformers

    name = meta.get("architecture")
    cls = getattr(transformers, name, None) if isinstance(name, str) and name.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise LadaError(f"{meta_file} has architecture {str(name)[:60]!r}; allowed: a transformers model class "
                        f"such as 'BertForSequenceClassification'")
    return cls


def _checked_skeleton(path: Path, trust_unchecked: bool = False) -> nn.Module:
    """The model of folder ``path`` on the meta device (no memory), after every check of ``integrity``."""
    import transformers

    meta = read_meta(path)
    meta_file = path / META
    architecture = _architecture(meta, meta_file)
    layers = parse_layers(meta.get("layers"), str(meta_file))
    header = read_header(path / WEIGHTS)
    if not (path / "config.json").is_file():
        raise LadaError(f"{path / 'config.json'} is missing: a ladasearch model folder holds its architecture there")
    try:
        config = transformers.AutoConfig.from_pretrained(path)
        with torch.device("meta"):
            model = architecture._from_config(config, attn_implementation="eager")
            narrow_layers(model, getattr(config, WIDTHS_KEY, None))
    except Exception as exc:  # noqa: BLE001 - config.json is input: whatever transformers raises, it is not a model
        raise LadaError(f"{path / 'config.json'} does not describe a {architecture.__name__}: "
                        f"{first_line(exc)}") from None
    with torch.device("meta"):
        swap_in_layers(model, layers, str(meta_file))
    check_tensors(header, expected_shapes(model, layers), META)
    check_digest(header.file, meta.get(DIGEST_KEY), str(meta_file), trust_unchecked)
    check_record(path / "config.json", meta, str(meta_file), trust_unchecked)
    return model


def verify_saved(path: str | Path, trust_unchecked: bool = False) -> None:
    """Raise the LadaError that loading folder ``path`` would raise, without loading it (see ``integrity``)."""
    _checked_skeleton(Path(path), trust_unchecked)


def load_compressed(path: str | Path, keep_masks: bool = True, device: str | torch.device = "cpu",
                    trust_unchecked: bool = False) -> nn.Module:
    """Rebuild a model saved by :func:`save_compressed`; its outputs equal the saved model's.

    ``keep_masks`` re-applies the pruning masks (so training keeps them and parameter counts match);
    without them pruned entries are plain stored zeros.  A folder whose metadata, tensors or checksum
    disagree is refused with a LadaError before any weight is allocated.
    """
    path = Path(path)
    # The skeleton is built on the meta device (no memory), its factorized layers swapped in, and only
    # allocated once checked: loading never holds the dense model, only the compressed one.
    model = _checked_skeleton(path, trust_unchecked)
    model.to_empty(device="cpu")
    for module in model.modules():  # buffers the file does not hold (e.g. position_ids): the model's own init
        if module._non_persistent_buffers_set:
            model._init_weights(module)
    try:
        state = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError) as exc:  # replaced since it was checked
        raise LadaError(f"{path / WEIGHTS} could not be read: {first_line(exc)}") from None
    masks = {}
    for key in [k for k in state if k.endswith("::mask")]:
        tensor_name = key.removesuffix("::mask")
        mname, _, pname = tensor_name.rpartition(".")
        shape = tuple(getattr(model.get_submodule(mname), pname).shape)
        mask = unpack_bits(state.pop(key), math.prod(shape)).reshape(shape)
        dense = torch.zeros(shape, dtype=state[f"{tensor_name}::values"].dtype)
        dense[mask] = state.pop(f"{tensor_name}::values")
        state[tensor_name] = dense
        masks[tensor_name] = mask
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise LadaError(f"{path} does not match its architecture: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if keep_masks:
        for tensor_name, mask in masks.items():
            mname, _, pname = tensor_name.rpartition(".")
            prune.custom_from_mask(model.get_submodule(mname), pname, mask.float())
    return model.to(device).eval()


class CompressedModel:
    """The transformers-style spelling: ``CompressedModel.from_pretrained(path)`` = :func:`load_compressed`."""

    @staticmethod
    def from_pretrained(path: str | Path, keep_masks: bool = True, device: str | torch.device = "cpu") -> nn.Module:
        return load_compressed(path, keep_masks=keep_masks, device=device)
