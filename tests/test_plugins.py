"""Plug-in points from outside the package: a toy pruning score and a toy factorizer, one class and one
registry call each, used by the public ``compress_model`` through ``CompressionConfig``."""

from __future__ import annotations

import pytest
import torch

import ladasearch
from ladasearch.data import TASKS

CALLS = {"factorize": 0, "refactor": 0, "scores": 0}


class RandomScore(ladasearch.PruningScore):
    """Seeded random importance: which entries survive has nothing to do with their values."""

    name = "toy-random"

    def __init__(self):
        self.generator = torch.Generator().manual_seed(0)

    def scores(self, module, names, stats):
        CALLS["scores"] += 1
        return {n: torch.rand(getattr(module, n).shape, generator=self.generator) for n in names}


class RandomBasis(ladasearch.Factorizer):
    """Projection on a random orthonormal basis Q (n x r) of the input space: B = Q, A = W @ Q."""

    name = "toy-basis"

    def __init__(self):
        self.generator = torch.Generator().manual_seed(0)

    def _basis(self, n: int, rank: int) -> torch.Tensor:
        return torch.linalg.qr(torch.randn(n, rank, generator=self.generator))[0]

    def factorize(self, weight, rank, stats):
        CALLS["factorize"] += 1
        q = self._basis(weight.shape[1], rank)
        return weight.float() @ q, q

    def refactor(self, a, b, rank, stats):
        CALLS["refactor"] += 1
        q = self._basis(b.shape[0], rank)
        return a @ (b.T @ q), q


ladasearch.register_pruning_score(RandomScore)
ladasearch.register_factorizer(RandomBasis)


@pytest.fixture(autouse=True)
def _count_calls():
    CALLS.update(dict.fromkeys(CALLS, 0))


def _compress(model, features, ratios, compression):
    train, dev = features
    cfg = ladasearch.TrainConfig(rounds=2, steps_per_round=1, final_steps=1, batch_size=8, eval_batch_size=8)
    return ladasearch.compress_model(model, train, dev, TASKS["sst2"], ratios, cfg, compression=compression)


# 7.5x: on the tiny model plain SVD's whole-rank rounding also lands within 1% (at 5x it is 1.4% off)
@pytest.mark.parametrize("method", ["hybrid", "svd", "prune"])
def test_toy_plugins_compress_to_the_target(tiny_model, tiny_features, ratios_for, method):
    ratios = ratios_for(ladasearch.count_parameters(tiny_model), 7.5, method)
    compression = ladasearch.CompressionConfig(factorizer="toy-basis", prune_score="toy-random")
    result = _compress(tiny_model, tiny_features, ratios, compression)
    assert result.achieved_factor == pytest.approx(7.5, rel=0.01)
    factorizes, prunes = method != "prune", method != "svd"
    assert (CALLS["factorize"] > 0) == factorizes and (CALLS["scores"] > 0) == prunes
    if factorizes:
        assert CALLS["factorize"] == 14 and CALLS["refactor"] == 14  # every matrix, then its smaller rank
    summary = result.summary(target=7.5)
    assert (summary.factorizer, summary.prune_score) == ("toy-basis", "toy-random")


def test_toy_factorizer_is_the_one_used(tiny_model, tiny_features, ratios_for):
    """Its factors span the random basis, not the weight's singular vectors: B is orthonormal."""
    ratios = ratios_for(ladasearch.count_parameters(tiny_model), 5.0, "svd")
    plain = _compress(tiny_model, tiny_features, ratios, ladasearch.CompressionConfig())
    toy = _compress(tiny_model, tiny_features, ratios, ladasearch.CompressionConfig(factorizer="toy-basis"))
    name = "bert.encoder.layer.0.attention.self.query"
    # one training step per round moves B a little from the basis the last compression left
    b = toy.student.get_submodule(name).B.detach()
    torch.testing.assert_close(b.T @ b, torch.eye(b.shape[1]), atol=0.05, rtol=0)
    assert plain.achieved_factor == toy.achieved_factor
    assert not torch.allclose(plain.student.get_submodule(name).weight, toy.student.get_submodule(name).weight)


def test_toy_score_chooses_other_entries_than_magnitude(tiny_model, tiny_features, ratios_for):
    ratios = ratios_for(ladasearch.count_parameters(tiny_model), 5.0, "prune")
    plain = _compress(tiny_model, tiny_features, ratios, ladasearch.CompressionConfig())
    toy = _compress(tiny_model, tiny_features, ratios, ladasearch.CompressionConfig(prune_score="toy-random"))
    name = "bert.encoder.layer.0.attention.self.query"
    kept_plain = plain.student.get_submodule(name).weight_mask.bool()
    kept_toy = toy.student.get_submodule(name).weight_mask.bool()
    assert kept_plain.sum() == kept_toy.sum()
    assert not torch.equal(kept_plain, kept_toy)
    assert plain.student_params == toy.student_params


@pytest.mark.parametrize("field, value, allowed", [
    ("factorizer", "nope", "toy-basis"),
    ("prune_score", "nope", "toy-random"),
])
def test_unknown_plugin_names_the_registered_ones(field, value, allowed):
    with pytest.raises(ladasearch.LadaError, match=f"unknown .*'nope'; allowed: .*{allowed}"):
        ladasearch.CompressionConfig(**{field: value})
