"""Data-aware compression: weighted SVD (fisher, activation), calibration statistics, taylor/movement/wanda."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from ladasearch.compress import FactorizedEmbedding, FactorizedLinear, compressible_modules, count_parameters
from ladasearch.compress.calibration import STATISTICS, CalibrationStats, LayerStats, collect_statistics
from ladasearch.compress.data_scores import MovementScore, TaylorScore, WandaScore
from ladasearch.compress.factorizers import refactor as plain_refactor
from ladasearch.compress.factorizers import truncated_factors
from ladasearch.compress.prune import prune_by_score
from ladasearch.nn.masks import unprune
from ladasearch.compress.registry import get_factorizer, get_pruning_score
from ladasearch.compress.scores import MagnitudeScore
from ladasearch.compress.weighted_svd import ActivationFactorizer, FisherFactorizer
from ladasearch.data import TASKS
from ladasearch.errors import LadaError

SST2 = TASKS["sst2"]
M, N, RANK = 14, 9, 3


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _weight(seed=0, m=M, n=N):
    return torch.randn(m, n, generator=_gen(seed))


def _inputs(rows=60, n=N, seed=1):
    """Inputs with very different scales per feature (and correlated), so the weighting matters."""
    g = _gen(seed)
    return (torch.randn(rows, n, generator=g) @ torch.randn(n, n, generator=g)) * torch.logspace(-1, 1, n)


def _fisher(m=M, seed=2):
    return torch.rand(m, generator=_gen(seed)).pow(4) * 10 + 1e-2


# stats of each layer kind: (factorizer, stats builder for an m x n matrix, weighting matrix left/right)
def _fisher_case(m, n, seed=2):
    fisher = _fisher(m, seed)
    return FisherFactorizer(), LayerStats("l", 0, row_fisher=fisher), ("rows", fisher.sqrt())


def _activation_case(m, n, seed=1):
    x = _inputs(n=n, seed=seed)
    gram = x.T @ x
    weighting = ("cols", torch.linalg.cholesky(gram))
    return ActivationFactorizer(damping=0.0), LayerStats("l", 60, input_gram=gram), weighting


def _embedding_case(m, n, seed=3):
    counts = (torch.rand(m, generator=_gen(seed)).pow(4) * 200).round()  # Zipf-like: a few frequent tokens
    return ActivationFactorizer(damping=0.0), LayerStats("e", int(counts.sum()), token_counts=counts), \
        ("rows", counts.sqrt())


CASES = {"fisher": _fisher_case, "activation": _activation_case, "embedding": _embedding_case}


def _weighted_error(weight, approx, weighting):
    side, w = weighting
    diff = weight - approx
    return (w[:, None] * diff).norm() if side == "rows" else (diff @ w).norm()


def _optimum(weight, rank, weighting):
    side, w = weighting
    scaled = w[:, None] * weight if side == "rows" else weight @ w
    return torch.linalg.svdvals(scaled)[rank:].norm()


def test_registered_with_their_needs():
    assert isinstance(get_factorizer("fisher"), FisherFactorizer)
    assert isinstance(get_factorizer("activation"), ActivationFactorizer)
    assert isinstance(get_pruning_score("taylor"), TaylorScore)
    assert isinstance(get_pruning_score("movement"), MovementScore)
    assert isinstance(get_pruning_score("wanda"), WandaScore)
    for name in ("fisher", "activation"):
        assert get_factorizer(name).needs and get_factorizer(name).needs <= set(STATISTICS)
    assert get_pruning_score("wanda").needs <= set(STATISTICS)
    assert get_pruning_score("taylor").needs == frozenset() and get_pruning_score("taylor").learns_from_training
    assert not get_pruning_score("wanda").learns_from_training


# --------------------------------------------------------------------------- weighted SVD


@pytest.mark.parametrize("name, stats", [
    ("fisher", LayerStats("l", 0, row_fisher=torch.full((M,), 3.0))),
    ("activation", LayerStats("l", 0, input_gram=5.0 * torch.eye(N))),
    ("activation", LayerStats("e", 0, token_counts=torch.full((M,), 7.0))),
], ids=["fisher", "activation", "embedding"])
def test_unit_weights_give_plain_svd(name, stats):
    weight = _weight()
    a, b = get_factorizer(name).factorize(weight, RANK, stats)
    pa, pb = truncated_factors(weight, RANK)
    torch.testing.assert_close(a, pa, atol=1e-5, rtol=1e-4)  # the factors themselves, not only their product
    torch.testing.assert_close(b, pb, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("rank", [1, 3, 6])
def test_weighted_factors_reach_the_weighted_optimum_and_beat_plain_svd(case, rank):
    factorizer, stats, weighting = CASES[case](M, N)
    weight = _weight()
    a, b = factorizer.factorize(weight, rank, stats)
    assert a.shape == (M, rank) and b.shape == (N, rank)
    error = _weighted_error(weight, a @ b.T, weighting)
    pa, pb = truncated_factors(weight, rank)
    torch.testing.assert_close(error, _optimum(weight, rank, weighting), rtol=1e-4, atol=1e-4)
    assert error < 0.95 * _weighted_error(weight, pa @ pb.T, weighting)


def test_default_damping_still_beats_plain_svd_on_the_real_inputs():
    weight, x = _weight(), _inputs()
    a, b = ActivationFactorizer().factorize(weight, RANK, LayerStats("l", 60, input_gram=x.T @ x))
    pa, pb = truncated_factors(weight, RANK)
    assert (x @ (weight - a @ b.T).T).norm() < 0.9 * (x @ (weight - pa @ pb.T).T).norm()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("rank", [1, 4])
def test_refactor_through_factors_equals_factorizing_the_product(case, rank):
    factorizer, stats, weighting = CASES[case](M, N)
    a0, b0 = torch.randn(M, 6, generator=_gen(5)), torch.randn(N, 6, generator=_gen(6))
    a, b = factorizer.refactor(a0, b0, rank, stats)
    fa, fb = factorizer.factorize(a0 @ b0.T, rank, stats)
    assert a.shape == (M, rank) and b.shape == (N, rank)
    torch.testing.assert_close(a @ b.T, fa @ fb.T, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(_weighted_error(a0 @ b0.T, a @ b.T, weighting),
                               _optimum(a0 @ b0.T, rank, weighting), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["fisher", "activation"])
def test_refactor_with_unit_weights_is_plain_refactor(name):
    stats = LayerStats("l", 0, row_fisher=torch.ones(M), input_gram=torch.eye(N))
    a0, b0 = torch.randn(M, 6, generator=_gen(5)), torch.randn(N, 6, generator=_gen(6))
    a, b = get_factorizer(name).refactor(a0, b0, RANK, stats)
    pa, pb = plain_refactor(a0, b0, RANK)
    torch.testing.assert_close(a @ b.T, pa @ pb.T, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a.norm(dim=0), pa.norm(dim=0), atol=1e-5, rtol=1e-4)  # same balance


def _degenerate_weight():
    weight = _weight()
    weight[2] = 0.0
    weight[:, 4] = 0.0
    return weight


@pytest.mark.parametrize("stats", [
    LayerStats("l", 0, row_fisher=torch.zeros(M)),                                     # no gradient at all
    LayerStats("l", 0, row_fisher=torch.cat([torch.zeros(M - 2), torch.tensor([1e-30, 5.0])])),
    LayerStats("l", 0, input_gram=torch.zeros(N, N)),                                  # no inputs seen
    LayerStats("l", 3, input_gram=_inputs(rows=3).T @ _inputs(rows=3)),                # rank 3 < 9
    LayerStats("l", 9, input_gram=torch.diag(torch.tensor([0.0, 1, 1, 0, 1e-12, 1, 1, 1, 1]))),
    LayerStats("e", 0, token_counts=torch.cat([torch.zeros(M - 1), torch.tensor([4.0])])),
    LayerStats("e", 0, token_counts=torch.zeros(M)),
], ids=["fisher-zero", "fisher-tiny", "gram-zero", "gram-low-rank", "gram-dead-inputs", "counts-one-token",
        "counts-zero"])
@pytest.mark.parametrize("weight", [_degenerate_weight(), torch.zeros(M, N)], ids=["zero-rows-cols", "all-zero"])
def test_degenerate_statistics_and_weights_give_finite_factors(stats, weight):
    factorizer = FisherFactorizer() if stats.row_fisher is not None else ActivationFactorizer()
    a, b = factorizer.factorize(weight, RANK, stats)
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    assert (a @ b.T - weight).norm() <= weight.norm() + 1e-5  # a projection never adds energy
    a_low = torch.cat([a, torch.zeros(M, 2)], 1)  # rank-deficient factors (e.g. pruned to zero columns)
    b_low = torch.cat([b, torch.zeros(N, 2)], 1)
    ra, rb = factorizer.refactor(a_low, b_low, 4, stats)
    assert torch.isfinite(ra).all() and torch.isfinite(rb).all()
    torch.testing.assert_close(ra @ rb.T, a @ b.T, atol=1e-4, rtol=1e-4)  # already rank 3: nothing lost


def test_zero_importance_rows_are_still_approximated():
    """A row never seen in calibration keeps its projection onto the kept subspace (no collapse to 0 or inf)."""
    weight = _weight()
    fisher = _fisher()
    fisher[5] = 0.0
    a, b = FisherFactorizer().factorize(weight, N, LayerStats("l", 0, row_fisher=fisher))  # full rank
    torch.testing.assert_close(a @ b.T, weight, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bad, match", [
    (LayerStats("l", 0, row_fisher=torch.ones(M + 1)), "has 15 entries, the matrix needs 14"),
    (LayerStats("l", 0, row_fisher=torch.tensor([float("nan")] * M)), "not finite"),
    (LayerStats("l", 0, input_sq=torch.ones(N)),
     "needs the calibration statistic 'row_fisher' for layer l; it has: input_sq"),
    (None, "needs calibration statistics"),
])
def test_fisher_rejects_bad_statistics(bad, match):
    with pytest.raises(LadaError, match=match):
        FisherFactorizer().factorize(_weight(), RANK, bad)


def test_activation_rejects_a_gram_of_another_size():
    with pytest.raises(LadaError, match="input_gram of layer l has 5 entries, the matrix needs 9"):
        ActivationFactorizer().factorize(_weight(), RANK, LayerStats("l", 0, input_gram=torch.eye(5)))


# --------------------------------------------------------------------------- calibration statistics


def _direct_inputs(model, features, module_name):
    """The inputs of ``module_name`` at non-padding positions for one batch of all of ``features``."""
    seen = []
    module = model.get_submodule(module_name)
    handle = module.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))
    batch = features.batch(torch.arange(len(features)))
    batch.pop("labels")
    with torch.no_grad():
        model(**batch)
    handle.remove()
    x = seen[0]
    return x[batch["attention_mask"].bool()] if x.dim() == 3 else x


@pytest.fixture
def full_stats(tiny_model, tiny_features):
    train, _ = tiny_features
    return collect_statistics(tiny_model, train, set(STATISTICS), batches=1, batch_size=len(train), task=SST2)


def test_statistics_have_the_right_shapes_and_kinds(tiny_model, full_stats):
    modules = compressible_modules(tiny_model)
    assert set(full_stats.layers) == set(modules)
    for name, (group, module) in modules.items():
        layer = full_stats.layer(name)
        m, n = module.weight.shape
        assert layer.row_fisher.shape == (m,) and (layer.row_fisher >= 0).all()
        if group == "embedding":
            assert layer.input_gram is None and layer.input_sq is None
            assert layer.token_counts.shape == (m,) and layer.token_counts.sum() == layer.rows
        else:
            gram = layer.input_gram.double()
            assert gram.shape == (n, n) and layer.token_counts is None
            torch.testing.assert_close(gram, gram.T)
            assert torch.linalg.eigvalsh(gram).min() > -1e-4 * gram.diagonal().mean()
            torch.testing.assert_close(layer.input_sq, layer.input_gram.diagonal())
    assert full_stats.batches == 1 and full_stats.examples == 32 and full_stats.seconds > 0
    assert full_stats.nbytes() == sum(t.numel() * 4 for layer in full_stats.layers.values()
                                      for t in layer.tensors().values())


@pytest.mark.parametrize("layer", ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.1.output.dense",
                                   "bert.pooler.dense"])
def test_gram_equals_direct_product_on_one_batch(tiny_model, tiny_features, full_stats, layer):
    x = _direct_inputs(tiny_model, tiny_features[0], layer)
    torch.testing.assert_close(full_stats.layer(layer).input_gram, x.T @ x, rtol=1e-4, atol=1e-3)
    assert full_stats.layer(layer).rows == x.shape[0]
    if layer != "bert.pooler.dense":  # padding positions are left out
        assert x.shape[0] == int(tiny_features[0].attention_mask.sum())


def test_token_counts_and_fisher_equal_direct_computation(tiny_model, tiny_features, full_stats):
    train = tiny_features[0]
    ids = train.input_ids[train.attention_mask.bool()]
    counts = full_stats.layer("bert.embeddings.word_embeddings").token_counts
    torch.testing.assert_close(counts, torch.bincount(ids, minlength=1000).float())
    model = copy.deepcopy(tiny_model)
    batch = train.batch(torch.arange(len(train)))
    labels = batch.pop("labels")
    nn.functional.cross_entropy(model(**batch).logits, labels).backward()
    for name in ("bert.embeddings.word_embeddings", "bert.encoder.layer.1.intermediate.dense"):
        grad = model.get_submodule(name).weight.grad
        torch.testing.assert_close(full_stats.layer(name).row_fisher, grad.pow(2).sum(1), rtol=1e-3, atol=1e-9)


def test_collecting_leaves_the_teacher_unchanged(tiny_model, tiny_features):
    tiny_model.train()
    tiny_model.bert.pooler.dense.weight.requires_grad_(False)
    before = copy.deepcopy(tiny_model.state_dict())
    collect_statistics(tiny_model, tiny_features[0], {"row_fisher", "input_gram"}, batches=2, batch_size=8,
                       task=SST2)
    assert tiny_model.training
    assert not tiny_model.bert.pooler.dense.weight.requires_grad
    assert all(p.grad is None for p in tiny_model.parameters())
    assert not any(m._forward_hooks for m in tiny_model.modules())
    after = tiny_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_only_the_needed_statistics_are_gathered(tiny_model, tiny_features):
    stats = collect_statistics(tiny_model, tiny_features[0], {"input_sq"}, batches=3, batch_size=5)
    assert stats.needs == {"input_sq"} and stats.batches == 3 and stats.examples == 15
    assert stats.covers({"input_sq"}) and not stats.covers({"input_sq", "input_gram"})
    layer = stats.layer("bert.encoder.layer.0.output.dense")
    assert layer.input_sq.shape == (128,) and layer.input_gram is None and layer.row_fisher is None
    assert stats.layer("bert.embeddings.word_embeddings").tensors() == {}


def test_fewer_rows_than_asked_uses_them_all(tiny_model, tiny_features):
    stats = collect_statistics(tiny_model, tiny_features[0], {"token_counts"}, batches=10, batch_size=8)
    assert (stats.batches, stats.examples) == (4, 32)
    assert stats.layer("bert.embeddings.word_embeddings").token_counts.sum() == tiny_features[0].attention_mask.sum()


@pytest.mark.parametrize("needs, kw, match", [
    ({"gram"}, {}, "unknown calibration statistic 'gram'; allowed: input_gram, input_sq, token_counts, row_fisher"),
    ({"row_fisher"}, {}, "'row_fisher' needs the task"),
    ({"input_sq"}, {"batches": 0}, "calibration batches must be an integer >= 1, got 0"),
])
def test_collect_rejects_bad_requests(tiny_model, tiny_features, needs, kw, match):
    with pytest.raises(LadaError, match=match):
        collect_statistics(tiny_model, tiny_features[0], needs, **kw)


def test_unknown_layer_is_an_error(full_stats):
    with pytest.raises(LadaError, match="no calibration statistics for layer 'classifier'"):
        full_stats.layer("classifier")


def test_save_load_and_pickle_round_trip(full_stats, tmp_path):
    full_stats.save(tmp_path / "calib")
    loaded = CalibrationStats.load(tmp_path / "calib")
    copied = pickle.loads(pickle.dumps(full_stats))
    for other in (loaded, copied):
        assert (other.needs, other.batches, other.examples, other.seconds) == \
               (full_stats.needs, full_stats.batches, full_stats.examples, full_stats.seconds)
        assert list(other.layers) == list(full_stats.layers)
        for name, layer in full_stats.layers.items():
            got = other.layer(name)
            assert got.rows == layer.rows and got.tensors().keys() == layer.tensors().keys()
            assert all(torch.equal(got.tensors()[k], t) for k, t in layer.tensors().items())
    with pytest.raises(LadaError, match="no calibration statistics in"):
        CalibrationStats.load(tmp_path / "missing")


# --------------------------------------------------------------------------- pruning scores


def _factorized_linear(seed=0, m=M, n=N, r=4):
    layer = FactorizedLinear(n, m, r)
    g = _gen(seed)
    layer.A.data = torch.randn(m, r, generator=g)
    layer.B.data = torch.randn(n, r, generator=g)
    return layer


def _output_change(layer, x, name, index):
    """|| Y - Y' ||_F over inputs ``x`` when entry ``index`` of tensor ``name`` is zeroed."""
    with torch.no_grad():
        before = layer(x)
        getattr(layer, name)[index] = 0.0
        return (before - layer(x)).norm()


@pytest.mark.parametrize("name, index", [("A", (3, 1)), ("A", (0, 3)), ("B", (2, 0)), ("B", (8, 2))])
def test_wanda_score_is_the_output_change_on_the_calibration_inputs(name, index):
    layer, x = _factorized_linear(), _inputs()
    scores = WandaScore().scores(layer, ("A", "B"), LayerStats("l", 60, input_gram=x.T @ x))
    torch.testing.assert_close(scores[name][index], _output_change(layer, x, name, index), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, index", [("A", (3, 1)), ("B", (2, 0))])
def test_wanda_embedding_score_is_the_output_change_on_the_calibration_tokens(name, index):
    table = FactorizedEmbedding(M, N, 4)
    g = _gen(4)
    table.A.data, table.B.data = torch.randn(M, 4, generator=g), torch.randn(N, 4, generator=g)
    ids = torch.tensor([3, 3, 3, 1, 5, 5, 7, 0])
    counts = torch.bincount(ids, minlength=M).float()
    scores = WandaScore(smoothing=0.0).scores(table, ("A", "B"), LayerStats("e", 8, token_counts=counts))
    torch.testing.assert_close(scores[name][index], _output_change(table, ids, name, index), rtol=1e-4, atol=1e-5)


def test_wanda_dense_linear_and_unseen_tokens():
    linear, x = nn.Linear(N, M), _inputs()
    scores = WandaScore().scores(linear, ("weight",), LayerStats("l", 60, input_gram=x.T @ x))
    torch.testing.assert_close(scores["weight"], linear.weight.detach().abs() * x.norm(dim=0))
    table = nn.Embedding(M, N)
    counts = torch.zeros(M)
    counts[2] = 10.0
    scores = WandaScore().scores(table, ("weight",), LayerStats("e", 10, token_counts=counts))["weight"]
    assert (scores > 0).all() and scores[2].min() > scores[[0, 1, 3]].max()


def _linear_loss(layer, x, c):
    """A loss linear in the output: its gradient w.r.t. the dense weight, c^T x, is the same whatever W is."""
    return (layer(x) * c).sum()


def _steps(layer, scorer, batches, name="l"):
    for x, c in batches:
        layer.zero_grad()
        _linear_loss(layer, x, c).backward()
        scorer.observe(name, layer, ("A", "B"))


def _batches(k=3):
    return [(torch.randn(5, N, generator=_gen(10 + i)), torch.randn(5, M, generator=_gen(20 + i))) for i in range(k)]


def test_taylor_before_training_is_magnitude():
    layer = _factorized_linear()
    got = TaylorScore().scores(layer, ("A", "B"), None)
    want = MagnitudeScore().scores(layer, ("A", "B"), None)
    assert all(torch.equal(got[n], want[n]) for n in ("A", "B"))


def _refactored(layer, rank=2):
    a, b = plain_refactor(layer.A.detach(), layer.B.detach(), rank)
    new = FactorizedLinear(N, M, rank)
    new.A.data, new.B.data, new.bias.data = a, b, layer.bias.detach().clone()
    return new


def _summed_grads(layer, batches):
    layer.zero_grad()
    for x, c in batches:
        _linear_loss(layer, x, c).backward()
    return {n: getattr(layer, n).grad.clone() for n in ("A", "B")}


def test_taylor_sums_the_full_gradient_of_masked_factors_and_carries_it_to_new_factors():
    layer, batches = _factorized_linear(), _batches()
    prune_by_score(layer, ("A", "B"), 30, MagnitudeScore())
    scorer = TaylorScore()
    _steps(layer, scorer, batches)
    unprune(layer)  # what the loop does next: fold the masks in, re-factorize, hand over the new module
    new = _refactored(layer)
    scorer.carry("l", new)
    # dL/dA' = (dL/dA) T_b exactly; only the round's first step (before the tap) misses the masked entries
    first = _summed_grads(layer, batches[:1])
    t = {"A": torch.linalg.pinv(layer.A.detach()) @ new.A.detach(),
         "B": torch.linalg.pinv(layer.B.detach()) @ new.B.detach()}
    hidden = {"A": (first["A"] * (layer.A == 0)) @ t["B"], "B": (first["B"] * (layer.B == 0)) @ t["A"]}
    direct = _summed_grads(new, batches)
    got = scorer.scores(new, ("A", "B"), None)
    live = {n: getattr(new, n).detach() != 0 for n in ("A", "B")}  # rows of A pruned whole stay zero rows
    for n in ("A", "B"):
        want = (getattr(new, n).detach() * (direct[n] - hidden[n])).abs()
        torch.testing.assert_close(got[n][live[n]], want[live[n]], rtol=1e-3, atol=1e-4)
        assert hidden[n].norm() > 0.05 * direct[n].norm()  # the masked entries matter: the check can fail
    lowest_live = min(float(got[n][live[n]].min()) for n in got)
    assert all((got[n][~live[n]] < lowest_live).all() for n in got)


def test_taylor_on_an_unmasked_layer_is_exact_after_carrying():
    layer, batches = _factorized_linear(), _batches()
    scorer = TaylorScore()
    _steps(layer, scorer, batches)
    new = _refactored(layer)
    scorer.carry("l", new)
    direct = _summed_grads(new, batches)
    got = scorer.scores(new, ("A", "B"), None)
    for n in ("A", "B"):
        torch.testing.assert_close(got[n], (getattr(new, n).detach() * direct[n]).abs(), rtol=1e-3, atol=1e-4)


def test_taylor_carries_a_dense_gradient_to_the_first_factors():
    linear, batches = nn.Linear(N, M), _batches()
    scorer = TaylorScore()
    for x, c in batches:
        linear.zero_grad()
        (linear(x) * c).sum().backward()
        scorer.observe("l", linear, ("weight",))
    a, b = truncated_factors(linear.weight, 3)
    new = FactorizedLinear(N, M, 3)
    new.A.data, new.B.data = a, b
    scorer.carry("l", new)
    direct = _summed_grads(new, batches)
    got = scorer.scores(new, ("A", "B"), None)
    for n in ("A", "B"):
        torch.testing.assert_close(got[n], (getattr(new, n).detach() * direct[n]).abs(), rtol=1e-3, atol=1e-4)


def test_learned_scores_leave_no_hook_behind_and_reset_forgets():
    layer, x = _factorized_linear(), _inputs()
    prune_by_score(layer, ("A", "B"), 30, MagnitudeScore())
    scorer = MovementScore()
    _steps(layer, scorer, _batches(2))
    assert layer._forward_hooks  # the tap for the next step
    with torch.no_grad():
        layer(x)  # evaluation: the tap removes itself
    assert not layer._forward_hooks
    _steps(layer, scorer, _batches(1))
    scorer.reset()
    assert not layer._forward_hooks
    got = scorer.scores(layer, ("A", "B"), None)
    assert torch.equal(got["A"], layer.A.detach().abs())  # magnitude again


def test_movement_keeps_pruned_entries_below_live_ones():
    linear = nn.Linear(N, M)
    prune_by_score(linear, ("weight",), 60, MagnitudeScore())
    scorer = MovementScore()
    for x, c in _batches():
        linear.zero_grad()
        (linear(x) * c).sum().backward()
        scorer.observe("l", linear, ("weight",))
    unprune(linear)
    scores = scorer.scores(linear, ("weight",), None)["weight"]
    zero = linear.weight.detach() == 0
    assert zero.sum() == M * N - 60 and scores[zero].max() < scores[~zero].min()


def test_unobserved_module_after_training_is_an_error():
    scorer, layer = TaylorScore(), _factorized_linear()
    _steps(layer, scorer, _batches(1))
    with pytest.raises(RuntimeError, match="carry"):
        scorer.scores(_factorized_linear(seed=1), ("A", "B"), None)


# --------------------------------------------------------------------------- through the public API


@pytest.mark.parametrize("factorizer, score, method", [
    ("svd", "taylor", "hybrid"), ("fisher", "taylor", "hybrid"), ("activation", "wanda", "hybrid"),
    ("svd", "movement", "prune"), ("svd", "wanda", "prune"),
])
def test_compress_model_keeps_exact_counts_with_data_aware_plugins(tiny_model, tiny_features, ratios_for,
                                                                   factorizer, score, method):
    import ladasearch

    train, dev = tiny_features
    ratios = ratios_for(count_parameters(tiny_model), 5.0, method)
    result = ladasearch.compress_model(
        tiny_model, train, dev, SST2, ratios,
        ladasearch.TrainConfig(rounds=2, steps_per_round=3, final_steps=1, batch_size=8, eval_batch_size=8),
        compression=ladasearch.CompressionConfig(factorizer=factorizer, prune_score=score, calibration_batches=2))
    modules = compressible_modules(result.student)
    for plan in result.plans:
        module = modules[plan.name][1]
        kept = sum(int(getattr(module, f"{n}_mask").sum()) for n in (("A", "B") if plan.rank() else ("weight",)))
        assert kept == plan.keep()
    assert result.achieved_factor == pytest.approx(5.0, rel=0.01)
    assert all(torch.isfinite(p).all() for p in result.student.parameters())
