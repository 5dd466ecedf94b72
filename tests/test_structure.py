"""Structured compression: whole heads and FFN neurons removed, counted exactly, inside the LadaBERT rounds."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import build_tiny, random_features
from ladasearch.compress import count_parameters, solve
from ladasearch.compress.budget import budget, split_ratios
from ladasearch.compress.calibration import STATISTICS, collect_statistics
from ladasearch.compress.registry import get_pruning_score
from ladasearch.compress.structure import StructurePlan, Widths, current_widths, kept_heads, remove_units
from ladasearch.compress.unit_scores import UNIT_SCORES, get_unit_score
from ladasearch.config import CompressionConfig, TrainConfig
from ladasearch.data import get_task
from ladasearch.train.distill import distill_losses
from ladasearch.errors import LadaError
from ladasearch.train.features import train_batches
from ladasearch.train.ladabert import compress_model

SST2 = get_task("sst2")
HEAD = 16  # tiny model: hidden 64, 4 heads


def _inputs(seed=5):
    x = random_features(4, seed=seed)
    return dict(input_ids=x.input_ids, attention_mask=x.attention_mask, token_type_ids=x.token_type_ids)


def _logits(model, inputs):
    with torch.no_grad():
        return model.eval()(**inputs).logits


def _kill_units(model, layer: int, heads=(), neurons=()):
    """Zero the columns of the linears that read these units: the model no longer depends on them."""
    block = model.bert.encoder.layer[layer]
    with torch.no_grad():
        for h in heads:
            block.attention.output.dense.weight[:, h * HEAD:(h + 1) * HEAD] = 0
        for n in neurons:
            block.output.dense.weight[:, n] = 0


@pytest.mark.parametrize("structure", [0.25, 0.5, 0.75, 0.9])
def test_removed_count_is_exact(structure):
    model = build_tiny(0)
    widths = Widths.of(model.config)
    heads, neurons = widths.kept(structure)
    keep = {(i, "heads"): torch.arange(heads) for i in range(widths.layers)}
    keep |= {(i, "intermediate"): torch.arange(neurons) for i in range(widths.layers)}
    before = count_parameters(model)
    remove_units(model, keep)
    assert count_parameters(model) == widths.narrowed(before, structure)
    assert model.bert.encoder.layer[1].attention.self.query.weight.shape == (heads * HEAD, 64)
    assert model.bert.encoder.layer[1].output.dense.weight.shape == (64, neurons)


@pytest.mark.parametrize("factorized", [False, True])
def test_removing_dead_units_keeps_the_logits(factorized):
    model = build_tiny(0)
    _kill_units(model, 0, heads=(1, 3), neurons=range(0, 128, 2))
    if factorized:  # the same through factors with pruning masks (what later rounds see)
        from ladasearch.compress import Ratios, compress_step, make_plan
        compress_step(model, make_plan(model, Ratios(embedding=1.0, svd=0.7, weight=0.8)), 1.0)
    inputs = _inputs()
    want = _logits(model, inputs)
    remove_units(model, {(0, "heads"): torch.tensor([0, 2]), (0, "intermediate"): torch.arange(1, 128, 2)})
    assert current_widths(model)["heads"][0] == [0, 2]
    assert current_widths(model)["intermediate"] == [64, 128]
    torch.testing.assert_close(_logits(model, inputs), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("score", sorted(UNIT_SCORES.names()))
def test_unit_scores_put_dead_units_last(score):
    model = build_tiny(0)
    _kill_units(model, 1, heads=(2,), neurons=(5, 70))
    batches = list(_batches(3))
    importance = get_unit_score(score).importance(model, batches, SST2)
    heads, neurons = importance[(1, "heads")], importance[(1, "intermediate")]
    assert heads.shape == (4,) and neurons.shape == (128,)
    assert int(heads.argmin()) == 2 and heads[2] == 0
    assert set(neurons.argsort()[:2].tolist()) == {5, 70}
    assert (heads[[0, 1, 3]] > 0).all()
    assert model.bert.encoder.layer[0].attention.self.query.weight.grad is None  # the model itself is untouched


def _batches(n, seed=0):
    it = train_batches(random_features(64, seed=1), 8, seed, "cpu")
    return (next(it) for _ in range(n))


def test_plan_step_reaches_the_round_counts():
    model = build_tiny(0)
    plan = StructurePlan(Widths.of(model.config), 0.5)
    assert plan.targets(0.5) == (3, 91) and plan.targets(1.0) == (2, 64)
    plan.step(model, 0.5, _batches(2), SST2)
    assert [len(h) for h in current_widths(model)["heads"]] == [3, 3]
    plan.step(model, 1.0, _batches(2), SST2)
    assert current_widths(model)["intermediate"] == [64, 64]
    assert all(len(set(h)) == 2 and set(h) <= {0, 1, 2, 3} for h in current_widths(model)["heads"])


def test_attention_loss_compares_each_kept_head_with_its_teacher_head():
    teacher = build_tiny(0, num_hidden_layers=1)
    student = copy.deepcopy(teacher)
    remove_units(student, {(0, "heads"): torch.tensor([1, 3])})
    inputs = _inputs()
    with torch.no_grad():
        t = teacher(**inputs, output_hidden_states=True, output_attentions=True)
        s = student(**inputs, output_hidden_states=True, output_attentions=True)
    assert s.attentions[0].shape[1] == 2
    mapped = distill_losses(s, t, inputs["attention_mask"], teacher_heads=kept_heads(student))
    assert mapped["attention"].item() == 0.0  # Q and K of the kept heads are untouched
    swapped = distill_losses(s, t, inputs["attention_mask"], teacher_heads=[torch.tensor([0, 2])])
    assert swapped["attention"].item() > 0
    assert kept_heads(teacher) is None


@pytest.mark.parametrize("method,score", [("hybrid", "magnitude"), ("hybrid", "taylor"), ("svd", "magnitude"),
                                          ("prune", "wanda")])
@pytest.mark.parametrize("structure", [0.5, 0.75])
@pytest.mark.parametrize("target", [2.5, 5.0])
def test_loop_lands_on_target_with_structure(method, score, structure, target):
    teacher = build_tiny(0)
    counts, widths = count_parameters(teacher), Widths.of(teacher.config)
    embedding = 0.4 * (counts.total / target - counts.dense) / counts.embedding
    ratios = split_ratios(counts, target, embedding, 0.5 if method == "hybrid" else 1.0 if method == "svd" else 0.0,
                          method, structure=structure, widths=widths)
    assert budget(counts, ratios, widths) == pytest.approx(counts.total / target, rel=1e-9)
    cfg = TrainConfig(rounds=2, steps_per_round=2, final_steps=1, batch_size=8)
    result = compress_model(teacher, random_features(48, seed=1), random_features(16, seed=2), SST2, ratios, cfg,
                            compression=CompressionConfig(prune_score=score, calibration_batches=2,
                                                          structure_batches=2))
    assert result.achieved_factor == pytest.approx(target, rel=0.01)
    assert result.student_params == count_parameters(result.student)
    heads, neurons = widths.kept(structure)
    assert [len(h) for h in kept_heads(result.student)] == [heads] * 2
    assert result.student.config.ladasearch_widths["intermediate"] == [neurons] * 2
    assert result.summary(target=target).ratios.structure == structure
    assert not hasattr(teacher.config, "ladasearch_widths")  # the teacher is left untouched


def test_statistics_and_learned_scores_are_cut_with_the_units():
    model = build_tiny(0)
    stats = collect_statistics(model, random_features(32, seed=1), frozenset(STATISTICS), batches=2, batch_size=8,
                               task=SST2)
    scorer = get_pruning_score("taylor")
    name = "bert.encoder.layer.0.output.dense"
    module = model.get_submodule(name)
    module.weight.grad = torch.randn_like(module.weight)
    scorer.observe(name, module, ("weight",))
    grad = scorer._records[name].grad["weight"].clone()
    keep = torch.tensor([3, 1, 7])
    narrowed = remove_units(model, {(0, "intermediate"): keep}, scorer=scorer, stats=stats)
    order = keep.sort().values
    torch.testing.assert_close(narrowed.layer(name).input_gram, stats.layer(name).input_gram[order][:, order])
    torch.testing.assert_close(scorer._records[name].grad["weight"], grad[:, order])
    assert stats.layer(name).input_gram.shape == (128, 128)  # the shared statistics are not changed
    query = "bert.encoder.layer.0.attention.self.query"
    narrowed = remove_units(model, {(0, "heads"): torch.tensor([0])}, stats=narrowed)
    assert narrowed.layer(query).row_fisher.shape == (HEAD,)


@pytest.mark.parametrize("bad", [0.0, 1.5, float("nan"), -0.2])
def test_bad_structure_ratio_is_refused(bad):
    counts = count_parameters(build_tiny(0))
    with pytest.raises(LadaError, match="structure ratio"):
        solve(counts, 5.0, embedding=0.2, svd=0.5, structure=bad, widths=Widths.of(build_tiny(0).config))


def test_structure_needs_widths_and_a_known_unit_score():
    counts = count_parameters(build_tiny(0))
    with pytest.raises(LadaError, match="needs the model's widths"):
        solve(counts, 5.0, embedding=0.2, svd=0.5, structure=0.5)
    with pytest.raises(LadaError, match="unknown unit score 'nope'; allowed: activation, taylor"):
        CompressionConfig(structure_score="nope")
    with pytest.raises(LadaError, match="structure_batches must be an integer >= 1"):
        CompressionConfig(structure_batches=0)
