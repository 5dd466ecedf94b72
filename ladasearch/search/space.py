"""Declarative search spaces (``search_spaces/*.yaml``) and the ratios they yield under the budget.

A space names ranges for the embedding ratio and for the SVD-vs-pruning split of the
encoder, optionally for ``structured_ratio`` (the share of every layer's heads and FFN neurons kept; absent
= 1, none removed, the paper), plus optional training knobs and the compression plug-ins (``space_compression``).  The encoder
ratio is then solved from the budget (eq. 7, ``compress.budget.split_ratios``), so every sampled point
meets the target exactly;
``svd_split`` is the share of the encoder's reduction (in log terms) done by SVD: 1 = SVD only,
0 = pruning only, and a method that fixes a ratio fixes the split too.  ``method`` is one name or
``{choices: [hybrid, prune, svd]}``: each trial then picks the method, and ``svd_split`` is sampled only for a
method that splits (hybrid).  The split's ends are not the pure methods: at split 0 hybrid still factorizes
every matrix (at the rank that saves nothing, a loss) and factorizes the embedding, so a space that should
contain the pruning-only recipe offers the method itself.

The embedding range is clipped to the ratios that leave the encoder a usable ratio
(``compress.budget.feasible_embedding``, at structure 1) before the search starts; an empty range is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ..compress.accounting import ParamCount
from ..compress.budget import Ratios, feasible_embedding, paper_ratios, split_ratios
from ..compress.methods import get_method, method_names
from ..compress.structure import Widths
from ..config import LossWeights, TrainConfig
from ..errors import LadaError
from .space_compression import CompressionChoices
from .space_file import read_yaml
from .space_param import Param, parse_names

# an installed wheel carries the spaces as data beside this module (setup.py); a source tree holds them at the top
_SPACE_DIRS = (Path(__file__).resolve().parent / "spaces", Path(__file__).resolve().parents[2] / "search_spaces")
SPACE_DIR = next((d for d in _SPACE_DIRS if d.is_dir()), _SPACE_DIRS[-1])
PAPER_METHOD = "hybrid"   # the paper's Table 2 gives LadaBERT's (hybrid) ratios
TRAIN_KNOBS = {"rounds": int, "steps_per_round": int, "final_steps": int, "batch_size": int,
               "learning_rate": float, "temperature": float, "weight_decay": float}
TOP_KEYS = {"name", "description", "method", "ratios", "train", "loss_weights", "distill", "compression"}
RATIO_KEYS = {"embedding_ratio", "svd_split", "structured_ratio"}


@dataclass(frozen=True)
class SearchSpace:
    name: str
    method: str = "hybrid"
    paper: bool = False                       # the paper's Table 2 ratios: a one-point space
    embedding_ratio: Param | None = None
    svd_split: Param | None = None
    train: dict[str, Param] = field(default_factory=dict)
    loss_weights: dict[str, Param] = field(default_factory=dict)
    distill: bool = True
    description: str = ""
    compression: CompressionChoices = field(default_factory=CompressionChoices)   # factorizer, pruning score
    structured_ratio: Param | None = None     # share of heads and FFN neurons kept; None: 1, none removed
    method_choices: Param | None = None       # methods a trial picks from (then ``method`` is the default one)

    def __post_init__(self):
        if self.paper and self.structured_ratio is not None:
            raise LadaError("structured_ratio is not allowed with ratios: paper (the paper removes no heads or "
                            "neurons); give embedding_ratio and svd_split instead")

    # ---- reading -------------------------------------------------------------------------
    @classmethod
    def load(cls, name_or_path: str) -> SearchSpace:
        """A YAML file path, or the name of a file in ``search_spaces/`` (e.g. 'default', 'paper')."""
        path = Path(name_or_path)
        if not path.is_file():
            candidates = [SPACE_DIR / f"{name_or_path}.yaml", Path("search_spaces") / f"{name_or_path}.yaml"]
            path = next((c for c in candidates if c.is_file()), None)
            if path is None:
                known = sorted(p.stem for p in SPACE_DIR.glob("*.yaml"))
                raise LadaError(f"search space {name_or_path!r} is neither a file nor one of: {', '.join(known)}")
        try:
            data = read_yaml(path)  # size-capped, no aliases
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise LadaError(f"search space {path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
        try:
            return cls.from_dict(data, default_name=path.stem)
        except LadaError as exc:
            raise LadaError(f"search space {path}: {exc}") from None

    @classmethod
    def from_dict(cls, data: Any, default_name: str = "custom") -> SearchSpace:
        if not isinstance(data, dict):
            raise LadaError(f"must be a mapping with keys {sorted(TOP_KEYS)}, got {type(data).__name__}")
        unknown = set(data) - TOP_KEYS
        if unknown:
            raise LadaError(f"unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(TOP_KEYS))}")
        method, choices = _method(data.get("method", "hybrid"))
        kind = get_method(method)
        splits = any(get_method(m).free_split for m in (choices.choices if choices else (method,)))
        distill = data.get("distill", True)
        if not isinstance(distill, bool):
            raise LadaError(f"distill must be true or false, got {distill!r}")
        ratios = data.get("ratios")
        paper = ratios == "paper"
        embedding = split = structure = None
        if not paper:
            if not isinstance(ratios, dict):
                raise LadaError("ratios must be 'paper' or a mapping with embedding_ratio (and svd_split)")
            unknown = set(ratios) - RATIO_KEYS
            if unknown:
                raise LadaError(f"ratios: unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(RATIO_KEYS))}")
            if "embedding_ratio" not in ratios:
                raise LadaError("ratios: embedding_ratio is required")
            embedding = Param.parse("embedding_ratio", ratios["embedding_ratio"])
            for v in embedding.values():
                if not 0 < v <= 1:
                    raise LadaError(f"embedding_ratio: {v} is outside (0, 1]")
            split = Param.parse("svd_split", ratios.get("svd_split", kind.default_split))
            for v in split.values():
                if not 0 <= v <= 1:
                    raise LadaError(f"svd_split: {v} is outside [0, 1]")
            if not splits and not (split.fixed and split.value == kind.default_split):
                raise LadaError(f"method {method!r} fixes svd_split at {kind.default_split:g}; leave it out")
            if "structured_ratio" in ratios:
                structure = Param.parse("structured_ratio", ratios["structured_ratio"])
                for v in structure.values():
                    if not 0 < v <= 1:
                        raise LadaError(f"structured_ratio: {v} is outside (0, 1] (the share of heads and FFN "
                                        f"neurons kept; 1 = none removed)")
        elif method != PAPER_METHOD or choices is not None:
            raise LadaError(f"ratios: 'paper' is the {PAPER_METHOD} method's Table 2; use method: {PAPER_METHOD}")
        train = data.get("train") or {}
        if not isinstance(train, dict):
            raise LadaError("train must be a mapping")
        unknown = set(train) - set(TRAIN_KNOBS)
        if unknown:
            raise LadaError(f"train: unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(TRAIN_KNOBS))}")
        weights = data.get("loss_weights") or {}
        if not isinstance(weights, dict):
            raise LadaError("loss_weights must be a mapping")
        unknown = set(weights) - set(LossWeights.__dataclass_fields__)
        if unknown:
            raise LadaError(f"loss_weights: unknown key(s) {sorted(unknown)}; "
                            f"allowed: {', '.join(LossWeights.__dataclass_fields__)}")
        space = cls(
            name=str(data.get("name", default_name)), method=method, paper=paper, embedding_ratio=embedding,
            svd_split=split, train={k: Param.parse(k, v, TRAIN_KNOBS[k]) for k, v in train.items()},
            loss_weights={k: Param.parse(f"loss_weights.{k}", v) for k, v in weights.items()},
            distill=distill, description=str(data.get("description", "")),
            compression=CompressionChoices.parse(data.get("compression")), structured_ratio=structure,
            method_choices=choices)
        for p in space.params():  # every bound and choice must make a valid TrainConfig
            for v in p.values():
                space.train_config(TrainConfig(), {p.name: v})
        return space

    @property
    def methods(self) -> tuple[str, ...]:
        """Every method a trial of this space may use."""
        return self.method_choices.choices if self.method_choices is not None else (self.method,)

    def params(self) -> list[Param]:
        ratio_params = [] if self.paper else [self.embedding_ratio, self.svd_split] + \
            ([self.structured_ratio] if self.structured_ratio is not None else [])
        methods = [self.method_choices] if self.method_choices is not None else []
        return methods + ratio_params + list(self.train.values()) + list(self.loss_weights.values()) + \
            self.compression.params()

    def to_dict(self) -> dict:
        def spec(p: Param):
            if p.fixed:
                return p.value
            if p.choices is not None:
                return {"choices": list(p.choices)}
            return {"low": p.low, "high": p.high, "log": p.log}
        out: dict[str, Any] = {"name": self.name, "distill": self.distill,
                               "method": self.method if self.method_choices is None else spec(self.method_choices)}
        out["ratios"] = "paper" if self.paper else {"embedding_ratio": spec(self.embedding_ratio),
                                                    "svd_split": spec(self.svd_split)}
        if self.structured_ratio is not None:
            out["ratios"]["structured_ratio"] = spec(self.structured_ratio)
        if self.train:
            out["train"] = {k: spec(p) for k, p in self.train.items()}
        if self.loss_weights:
            out["loss_weights"] = {k: spec(p) for k, p in self.loss_weights.items()}
        if self.compression.params():
            out["compression"] = self.compression.to_dict()
        if self.description:
            out["description"] = self.description
        return out

    # ---- the budget ----------------------------------------------------------------------
    @property
    def structured(self) -> bool:
        """Whether a trial of this space may remove heads and neurons (then it needs the teacher's ``Widths``)."""
        return self.structured_ratio is not None and min(self.structured_ratio.values()) < 1

    def bounded(self, counts: ParamCount, target: float) -> SearchSpace:
        """This space with the embedding range clipped to what the budget allows (LadaError when empty)."""
        if self.paper:
            paper_ratios(counts, target)  # raises with the reason when the paper's ratios do not fit
            return self
        low, high = feasible_embedding(counts, target)
        emb = self.embedding_ratio
        if emb.fixed or emb.choices is not None:
            bad = [v for v in emb.values() if not low <= v <= high]
            if bad:
                raise LadaError(f"embedding_ratio {bad} cannot meet {target:g}x on this model; feasible embedding "
                                f"ratios are [{low:.4f}, {high:.4f}]")
            return self
        if emb.high < low or emb.low > high:
            raise LadaError(f"embedding_ratio range [{emb.low:g}, {emb.high:g}] has no point that meets {target:g}x "
                            f"on this model; feasible embedding ratios are [{low:.4f}, {high:.4f}]")
        return replace(self, embedding_ratio=replace(emb, low=max(emb.low, low), high=min(emb.high, high)))

    def ratios(self, config: dict, counts: ParamCount, target: float, widths: Widths | None = None) -> Ratios:
        """Solve the encoder ratio from the budget for a sampled ``config`` (``widths``: the teacher's, needed
        when the config's structured_ratio is below 1)."""
        if self.paper:
            return paper_ratios(counts, target)
        method = get_method(config.get("method", self.method))
        split = config["svd_split"] if method.free_split else method.default_split
        return split_ratios(counts, target, config["embedding_ratio"], split, method.name,
                            structure=config.get("structured_ratio", 1.0), widths=widths)

    # ---- sampling ------------------------------------------------------------------------
    def define_by_run(self, trial) -> dict:
        """Optuna define-by-run: suggests every free parameter, returns the fixed ones."""
        constants = {}
        method = self.method_choices.suggest(trial) if self.method_choices is not None else self.method
        for p in self.params():
            if p is self.method_choices or (p is self.svd_split and not get_method(method).free_split
                                            and self.method_choices is not None):
                continue  # the split of a method that does not split is its own, never sampled
            value = p.suggest(trial)
            if p.fixed:
                constants[p.name] = value
        return constants

    def max_steps(self, base: TrainConfig) -> int:
        """The most training steps a trial can run (ASHA's horizon); at least 1, so a space of untrained
        trials still has one."""
        most = {k: max(self.train[k].values()) if k in self.train else getattr(base, k)
                for k in ("rounds", "steps_per_round", "final_steps")}
        return max(replace(base, **most).total_steps, 1)

    def train_config(self, base: TrainConfig, config: dict) -> TrainConfig:
        knobs = {k: config[k] for k in self.train if k in config}
        if "learning_rate" in knobs:
            knobs["learning_rate"] = float(knobs["learning_rate"])
        weights = {k: config[f"loss_weights.{k}"] for k in self.loss_weights if f"loss_weights.{k}" in config}
        return replace(base, **knobs, distill=self.distill and base.distill,
                       loss_weights=replace(base.loss_weights, **weights))


def _method(spec: Any) -> tuple[str, Param | None]:
    """(the default method, the choices or None) of a space's ``method``: a name or ``{choices: [names]}``."""
    def known(name: str) -> None:
        if name not in method_names():
            raise LadaError(f"method {name!r} is not one of {', '.join(method_names())}")

    param = parse_names("method", spec, known, "a method name")
    if param.fixed or len(param.choices) == 1:
        return param.values()[0], None
    return (PAPER_METHOD if PAPER_METHOD in param.choices else param.choices[0]), param
