"""The Hugging Face folder of a compressed model: what plain transformers loads with ``trust_remote_code=True``.

The exported model is the inference form of the student: pruning masks folded (no mask tensors; a
matrix with enough pruned entries is stored packed, its non-zeros and a bitmask, see ``nn.packed``), a
factorized matrix merged back to one dense matrix where that costs fewer multiply-adds (rank r of an m x n
matrix with r*(m+n) >= m*n), PyTorch SDPA attention, and the task's label names.  Its class lives in
``modeling_ladasearch.py``, written into the folder and named by ``auto_map`` in ``config.json``; that file is
assembled from the layers the student trained with (``nn.layers``, ``nn.units``, ``nn.packed``) and the HF
classes of ``runtime/modeling_ladasearch.py`` (``modeling_source``); the model type is not one transformers
knows, so loading the folder without ``trust_remote_code=True`` raises instead of returning random weights.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..compress.accounting import compressible_modules
from ..data import get_task
from ..errors import LadaError
from ..nn import layers as nn_layers
from ..nn.layers import FactorizedEmbedding, FactorizedLinear
from ..nn import packed as nn_packed
from ..nn.packed import BITMASK, PACKED_KEY, VALUES, pack_state_dict
from ..nn import units as nn_units
from ..summary import TrialSummary, own_task
from . import modeling_ladasearch
from .fast import optimize_for_inference
from .inputs import max_length, random_inputs
from .packing import Packed

MODELING_FILE = Path(modeling_ladasearch.__file__)
# the exported modeling file, in this order: the layers, the units (which use the layers), the packing, the HF
# classes
_MODELING_PARTS = (nn_layers, nn_units, nn_packed, modeling_ladasearch)
# exported vs. source logits: float rounding of the merged matrices and of SDPA only (1e-6 on MiniLM); a
# wrong weight or layer shows as differences of order 1e-1
ATOL = 1e-4
# config keys of the source architecture that name it (the exported config names the ladasearch one)
_SOURCE_KEYS = ("model_type", "architectures", "auto_map", "transformers_version", "_name_or_path",
                "id2label", "label2id")


@dataclass(frozen=True)
class Family:
    """The ladasearch classes (in ``modeling_ladasearch.py``) that stand in for one transformers architecture."""

    config_class: type
    model_class: type

    @property
    def auto_map(self) -> dict[str, str]:
        module = MODELING_FILE.stem
        return {"AutoConfig": f"{module}.{self.config_class.__name__}",
                "AutoModelForSequenceClassification": f"{module}.{self.model_class.__name__}"}


# the source architecture (BertForSequenceClassification) -> its exported classes: one per family with a layout
FAMILIES: dict[str, Family] = {model.__bases__[-1].__name__: Family(config, model)
                               for config, model in modeling_ladasearch.EXPORTED.values()}


def modeling_source() -> str:
    """The self-contained ``modeling_ladasearch.py`` of an export: ``nn.layers``, ``nn.units``, ``nn.packed`` and
    the HF classes of ``runtime/modeling_ladasearch.py`` in one file, with their imports of each other removed,
    so the classes that trained the student are the ones transformers loads and the file needs only torch and
    transformers."""
    head = ast.get_docstring(ast.parse(MODELING_FILE.read_text()))
    imports, bodies = ["from __future__ import annotations"], []
    for module in _MODELING_PARTS:
        text = Path(module.__file__).read_text()
        lines = text.splitlines()
        tree = ast.parse(text)
        keep = [True] * len(lines)
        for node in tree.body:
            drop = (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)  # the module docstring
                    or isinstance(node, (ast.Import, ast.ImportFrom)))
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                is_own = isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("ladasearch"))
                source = ast.get_source_segment(text, node)
                if not is_own and source not in imports:
                    imports.append(source)
            if drop:
                keep[node.lineno - 1:node.end_lineno] = [False] * (node.end_lineno - node.lineno + 1)
        bodies.append("\n".join(line for line, k in zip(lines, keep) if k).strip())
    return (f'"""{head}\n"""\n\n{imports[0]}\n\n' + "\n".join(imports[1:]) + "\n\n\n" + "\n\n\n".join(bodies)
            + "\n")


def family_of(model: nn.Module) -> Family:
    name = type(model).__name__
    if name not in FAMILIES:
        raise LadaError(f"architecture {name} cannot be exported yet; exportable: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def label_names(summary: TrialSummary, num_labels: int) -> tuple[str, ...]:
    """The task's class names (``score`` for a regression head): those a task given by files recorded, else the
    GLUE task's; LABEL_i when neither is known."""
    recorded = (summary.data or {}).get("labels") if own_task(summary.data) else None
    if recorded is not None:
        names = tuple(str(x) for x in recorded) or ("score",)
    else:
        try:
            names = get_task(summary.task).label_names or ("score",)
        except LadaError:
            names = ()
    return tuple(names) if len(names) == num_labels else tuple(f"LABEL_{i}" for i in range(num_labels))


def _provenance(summary: TrialSummary) -> dict:
    """What the config records of the compression (for people reading it; loading ignores it)."""
    return {"task": summary.task, "main_metric": summary.main_metric, "score": summary.score,
            "teacher_score": summary.teacher_score, "achieved_factor": summary.achieved_factor,
            "ratios": summary.ratios.to_json(), "teacher": summary.model}


def factorized_layers(model: nn.Module) -> dict[str, dict]:
    """``{module name: {"kind", "rank"}}`` of the factorized layers of ``model`` (what the config lists)."""
    out = {}
    for name, (_, module) in compressible_modules(model).items():
        if isinstance(module, FactorizedLinear):
            out[name] = {"kind": "linear", "rank": module.rank}
        elif isinstance(module, FactorizedEmbedding):
            out[name] = {"kind": "embedding", "rank": module.rank}
    return out


def _inference_form(model: nn.Module) -> nn.Module:
    """Masks folded, factors merged where the dense matrix is cheaper (MAC count: deterministic, machine-free)."""

    inference, _ = optimize_for_inference(model, mode="macs", attention=None, check=False)
    return inference


def deploy_model(model: nn.Module, summary: TrialSummary) -> nn.Module:
    """The exportable model (a ``modeling_ladasearch`` class) computing the logits of ``model`` (moved to the CPU,
    eval mode); checked on a random batch."""
    family = family_of(model)
    source = _inference_form(model.cpu().eval())
    base = {k: v for k, v in source.config.to_dict().items() if k not in _SOURCE_KEYS}
    num_labels = source.config.num_labels
    names = label_names(summary, num_labels)
    config = family.config_class(factorized=factorized_layers(source), ladasearch=_provenance(summary),
                                 id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                                 **base)
    config.architectures = [family.model_class.__name__]
    config.auto_map = family.auto_map
    # PyTorch's fused attention where the family has it (DeBERTa's disentangled attention has not)
    config._attn_implementation = "sdpa" if family.model_class._supports_sdpa else "eager"
    exported = family.model_class(config)
    missing, unexpected = exported.load_state_dict(source.state_dict(), strict=False)
    if missing or unexpected:
        raise LadaError(f"the exported {family.model_class.__name__} does not match the model: missing "
                        f"{missing[:3]}, unexpected {unexpected[:3]}")
    exported.eval()
    diff = logits_gap(model, exported)
    if not diff < ATOL:
        raise LadaError(f"the exported model's logits differ from the source's by {diff:.3g} (allowed < {ATOL:g})")
    return exported


def logits_gap(a: nn.Module, b: nn.Module, seed: int = 0) -> float:
    """max |logits(a) - logits(b)| on a small random batch with padding and both segments."""

    inputs = random_inputs(a, 3, max_length(a, 24), seed=seed, padded=True)
    with torch.no_grad():
        return float((a(**inputs).logits - b(**inputs).logits).abs().max())


def save_weights(exported: nn.Module, folder: str | Path) -> Packed:
    """``model.safetensors`` and ``config.json`` of ``exported`` in ``folder``, every matrix that packing makes
    smaller stored packed (``nn.packed``); returns what was packed."""
    from transformers.utils import logging as hf_logging

    dense = exported.state_dict()
    state, spec = pack_state_dict(dense)
    packed = Packed(len(spec), sum(dense[n].numel() * dense[n].element_size() for n in spec),
                    sum(state[n + s].numel() * state[n + s].element_size() for n in spec for s in (VALUES, BITMASK)))
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one small file: no "Writing model shards" bar
    setattr(exported.config, PACKED_KEY, spec)
    try:
        exported.save_pretrained(folder, state_dict=state)
    finally:
        setattr(exported.config, PACKED_KEY, {})  # the model in memory stays dense
        if bars:
            hf_logging.enable_progress_bar()
    return packed


def write_hf_folder(exported: nn.Module, folder: str | Path, tokenizer) -> Packed:
    """Weights (``model.safetensors``), ``config.json``, the modeling file and the tokenizer in ``folder``;
    returns what the weights file stores packed."""
    from transformers.utils import logging as hf_logging

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        packed = save_weights(exported, folder)
        tokenizer.save_pretrained(folder)
    finally:
        hf_logging.set_verbosity(verbosity)
    (folder / MODELING_FILE.name).write_text(modeling_source())
    return packed


def load_hf_folder(folder: str | Path) -> nn.Module:
    """The exported folder as plain transformers loads it (``trust_remote_code=True``), in eval mode."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoModelForSequenceClassification.from_pretrained(str(folder), trust_remote_code=True).eval()
    finally:
        hf_logging.set_verbosity(verbosity)
