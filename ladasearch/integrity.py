"""Checks that a saved model folder is what its ``ladasearch.json`` says, before any weight is allocated.

A folder is loaded only when all of these hold (each failure is one LadaError naming the file):

    layers      every record of ``layers`` names a compressible module of the architecture that
                config.json describes, with a known type, and a rank from 1 to the smaller side of the
                matrix it replaces (so an edited rank of 60000 is refused, never allocated)
    tensors     the safetensors header (read alone, no tensor data) holds exactly the tensors that this
                structure implies, with the implied shapes; a pruned tensor's packed mask has the implied
                byte count and sets as many bits as its ``::values`` holds entries
    checksum    the SHA-256 of model.safetensors equals the one recorded at save time, and so does the
                SHA-256 of what else decides the model's outputs: config.json (an edited activation or
                layer-norm epsilon changes every logit) and the architecture and layer records.  A folder
                without them (saved before they were recorded, or with the keys removed) is refused unless
                the caller trusts it explicitly (``trust_unchecked``, ``export-model --trust-unchecked``)

The shapes come from the skeleton built on the meta device, which costs no memory whatever the
config says; the file then bounds every allocation, since each tensor must be backed by its bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from safetensors import SafetensorError, safe_open
from torch import nn

from .compress.accounting import compressible_modules
from .errors import LadaError, first_line
from .nn.layers import FactorizedEmbedding, FactorizedLinear, replace_module

DIGEST_KEY = "weights_sha256"
RECORD_KEY = "record_sha256"      # config.json + the architecture and layer records of ladasearch.json
TRUST_HINT = "load it with trust_unchecked=True (export-model --trust-unchecked) only if you know where it came from"
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})


class LayerKind:
    """One ``type`` a layer record may have: which module it stands in for and how it is rebuilt."""

    name: ClassVar[str] = ""
    saved: ClassVar[type[nn.Module] | None] = None      # the module class saved under this type
    replaces: ClassVar[tuple[type[nn.Module], ...]] = (nn.Linear, nn.Embedding)

    def max_rank(self, old: nn.Module) -> int | None:
        """The largest rank that fits ``old`` (None: this type has no rank)."""
        return None

    def build(self, old: nn.Module, rank: int | None) -> nn.Module | None:
        """The module to put where ``old`` is (None: keep ``old``)."""
        return None


class DenseLayer(LayerKind):
    name = "dense"


class FactorizedLinearLayer(LayerKind):
    name, saved, replaces = "factorized_linear", FactorizedLinear, (nn.Linear,)

    def max_rank(self, old: nn.Linear) -> int:
        return min(old.in_features, old.out_features)

    def build(self, old: nn.Linear, rank: int) -> nn.Module:
        return FactorizedLinear(old.in_features, old.out_features, rank, bias=old.bias is not None)


class FactorizedEmbeddingLayer(LayerKind):
    name, saved, replaces = "factorized_embedding", FactorizedEmbedding, (nn.Embedding,)

    def max_rank(self, old: nn.Embedding) -> int:
        return min(old.num_embeddings, old.embedding_dim)

    def build(self, old: nn.Embedding, rank: int) -> nn.Module:
        return FactorizedEmbedding(old.num_embeddings, old.embedding_dim, rank, old.padding_idx)


LAYER_KINDS: dict[str, LayerKind] = {k.name: k for k in (DenseLayer(), FactorizedLinearLayer(),
                                                          FactorizedEmbeddingLayer())}


def kind_of(module: nn.Module) -> LayerKind:
    """The layer type under which ``module`` is saved."""
    return next((k for k in LAYER_KINDS.values() if k.saved is type(module)), LAYER_KINDS["dense"])


@dataclass(frozen=True)
class LayerRecord:
    """One entry of ``layers`` in ladasearch.json: a compressible module saved factorized and/or pruned."""

    name: str
    kind: LayerKind
    rank: int | None
    pruned: tuple[str, ...]

    def to_json(self) -> dict:
        return {"type": self.kind.name, "rank": self.rank, "pruned": list(self.pruned)}

    @classmethod
    def from_json(cls, name: str, data: object, where: str) -> LayerRecord:
        where = f"{where}: layer {name!r}"
        if not isinstance(data, dict):
            raise LadaError(f"{where} must be an object with type, rank and pruned, got {type(data).__name__}")
        kind = LAYER_KINDS.get(data.get("type")) if isinstance(data.get("type"), str) else None
        if kind is None:
            raise LadaError(f"{where} has type {str(data.get('type'))[:60]!r}; allowed: {', '.join(LAYER_KINDS)}")
        rank, pruned = data.get("rank"), data.get("pruned", [])
        if kind.saved is None and rank is not None:
            raise LadaError(f"{where} is {kind.name} and has rank {str(rank)[:60]!r}; a {kind.name} layer has none")
        if kind.saved is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise LadaError(f"{where} has rank {str(rank)[:60]!r}; a rank is an integer >= 1")
        if not isinstance(pruned, list) or not all(isinstance(p, str) for p in pruned) or len(set(pruned)) < len(
                pruned):
            raise LadaError(f"{where} has pruned {str(pruned)[:60]!r}; allowed: a list of distinct tensor names")
        return cls(name, kind, rank, tuple(pruned))


def parse_layers(data: object, where: str) -> tuple[LayerRecord, ...]:
    if not isinstance(data, dict):
        raise LadaError(f"{where}: 'layers' must be an object (module name -> record), got {type(data).__name__}")
    return tuple(LayerRecord.from_json(str(name), record, where) for name, record in data.items())


def swap_in_layers(skeleton: nn.Module, layers: tuple[LayerRecord, ...], where: str) -> None:
    """Put the saved layers into ``skeleton`` (on the meta device), each checked against the module it replaces."""
    modules = {name: module for name, (_, module) in compressible_modules(skeleton).items()}
    architecture = type(skeleton).__name__
    for layer in layers:
        old = modules.get(layer.name)
        if old is None:
            raise LadaError(f"{where}: layer {layer.name!r} is not a compressible module of {architecture} as "
                            f"config.json describes it (e.g. {next(iter(modules))!r})")
        if not isinstance(old, layer.kind.replaces):
            raise LadaError(f"{where}: layer {layer.name!r} is {layer.kind.name}, but {architecture} has a "
                            f"{type(old).__name__} there")
        limit = layer.kind.max_rank(old)
        if limit is not None and layer.rank > limit:
            raise LadaError(f"{where}: layer {layer.name!r} has rank {layer.rank}; its {old.weight.shape[0]} x "
                            f"{old.weight.shape[1]} matrix allows ranks 1 to {limit}")
        new = layer.kind.build(old, layer.rank)
        if new is not None:
            replace_module(skeleton, layer.name, new)
        params = (new or old)._parameters
        unknown = [p for p in layer.pruned if params.get(p) is None]
        if unknown:
            raise LadaError(f"{where}: layer {layer.name!r} lists pruned tensor(s) {unknown[:3]}; allowed: "
                            f"{', '.join(n for n, p in params.items() if p is not None)}")


@dataclass(frozen=True)
class StoredTensor:
    """A tensor as the safetensors header describes it."""

    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class WeightsHeader:
    file: Path
    tensors: Mapping[str, StoredTensor]


def read_header(file: Path) -> WeightsHeader:
    """The tensor names, shapes and dtypes of a safetensors file; no tensor data is read."""
    if not file.is_file():
        raise LadaError(f"{file} is missing: a ladasearch model folder holds its weights there")
    try:
        with safe_open(str(file), framework="pt") as f:
            tensors = {k: StoredTensor(tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype())
                       for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise LadaError(f"{file} is not a readable safetensors file (truncated or damaged?): "
                        f"{first_line(exc)}") from None
    return WeightsHeader(file, tensors)


def expected_shapes(skeleton: nn.Module, layers: tuple[LayerRecord, ...]) -> dict[str, tuple[int, ...]]:
    """``{tensor name in the file: the model's shape of that tensor}``; a pruned tensor T appears as
    ``T::values`` and ``T::mask``, both with the shape of T (the file holds them packed)."""
    pruned = {f"{layer.name}.{p}" for layer in layers for p in layer.pruned}
    shapes = {}
    for mname, module in skeleton.named_modules():
        prefix = f"{mname}." if mname else ""
        for pname, param in module._parameters.items():
            if param is None:
                continue
            name = prefix + pname
            suffixes = ("::values", "::mask") if name in pruned else ("",)
            shapes.update({name + s: tuple(param.shape) for s in suffixes})
        for bname, buf in module._buffers.items():
            if buf is not None and bname not in module._non_persistent_buffers_set:
                shapes[prefix + bname] = tuple(buf.shape)
    return shapes


def _shape_problem(key: str, stored: StoredTensor, shape: tuple[int, ...]) -> str | None:
    count = math.prod(shape)
    if key.endswith("::mask"):
        need = (count + 7) // 8
        if stored.dtype != "U8" or stored.shape != (need,):
            return (f"{key} is {stored.dtype} {list(stored.shape)}; a packed mask of {list(shape)} is U8 [{need}] "
                    f"(was a rank or config.json edited?)")
    elif key.endswith("::values"):
        if stored.dtype not in FLOAT_DTYPES or len(stored.shape) != 1 or stored.shape[0] > count:
            return (f"{key} is {stored.dtype} {list(stored.shape)}; the kept entries of {list(shape)} are at most "
                    f"{count} floats (was a rank or config.json edited?)")
    elif stored.shape != shape:
        return (f"{key} has shape {list(stored.shape)}, the model needs {list(shape)} "
                f"(was a rank or config.json edited?)")
    return None


def check_tensors(header: WeightsHeader, shapes: dict[str, tuple[int, ...]], meta_name: str) -> None:
    """The header holds exactly ``shapes`` and every packed mask keeps as many entries as its values."""
    missing = sorted(shapes.keys() - header.tensors.keys())
    unexpected = sorted(header.tensors.keys() - shapes.keys())
    if missing or unexpected:
        raise LadaError(f"{header.file} does not match its architecture ({meta_name} and config.json): "
                        f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    for key, shape in shapes.items():
        problem = _shape_problem(key, header.tensors[key], shape)
        if problem:
            raise LadaError(f"{header.file}: {problem}")
    masks = [k for k in shapes if k.endswith("::mask")]
    if not masks:
        return
    try:
        with safe_open(str(header.file), framework="np") as f:
            for key in masks:  # 1 bit a matrix entry: small next to the weights
                count = math.prod(shapes[key])
                bits = np.unpackbits(f.get_tensor(key))
                kept, past = int(bits[:count].sum()), int(bits[count:].sum())
                values = header.tensors[key.replace("::mask", "::values")].shape[0]
                if kept != values or past:
                    raise LadaError(f"{header.file}: {key} keeps {kept} of {count} entries (and {past} past them), "
                                    f"its ::values holds {values}")
    except (SafetensorError, OSError) as exc:
        raise LadaError(f"{header.file} is not a readable safetensors file (truncated or damaged?): "
                        f"{first_line(exc)}") from None


def weights_digest(file: Path) -> str:
    """SHA-256 (hex) of a weights file, read in chunks."""
    with open(file, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def record_digest(config_file: Path, meta: Mapping) -> str:
    """SHA-256 (hex) of config.json's bytes and of the architecture and layer records."""
    digest = hashlib.sha256(config_file.read_bytes())
    digest.update(json.dumps({"architecture": meta.get("architecture"), "layers": meta.get("layers")},
                             sort_keys=True).encode())
    return digest.hexdigest()


def _unchecked(what: str, key: str, meta_name: str, trust_unchecked: bool) -> None:
    if not trust_unchecked:
        raise LadaError(f"{meta_name} records no {key}, so {what} cannot be checked; {TRUST_HINT}")


def check_record(config_file: Path, meta: Mapping, meta_name: str, trust_unchecked: bool = False) -> None:
    """config.json and the layer records are the ones saved (their SHA-256 is the one recorded)."""
    recorded = meta.get(RECORD_KEY)
    if recorded is None:
        return _unchecked("config.json", RECORD_KEY, meta_name, trust_unchecked)
    if not isinstance(recorded, str) or len(recorded) != 64:
        raise LadaError(f"{meta_name} records {RECORD_KEY} {str(recorded)[:70]!r}; allowed: 64 hex digits")
    if record_digest(config_file, meta) != recorded.lower():
        raise LadaError(f"{config_file} or the layer records of {meta_name} changed after saving (their SHA-256 is "
                        f"not the recorded one): the model would not compute what was saved")


def check_digest(file: Path, recorded: object, meta_name: str, trust_unchecked: bool = False) -> None:
    """``file`` has the SHA-256 recorded in the metadata (none recorded: refused unless trusted)."""
    if recorded is None:
        return _unchecked("the weights", DIGEST_KEY, meta_name, trust_unchecked)
    if not isinstance(recorded, str) or len(recorded) != 64:
        raise LadaError(f"{meta_name} records {DIGEST_KEY} {str(recorded)[:70]!r}; allowed: 64 hex digits")
    actual = weights_digest(file)
    if actual != recorded.lower():
        raise LadaError(f"{file} has SHA-256 {actual[:16]}..., {meta_name} records {recorded[:16]}...: "
                        f"the weights changed after saving (damaged or edited)")
