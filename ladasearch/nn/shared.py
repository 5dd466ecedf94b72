"""Tensors that the trials of a search share instead of each unpickling its own copy.

A search puts its payload (the teacher's weights, the calibration statistics) into Ray's object store once; every
trial then deserializes it.  Torch tensors deserialize by copying their bytes, so each trial held its own copy
(71.6 MiB of statistics and 87 MiB of teacher weights for MiniLM, about 570 + 420 MiB for BERT-base).  Numpy
arrays are stored out of band and come back as read-only views of the object store's shared memory, so the
tensors here pickle as numpy arrays and are rebuilt with ``torch.from_numpy``, without a copy.

What holds them must only read them: a trial's statistics are never written (narrowing makes new tensors), and
the teacher's weights are assigned to a frozen teacher that no optimizer steps.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch

# dtypes numpy has no type for travel as same-sized integers and are viewed back
_VIEWED = {torch.bfloat16: torch.int16}


def to_arrays(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[Any, str]]:
    """{name: (numpy array, torch dtype name)} of CPU tensors, sharing their memory."""
    out = {}
    for name, tensor in tensors.items():
        t = tensor.detach().cpu()
        if t.dtype in _VIEWED:
            t = t.view(_VIEWED[t.dtype])
        out[name] = (t.numpy(), str(tensor.dtype).removeprefix("torch."))
    return out


def from_arrays(arrays: Mapping[str, tuple[Any, str]]) -> dict[str, torch.Tensor]:
    """The tensors ``to_arrays`` gave, as views of the arrays (no copy, also of read-only ones)."""
    with warnings.catch_warnings():   # the object store's arrays are read-only; their holders only read them
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        out = {}
        for name, (array, dtype) in arrays.items():
            t = torch.from_numpy(array)
            wanted = getattr(torch, dtype)
            out[name] = t.view(wanted) if t.dtype != wanted else t
        return out


class SharedState(dict):
    """A state dict (name -> tensor) that pickles as numpy arrays, so that Ray shares it between processes."""

    def __reduce__(self):
        return (_shared_state, (to_arrays(self),))


def _shared_state(arrays: Mapping[str, tuple[Any, str]]) -> SharedState:
    return SharedState(from_arrays(arrays))
