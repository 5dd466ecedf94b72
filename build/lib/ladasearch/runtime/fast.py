"""The fastest exact inference path for a compressed model on CPU.

For every factorized or pruned matrix the candidates are
    factored  keep the two factors: y = (x @ B) @ A.T,      r*(m+n) MACs per token
    dense     merge W = A @ B.T into one nn.Linear:         m*n MACs per token (cheaper when r*(m+n) >= m*n)
    sparse    CSR factors (or a CSR weight for a pruned dense matrix), torch.sparse.mm
The MAC count picks between factored and dense; in ``mode="measure"`` every candidate is timed on
``tokens`` random rows and another candidate replaces the MAC choice only when it is faster by more
than ``margin`` in two timing passes (``mode="auto"``, the default, measures only when the machine is
not oversubscribed, and otherwise keeps the MAC choice).

Unstructured sparsity does not pay on CPU here: at the densities LadaBERT leaves (tens of percent of the
factor entries) torch's CSR kernels are no faster than the dense GEMM of the full merged matrix and about
twice slower than the two dense factors (MiniLM 10x, 31% density, 512 tokens, 1 thread: 0.5 ms factored,
1.1 ms dense, 1.1 ms CSR for a 384x384 layer), so ``sparse`` is measured and rejected; the report keeps
the timings.  Pruning therefore shrinks the file on disk (packed masks) but not the memory or the time
of inference: the pruned entries are stored zeros in the dense factors.

Attention is switched to PyTorch's fused ``scaled_dot_product_attention`` (``attention="sdpa"``),
which computes the same function.  The result is checked against the input model: max |logit
difference| must stay below ``atol`` (float rounding only).

The word embedding stays factored (merging it would bring back the full vocabulary x hidden table,
i.e. undo most of the memory saving; ``merge_embedding=True`` does it anyway).
"""

from __future__ import annotations

import os
import warnings
from functools import partial

import torch
from torch import nn

from ..compress.accounting import compressible_modules
from ..errors import LadaError
from ..nn.layers import FactorizedEmbedding, FactorizedLinear, replace_module
from ..nn.masks import copy_model, fold_masks
from .inputs import max_length, random_inputs
from .sparse import SparseFactorizedLinear, SparseLinear
from .timing import time_interleaved

CHOICES = ("factored", "dense", "sparse")
MODES = ("auto", "measure", "macs", "plan")
SPARSE_NOTE = ("unstructured sparsity: torch CSR kernels on CPU are measured per layer and are used only "
               "where faster; at the densities LadaBERT leaves they usually are not")


def _density(*tensors: torch.Tensor) -> float:
    total = sum(t.numel() for t in tensors)
    return sum(int(torch.count_nonzero(t)) for t in tensors) / total


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight.data.copy_(weight)
    if bias is not None:
        layer.bias.data.copy_(bias)
    return layer.to(weight.dtype)


def _candidates(module: nn.Module, choices: tuple[str, ...]) -> dict[str, nn.Module]:
    """Inference modules computing the same function as ``module`` (masks already folded)."""
    bias = module.bias.detach() if module.bias is not None else None
    out: dict[str, nn.Module] = {}
    if isinstance(module, FactorizedLinear):
        for choice in choices:
            if choice == "factored":
                out[choice] = module
            elif choice == "dense":
                out[choice] = _linear((module.A @ module.B.T).detach(), bias)
            else:
                out[choice] = SparseFactorizedLinear(module.A, module.B, bias)
    else:  # a pruned dense nn.Linear
        for choice in choices:
            if choice == "dense":
                out[choice] = module
            elif choice == "sparse":
                out[choice] = SparseLinear(module.weight, bias)
    return out


def _time_candidates(candidates: dict[str, nn.Module], x: torch.Tensor, runs: int) -> dict[str, float]:
    """Best-of-``runs`` milliseconds per candidate: the minimum is the least noisy estimate on a shared CPU."""
    with torch.no_grad():
        timings = time_interleaved({c: partial(m, x) for c, m in candidates.items()}, runs)
    return {c: t.min_ms for c, t in timings.items()}


def _layer_diff(old: nn.Module, new: nn.Module, gen: torch.Generator) -> float:
    """max |new(x) - old(x)| of one replaced layer on a few random rows (or token ids for an embedding)."""
    weight = next(old.parameters())
    if isinstance(old, FactorizedEmbedding):
        x = torch.randint(0, old.num_embeddings, (8,), generator=gen)
    else:
        x = torch.randn(8, old.in_features, generator=gen, dtype=weight.dtype)
    x = x.to(weight.device)
    with torch.no_grad():
        return float((new(x) - old(x)).abs().max())


def logits_diff(a: nn.Module, b: nn.Module, inputs: dict[str, torch.Tensor] | None = None) -> float:
    """max |logits(a) - logits(b)| on ``inputs`` (default: a small random batch with padding)."""
    if inputs is None:
        device = next(a.parameters()).device
        inputs = random_inputs(a, 2, max_length(a, 24), padded=True, device=device)
    with torch.no_grad():
        return float((a(**inputs).logits - b(**inputs).logits).abs().max())


def _set_attention(model: nn.Module, attention: str | None) -> str:
    current = getattr(model.config, "_attn_implementation", None) or "eager"
    if attention is None or attention == current:
        return current
    try:
        model.set_attn_implementation(attention)
    except (AttributeError, ValueError, ImportError) as exc:
        warnings.warn(f"attention {attention!r} not available, keeping {current!r}: {exc}", stacklevel=3)
        return current
    return attention


def machine_busy() -> float | None:
    """The 1-minute load average when it exceeds the CPU count (other processes compete for the cores), else None."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    return load if load > (os.cpu_count() or 1) else None


def optimize_for_inference(model: nn.Module, *, mode: str = "auto", plan: dict[str, str] | None = None,
                           tokens: int = 512, runs: int = 5, allow_sparse: bool = True,
                           max_sparse_density: float = 0.5, margin: float = 0.1, attention: str | None = "sdpa",
                           merge_embedding: bool = False, check: bool = True, atol: float = 1e-4,
                           inplace: bool = False) -> tuple[nn.Module, dict]:
    """The fastest exact CPU inference version of ``model`` and a report of every decision.

    mode: ``"measure"`` times the candidates of each layer on ``tokens`` random rows; ``"macs"`` picks
    dense or factored by the MAC count alone (deterministic, no sparse); ``"plan"`` applies ``plan``
    (``{layer name: choice}``, e.g. ``report["plan"]`` of an earlier call); ``"auto"`` measures unless
    the machine is oversubscribed (load average above the CPU count: per-layer timings are then
    dominated by waiting for the cores, which biases them towards fewer kernel calls), and then uses
    the MAC count (``report["busy_load"]`` says so).
    Raises LadaError when ``check`` and the logits differ by ``atol`` or more, naming the replaced layer
    whose own output moved most.
    """
    if mode not in MODES:
        raise LadaError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    busy = machine_busy() if mode == "auto" else None
    requested, mode = mode, ("macs" if busy is not None else "measure") if mode == "auto" else mode
    if mode == "plan" and plan is None:
        raise LadaError("mode 'plan' needs plan={layer name: choice}")
    reference = model
    model = model if inplace else copy_model(model)
    if check and inplace:
        reference = copy_model(model)
    model.eval()
    reference.eval()
    fold_masks(model)
    # pruned linear layers: masked ones (now folded) and those loaded with their masks folded (stored zeros)
    pruned = {name for name, (_, module) in compressible_modules(model).items()
              if type(module) is nn.Linear and _density(module.weight) < 1.0}
    layers: dict[str, dict] = {}
    replaced: dict[str, tuple[nn.Module, nn.Module]] = {}  # name: (stored module, its replacement)
    macs_before = macs_after = 0
    gen = torch.Generator().manual_seed(0)
    for name, (group, module) in compressible_modules(model).items():
        if isinstance(module, FactorizedEmbedding):
            m, n, r = module.num_embeddings, module.embedding_dim, module.rank
            merge = merge_embedding if mode != "plan" else plan.get(name) == "dense"
            info = {"kind": "embedding", "shape": [m, n], "rank": r, "density": _density(module.A, module.B),
                    "macs_factored": r * n, "macs_dense": 0,
                    "choice": "dense" if merge else "factored",
                    "reason": "merge_embedding" if merge else
                    f"kept factored: merging would store the full {m}x{n} table"}
            if merge:
                table = nn.Embedding(m, n, padding_idx=module.padding_idx)
                table.weight.data.copy_(module.A @ module.B.T)
                replace_module(model, name, table)
                replaced[name] = (module, table)
            layers[name] = info
            continue
        if isinstance(module, FactorizedLinear):
            m, n, r = module.out_features, module.in_features, module.rank
            factored, dense = r * (m + n), m * n
            density = _density(module.A, module.B)
            options = ("factored", "dense", "sparse")
            macs_choice = "factored" if factored < dense else "dense"
        elif isinstance(module, nn.Linear) and name in pruned:
            m, n, r = module.out_features, module.in_features, None
            factored, dense = None, m * n
            density = _density(module.weight)
            options = ("dense", "sparse")
            macs_choice = "dense"
        else:
            continue
        info = {"kind": "linear", "shape": [m, n], "rank": r, "density": density, "macs_factored": factored,
                "macs_dense": dense}
        macs_before += factored if factored is not None else dense
        if mode == "plan":
            choice = plan.get(name, macs_choice)
            if choice not in options:
                raise LadaError(f"plan for {name}: {choice!r} is not one of {', '.join(options)}")
            reason = "plan"
        elif mode == "macs":
            choice, reason = macs_choice, "fewest MACs"
        else:
            tried = [c for c in options
                     if c != "sparse" or (allow_sparse and density <= max_sparse_density)]
            candidates = _candidates(module, tuple(tried))
            x = torch.randn(tokens, n, generator=gen, dtype=next(module.parameters()).dtype)
            passes = [_time_candidates(candidates, x, runs) for _ in range(2)]
            info["ms"] = {c: min(p[c] for p in passes) for c in candidates}
            if "sparse" in options and "sparse" not in tried:
                info["ms"]["sparse"] = None
                info["sparse_skipped"] = (f"density {density:.3f} > {max_sparse_density}"
                                          if allow_sparse else "allow_sparse=False")
            # another candidate replaces the MAC choice only if it wins by > margin in both timing passes
            wins = [c for c in tried if c != macs_choice
                    and all(p[c] < p[macs_choice] * (1 - margin) for p in passes)]
            if wins:
                choice = min(wins, key=lambda c: info["ms"][c])
                reason = f"measured {info['ms'][macs_choice] / info['ms'][choice]:.2f}x faster than " \
                         f"{macs_choice} (fewest MACs)"
            else:
                choice, reason = macs_choice, "fewest MACs"
        if choice != ("factored" if isinstance(module, FactorizedLinear) else "dense"):
            replaced[name] = (module, _candidates(module, (choice,))[choice])
            replace_module(model, name, replaced[name][1])
        macs_after += factored if choice == "factored" else dense if choice == "dense" else round(
            density * (factored if factored is not None else dense))
        info.update(choice=choice, reason=reason)
        layers[name] = info
    attn = _set_attention(model, attention)
    counts = {c: sum(1 for i in layers.values() if i["choice"] == c) for c in CHOICES}
    report = {"mode": mode, "requested_mode": requested, "busy_load": busy, "attention": attn, "layers": layers,
              "counts": counts, "plan": {k: v["choice"] for k, v in layers.items()},
              "linear_macs_per_token": {"stored": macs_before, "chosen": macs_after}, "note": SPARSE_NOTE}
    if mode == "measure":
        report.update(tokens=tokens, runs=runs, threads=torch.get_num_threads())
    if check:
        diff = logits_diff(reference, model)
        report["max_abs_diff"] = diff
        if not diff < atol:
            raise LadaError(f"the fast path changes the logits by {diff:.3g} (allowed: < {atol:g}); "
                            + _culprit(replaced, layers, attn))
    return model, report


def _culprit(replaced: dict[str, tuple[nn.Module, nn.Module]], layers: dict[str, dict], attention: str) -> str:
    if not replaced:
        return f"no layer was replaced, so the attention implementation ({attention}) is the difference"
    gen = torch.Generator().manual_seed(1)
    diffs = {name: _layer_diff(old, new, gen) for name, (old, new) in replaced.items()}
    name = max(diffs, key=diffs.get)
    return f"largest layer difference: {name} ({layers[name]['choice']}) by {diffs[name]:.3g}"
