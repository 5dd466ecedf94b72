"""Inference-only linear layers holding their weights as CSR matrices, and the way back to dense layers.

CSR tensors have no autograd or ONNX support worth having: these modules exist to time torch's sparse
kernels in the fast path, and ``densify`` turns them back into ordinary layers before an export.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..nn.layers import FactorizedLinear, replace_module


def _csr(tensor: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return tensor.detach().contiguous().to_sparse_csr()


def _frozen(bias: torch.Tensor | None) -> nn.Parameter | None:
    return nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None


class SparseFactorizedLinear(nn.Module):
    """y = x @ B @ A.T + bias with A and B.T held as CSR matrices (inference only)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.rank = a.shape
        self.in_features = b.shape[0]
        self.register_buffer("a_csr", _csr(a), persistent=False)
        self.register_buffer("bt_csr", _csr(b.T), persistent=False)
        self.bias = _frozen(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        y = torch.sparse.mm(self.a_csr, torch.sparse.mm(self.bt_csr, flat.T)).T
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a_csr.to_dense(), self.bt_csr.to_dense().T.contiguous()

    def __deepcopy__(self, memo):  # CSR tensors have no storage to deep-copy
        return type(self)(*self.factors(), self.bias)


class SparseLinear(nn.Module):
    """nn.Linear with its (pruned) weight held as a CSR matrix (inference only)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("w_csr", _csr(weight), persistent=False)
        self.bias = _frozen(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        y = torch.sparse.mm(self.w_csr, flat.T).T
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def __deepcopy__(self, memo):
        return type(self)(self.w_csr.to_dense(), self.bias)


def densify(model: nn.Module) -> nn.Module:
    """Replace the sparse modules of this file by dense equivalents, in place (e.g. for ONNX)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, SparseFactorizedLinear):
            a, b = module.factors()
            new = FactorizedLinear(module.in_features, module.out_features, module.rank, module.bias is not None)
            new.A.data.copy_(a)
            new.B.data.copy_(b)
        elif isinstance(module, SparseLinear):
            new = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
            new.weight.data.copy_(module.w_csr.to_dense())
        else:
            continue
        if module.bias is not None:
            new.bias.data.copy_(module.bias)
        replace_module(model, name, new)
    return model
