"""Saving and loading compressed models in a form that delivers the compression on disk.

Folder layout:
    config.json          the Hugging Face config of the architecture
    tokenizer files      when a tokenizer is given
    ladasearch.json      format version, the factorized/pruned layers (type, rank) and the run summary
    model.safetensors    dense tensors as they are; a pruned tensor T as ``T::values`` (its kept
                         entries, row-major) and ``T::mask`` (its mask packed 8 entries a byte)

So the file holds ~4 bytes per stored non-zero parameter plus 1 bit per factor entry.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils import prune

from .compress.accounting import compressible_modules
from .compress.factorized import FactorizedEmbedding, FactorizedLinear
from .compress.prune import masks_of
from .errors import LadaError

FORMAT = 1
WEIGHTS = "model.safetensors"
META = "ladasearch.json"


def _pack(mask: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(mask.detach().cpu().numpy().astype(bool).ravel()))


def _unpack(bits: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    count = int(np.prod(shape))
    return torch.from_numpy(np.unpackbits(bits.numpy(), count=count).astype(bool)).reshape(shape)


def layer_structure(model: nn.Module) -> dict[str, dict]:
    """``{module name: {"type", "rank", "pruned"}}`` for every factorized or pruned compressible module."""
    layers = {}
    for name, (_, module) in compressible_modules(model).items():
        kind = {FactorizedLinear: "factorized_linear", FactorizedEmbedding: "factorized_embedding"}.get(
            type(module), "dense")
        pruned = sorted(masks_of(module))
        if kind != "dense" or pruned:
            layers[name] = {"type": kind, "rank": getattr(module, "rank", None), "pruned": pruned}
    return layers


def save_compressed(model: nn.Module, path: str | Path, summary: dict | None = None, tokenizer=None) -> Path:
    """Write ``model`` (as produced by ``compress_model``) to the folder ``path``."""
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
                tensors[f"{prefix}{name}::mask"] = _pack(keep)
            else:
                tensors[f"{prefix}{name}"] = param.detach().cpu().contiguous()
        for bname, buf in module._buffers.items():
            if buf is not None and not bname.endswith("_mask") and bname not in module._non_persistent_buffers_set:
                tensors[f"{prefix}{bname}"] = buf.detach().cpu().contiguous()
    save_file(tensors, str(path / WEIGHTS))
    model.config.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    meta = {"format": FORMAT, "architecture": type(model).__name__, "layers": layer_structure(model),
            "summary": summary or {}}
    (path / META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=float) + "\n")
    return path


def read_meta(path: str | Path) -> dict:
    meta_file = Path(path) / META
    if not meta_file.is_file():
        raise LadaError(f"{str(path)!r} is not a ladasearch model folder (no {META} in it)")
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != FORMAT:
        raise LadaError(f"{meta_file} has format {meta.get('format')!r}; this ladasearch reads format {FORMAT}")
    return meta


def load_compressed(path: str | Path, keep_masks: bool = True, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by :func:`save_compressed`; its outputs equal the saved model's.

    ``keep_masks`` re-applies the pruning masks (so training keeps them and parameter counts match);
    without them pruned entries are plain stored zeros.
    """
    import transformers

    path = Path(path)
    meta = read_meta(path)
    config = transformers.AutoConfig.from_pretrained(path)
    # The skeleton is built on the meta device (no memory), its factorized layers swapped in, and only then
    # allocated: loading never holds the dense model, only the compressed one.
    with torch.device("meta"):
        model = getattr(transformers, meta["architecture"])._from_config(config, attn_implementation="eager")
        for name, layer in meta["layers"].items():
            old = model.get_submodule(name)
            if layer["type"] == "factorized_linear":
                new = FactorizedLinear(old.in_features, old.out_features, layer["rank"], bias=old.bias is not None)
            elif layer["type"] == "factorized_embedding":
                new = FactorizedEmbedding(old.num_embeddings, old.embedding_dim, layer["rank"], old.padding_idx)
            else:
                continue
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, new)
    model.to_empty(device="cpu")
    for module in model.modules():  # buffers the file does not hold (e.g. position_ids): the model's own init
        if module._non_persistent_buffers_set:
            model._init_weights(module)
    state = load_file(str(path / WEIGHTS))
    masks = {}
    for key in [k for k in state if k.endswith("::mask")]:
        tensor_name = key.removesuffix("::mask")
        mname, _, pname = tensor_name.rpartition(".")
        shape = tuple(getattr(model.get_submodule(mname), pname).shape)
        mask = _unpack(state.pop(key), shape)
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
