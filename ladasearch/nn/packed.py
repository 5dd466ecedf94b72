"""Pruned matrices stored packed: the non-zero entries in order and a bitmask of where they sit.

A pruned matrix holds mostly zeros; stored dense it costs as much as the teacher's.  Packed, an m x n
matrix with k non-zeros costs k entries plus m*n/8 bytes, smaller whenever more than one entry in
``8 * itemsize`` is zero (1 in 32 for fp32).  The HF folder stores every matrix that packing makes smaller
this way: for a tensor ``NAME`` (``encoder.layer.0.output.dense.weight``) the file holds
``NAME_packed_values`` and ``NAME_packed_bits``, and ``config.ladasearch_packed`` lists
``{NAME: {"shape": [...], "nnz": k}}``.  The loading model holds the two buffers in place of the parameter so
that transformers fills them from the file like any other tensor, then unpacks them once, after loading
(``unpack_model``); the model a user gets is dense and computes exactly what the exported one did.
This file is part of every exported folder's ``modeling_ladasearch.py``: it needs torch only.
"""

from __future__ import annotations

import torch
from torch import nn

PACKED_KEY = "ladasearch_packed"
VALUES, BITMASK = "_packed_values", "_packed_bits"
# bit i of byte j stands for entry 8*j + i, most significant bit first (numpy's packbits order, which the ONNX
# packer uses too)
_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)


def packed_bytes(tensor: torch.Tensor) -> int:
    """Bytes of ``tensor`` packed: its non-zero entries and one bit per entry."""
    return int(torch.count_nonzero(tensor)) * tensor.element_size() + (tensor.numel() + 7) // 8


def worth_packing(tensor: torch.Tensor) -> bool:
    """A matrix (2-D or more, floating point) that packing stores in fewer bytes than dense."""
    return (tensor.dim() >= 2 and tensor.is_floating_point()
            and packed_bytes(tensor) < tensor.numel() * tensor.element_size())


def pack_bits(present: torch.Tensor) -> torch.Tensor:
    """The bool tensor ``present`` (flattened) as uint8 bytes of 8 entries each, the last one zero-padded."""
    flat = present.detach().reshape(-1).cpu()
    bits = torch.zeros((flat.numel() + 7) // 8 * 8, dtype=torch.uint8)
    bits[:flat.numel()] = flat.to(torch.uint8)
    return (bits.view(-1, 8) * torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8)).sum(1).to(torch.uint8)


def unpack_bits(bits: torch.Tensor, numel: int) -> torch.Tensor:
    """The first ``numel`` entries :func:`pack_bits` packed into ``bits``, as a flat bool tensor."""
    shifts = torch.arange(7, -1, -1, dtype=torch.int32, device=bits.device)
    return ((bits.to(torch.int32)[:, None] >> shifts) & 1).reshape(-1)[:numel].bool()


def pack(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the non-zero entries in row-major order, the uint8 bitmask of where they are)."""
    flat = tensor.detach().reshape(-1)
    present = flat != 0
    return flat[present].clone(), pack_bits(present)


def unpack(values: torch.Tensor, bitmask: torch.Tensor, shape) -> torch.Tensor:
    """The dense tensor of ``shape`` that :func:`pack` packed into ``values`` and ``bitmask``."""
    numel = 1
    for size in shape:
        numel *= int(size)
    present = unpack_bits(bitmask, numel).to(values.device)
    if int(present.sum()) != values.numel():
        raise ValueError(f"a packed tensor of shape {list(shape)} has {values.numel()} values for "
                         f"{int(present.sum())} set bits: the file is damaged")
    dense = torch.zeros(numel, dtype=values.dtype, device=values.device)
    dense[present] = values
    return dense.reshape([int(s) for s in shape])


def pack_state_dict(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """(``state`` with every tensor worth packing replaced by its two packed tensors, the ``PACKED_KEY`` spec)."""
    out, spec = {}, {}
    for name, tensor in state.items():
        if worth_packing(tensor):
            values, bitmask = pack(tensor)
            out[name + VALUES], out[name + BITMASK] = values, bitmask
            spec[name] = {"shape": list(tensor.shape), "nnz": int(values.numel())}
        else:
            out[name] = tensor
    return out, spec


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module_name, _, attr = name.rpartition(".")
    return (model.get_submodule(module_name) if module_name else model), attr


def hold_packed(model: nn.Module, spec: dict[str, dict] | None) -> None:
    """Replace each parameter ``spec`` names by its two packed buffers (at the stored sizes), so that loading
    the file fills them."""
    for name, entry in (spec or {}).items():
        module, attr = _owner(model, name)
        like = getattr(module, attr)
        delattr(module, attr)
        module.register_buffer(attr + VALUES, torch.zeros(int(entry["nnz"]), dtype=like.dtype, device=like.device))
        module.register_buffer(attr + BITMASK, torch.zeros((like.numel() + 7) // 8, dtype=torch.uint8,
                                                           device=like.device))


def holds_packed(module: nn.Module) -> bool:
    return any(name.endswith(VALUES) for name, _ in module.named_buffers(recurse=False))


def unpack_model(model: nn.Module, spec: dict[str, dict] | None) -> None:
    """Turn the packed buffers :func:`hold_packed` made back into the dense parameters they stand for."""
    for name, entry in (spec or {}).items():
        module, attr = _owner(model, name)
        if not hasattr(module, attr + VALUES):
            continue
        values, bitmask = getattr(module, attr + VALUES), getattr(module, attr + BITMASK)
        delattr(module, attr + VALUES)
        delattr(module, attr + BITMASK)
        module.register_parameter(attr, nn.Parameter(unpack(values, bitmask, entry["shape"]),
                                                     requires_grad=values.is_floating_point()))
