"""The budget (eq. 7), parse_target, Ratios validation, the ratio solver and the paper's Table 2 ratios."""

from __future__ import annotations

import math

import pytest

from ladasearch.compress import (PAPER_TABLE2, Budget, ParamCount, Ratios, budget, encoder_ratio,
                                  feasible_embedding, get_method, method_names, paper_ratios, parse_target, solve,
                                  split_ratios)
from ladasearch.errors import LadaError

# the tiny conftest model (vocab 1000, hidden 64, 2 layers, intermediate 128)
TINY = ParamCount(embedding=64_000, encoder=69_632, dense=5_954)
# BERT-base-uncased with a 2-label head
BERT_BASE = ParamCount(embedding=30522 * 768, encoder=12 * (4 * 768 * 768 + 2 * 768 * 3072) + 768 * 768,
                       dense=109_483_778 - 30522 * 768 - (12 * (4 * 768 * 768 + 2 * 768 * 3072) + 768 * 768))


# --------------------------------------------------------------------------- parse_target


@pytest.mark.parametrize("text, expected", [
    ("10x", 10.0), ("2.5", 2.5), ("2.5x", 2.5), (" 10X ", 10.0), ("7.5 x", 7.5), (2.5, 2.5), (10, 10.0),
    ("1.01x", 1.01),
])
def test_parse_target_accepts_reduction_factors(text, expected):
    assert parse_target(text) == expected


@pytest.mark.parametrize("text", ["abc", "-3x", "x", "", "10xx", "1e3", "ten", "3x5", "nan", "inf"])
def test_parse_target_rejects_non_numbers(text):
    with pytest.raises(LadaError, match="is not a reduction factor; write it like '10x'") as exc:
        parse_target(text)
    assert repr(text) in str(exc.value)


@pytest.mark.parametrize("text", ["0x", "1x", "0.5x", "1", "1.0", ".5"])
def test_parse_target_rejects_factors_not_above_one(text):
    with pytest.raises(LadaError, match=r"must be above 1x") as exc:
        parse_target(text)
    assert repr(text) in str(exc.value)


# --------------------------------------------------------------------------- Ratios and budget


@pytest.mark.parametrize("name", ["embedding", "svd", "weight"])
@pytest.mark.parametrize("value", [0.0, -0.5, 1.5, math.nan])
def test_ratios_reject_values_outside_unit_interval(name, value):
    kwargs = {"embedding": 0.5, "svd": 0.5, "weight": 0.5, name: value}
    with pytest.raises(LadaError, match=f"{name} ratio must be a retention fraction in \\(0, 1\\]"):
        Ratios(**kwargs)


def test_ratios_method_constraints():
    with pytest.raises(LadaError, match="unknown method 'lowrank'"):
        Ratios(0.5, 0.5, 0.5, method="lowrank")
    with pytest.raises(LadaError, match="method 'svd' prunes nothing"):
        Ratios(0.5, 0.5, 0.5, method="svd")
    with pytest.raises(LadaError, match="method 'prune' factorizes nothing"):
        Ratios(0.5, 0.5, 0.5, method="prune")
    assert Ratios(0.5, 0.4, 1.0, method="svd").encoder == 0.4
    assert Ratios(0.5, 1.0, 0.3, method="prune").encoder == 0.3


def test_ratios_reduction_factors():
    factors = Ratios(0.25, 0.5, 0.8).reduction_factors()
    assert factors == pytest.approx({"embedding": 4.0, "svd": 2.0, "weight": 1.25, "encoder": 2.5})


def test_budget_is_eq7():
    ratios = Ratios(0.5, 0.5, 0.5)
    assert budget(TINY, ratios) == 0.5 * 64_000 + 0.25 * 69_632 + 5_954


# --------------------------------------------------------------------------- solve: success


WEIGHT_FOR = {2.5: 0.8, 5.0: 0.4, 7.5: 0.2, 10.0: 0.1}  # with svd 0.5: the embedding ratio lands in (0, 1]


@pytest.mark.parametrize("target", [2.5, 5.0, 7.5, 10.0])
@pytest.mark.parametrize("given, solved", [
    ({"embedding": 0.2, "svd": 0.5}, "weight"),
    ({"embedding": 0.2, "weight": 0.5}, "svd"),
    ({"svd": 0.5, "weight": None}, "embedding"),
])
def test_solve_meets_budget_exactly(target, given, solved):
    given = {k: WEIGHT_FOR[target] if v is None else v for k, v in given.items()}
    ratios = solve(BERT_BASE, target, **given)
    for name, value in given.items():
        assert getattr(ratios, name) == value
    assert 0 < getattr(ratios, solved) <= 1
    assert ratios.method == "hybrid"
    assert budget(BERT_BASE, ratios) == pytest.approx(BERT_BASE.total / target, rel=1e-12)


@pytest.mark.parametrize("target, given, expected", [
    # hand-checked on the tiny counts: allowed = 139586 / 5 - 5954 = 21963.2
    (5.0, {"embedding": 0.2, "svd": 0.5}, {"weight": (21963.2 - 12800) / 69632 / 0.5}),
    (5.0, {"embedding": 0.2, "weight": 0.5}, {"svd": (21963.2 - 12800) / 69632 / 0.5}),
    (5.0, {"svd": 0.5, "weight": 0.5}, {"embedding": (21963.2 - 0.25 * 69632) / 64000}),
])
def test_solve_values(target, given, expected):
    ratios = solve(TINY, target, **given)
    for name, value in expected.items():
        assert getattr(ratios, name) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("method, given, fixed", [
    ("svd", {"embedding": 0.2}, ("weight", 1.0)),
    ("svd", {"embedding": 0.2, "weight": 1.0}, ("weight", 1.0)),  # giving the fixed value is allowed
    ("svd", {"svd": 0.2}, ("weight", 1.0)),
    ("prune", {"embedding": 0.2}, ("svd", 1.0)),
    ("prune", {"weight": 0.2}, ("svd", 1.0)),
])
def test_solve_method_fixes_one_ratio(method, given, fixed):
    ratios = solve(TINY, 4.0, method=method, **given)
    assert ratios.method == method
    assert getattr(ratios, fixed[0]) == fixed[1]
    assert budget(TINY, ratios) == pytest.approx(TINY.total / 4.0, rel=1e-12)


# --------------------------------------------------------------------------- solve: errors


def test_solve_dense_part_too_large():
    largest = TINY.total / TINY.dense  # 23.44x
    with pytest.raises(LadaError) as exc:
        solve(TINY, 30.0, embedding=0.01, svd=0.5)
    msg = str(exc.value)
    assert "target 30x is unreachable" in msg
    assert f"largest reachable target is below {largest:.2f}x" in msg
    assert "23.44x" in msg and "5,954" in msg and "\n" not in msg


def test_solve_embedding_too_large():
    allowed = TINY.total / 5 - TINY.dense
    with pytest.raises(LadaError) as exc:
        solve(TINY, 5.0, embedding=0.5, svd=0.5)
    msg = str(exc.value)
    assert "unreachable with embedding ratio 0.5" in msg
    assert f"use an embedding ratio below {allowed / TINY.embedding:.4f}" in msg  # 0.3432


def test_solve_embedding_too_small_needs_no_encoder_compression():
    with pytest.raises(LadaError) as exc:
        solve(TINY, 1.5, embedding=0.1, svd=0.5)
    msg = str(exc.value)
    assert "target 1.5x needs no encoder compression with embedding ratio 0.1" in msg
    assert "(encoder ratio would be 1.159 > 1)" in msg
    lower = (TINY.total / 1.5 - TINY.dense - TINY.encoder) / TINY.embedding  # 0.2730
    assert f"use an embedding ratio above {lower:.4f}" in msg


def test_solve_weight_ratio_above_one():
    # encoder must keep (21963.2 - 6400) / 69632 = 0.2235 of its weights, svd gives only 0.1
    with pytest.raises(LadaError) as exc:
        solve(TINY, 5.0, embedding=0.1, svd=0.1)
    msg = str(exc.value)
    assert "unreachable with these ratios" in msg
    assert "the encoder must keep 0.2235" in msg
    assert "weight ratio would be 2.235 > 1" in msg


def test_solve_svd_ratio_above_one():
    with pytest.raises(LadaError, match=r"svd ratio would be 2\.235 > 1"):
        solve(TINY, 5.0, embedding=0.1, weight=0.1)


def test_solve_ratio_above_one_message_says_above_given():
    with pytest.raises(LadaError) as exc:
        solve(TINY, 5.0, embedding=0.1, svd=0.1)
    assert "above the 0.1 given" in str(exc.value)


@pytest.mark.parametrize("target, svd, weight", [(5.0, 1.0, 1.0), (1.2, 0.1, 0.1)])
def test_solve_embedding_outside_unit_interval(target, svd, weight):
    emb = (TINY.total / target - TINY.dense - svd * weight * TINY.encoder) / TINY.embedding  # -0.745 / 1.714
    with pytest.raises(LadaError) as exc:
        solve(TINY, target, svd=svd, weight=weight)
    msg = str(exc.value)
    assert f"target {target:g}x is unreachable with encoder ratio {svd * weight:.4f}" in msg
    assert f"the embedding ratio would be {emb:.4f}, outside (0, 1]" in msg


@pytest.mark.parametrize("method, given, need", [
    ("hybrid", {}, "two of embedding, svd, weight"),
    ("hybrid", {"embedding": 0.2}, "two of embedding, svd, weight"),
    ("hybrid", {"embedding": 0.2, "svd": 0.5, "weight": 0.5}, "two of embedding, svd, weight"),
    ("svd", {}, "one of embedding, svd, weight"),
    ("svd", {"embedding": 0.2, "svd": 0.5}, "one of embedding, svd, weight"),
    ("prune", {"embedding": 0.2, "weight": 0.5}, "one of embedding, svd, weight"),
])
def test_solve_exactly_two_given(method, given, need):
    with pytest.raises(LadaError) as exc:
        solve(TINY, 5.0, method=method, **given)
    msg = str(exc.value)
    assert f"give exactly {need} to solve for the other" in msg
    assert f"(got {sorted(given)})" in msg


@pytest.mark.parametrize("method, given, fixed", [
    ("svd", {"embedding": 0.2, "weight": 0.5}, "weight"),
    ("prune", {"embedding": 0.2, "svd": 0.5}, "svd"),
])
def test_solve_method_rejects_other_value_for_fixed_ratio(method, given, fixed):
    with pytest.raises(LadaError, match=f"method '{method}' fixes the {fixed} ratio at 1, got 0.5"):
        solve(TINY, 5.0, method=method, **given)


@pytest.mark.parametrize("name", ["embedding", "svd", "weight"])
def test_solve_rejects_given_ratio_above_one(name):
    given = {k: 0.3 for k in ("embedding", "svd", "weight") if k != name}
    given = {name: 1.5, **dict(list(given.items())[:1])}
    with pytest.raises(LadaError, match=f"{name} ratio must be a retention fraction in \\(0, 1\\], got 1.5"):
        solve(TINY, 5.0, **given)


def test_solve_unknown_method():
    with pytest.raises(LadaError, match="unknown method 'lowrank'; allowed: hybrid, prune, svd"):
        solve(TINY, 5.0, method="lowrank", embedding=0.2, svd=0.5)


# --------------------------------------------------------------------------- paper ratios


@pytest.mark.parametrize("target", sorted(PAPER_TABLE2))
def test_paper_ratios_use_table2_embedding_and_svd(target):
    emb, svd, _ = PAPER_TABLE2[target]
    ratios = paper_ratios(BERT_BASE, target)
    assert ratios.embedding == pytest.approx(1 / emb)
    assert ratios.svd == pytest.approx(1 / svd)
    assert budget(BERT_BASE, ratios) == pytest.approx(BERT_BASE.total / target, rel=1e-12)
    assert 0 < ratios.weight < 1  # solved for this model, not taken from the table


def test_paper_ratios_target_not_in_table():
    with pytest.raises(LadaError, match="the paper gives ratios for 2.5x, 5x, 7.5x, 10x, not 3x"):
        paper_ratios(BERT_BASE, 3.0)


def test_paper_ratios_not_fitting_model():
    # tiny model at 10x: the 1/5 embedding alone exceeds the budget
    with pytest.raises(LadaError, match=r"^the paper's 10x ratios \(embedding 1/5, svd 1/2.5\) do not fit this model: "
                                        r"target 10x is unreachable"):
        paper_ratios(TINY, 10.0)


# --------------------------------------------------------------------------- a search point: embedding + split


@pytest.mark.parametrize("target", [2.5, 5.0, 10.0])
@pytest.mark.parametrize("embedding", [0.1, 0.3])
def test_encoder_ratio_meets_budget(target, embedding):
    encoder = encoder_ratio(BERT_BASE, target, embedding)
    kept = embedding * BERT_BASE.embedding + encoder * BERT_BASE.encoder + BERT_BASE.dense
    assert kept == pytest.approx(BERT_BASE.total / target, rel=1e-12)


@pytest.mark.parametrize("method, split, svd_is_encoder, weight_is_encoder", [
    ("hybrid", 0.5, False, False), ("svd", 1.0, True, False), ("prune", 0.0, False, True)])
def test_split_ratios_share_the_encoder_reduction(method, split, svd_is_encoder, weight_is_encoder):
    ratios = split_ratios(BERT_BASE, 5.0, 0.3, split, method)
    encoder = encoder_ratio(BERT_BASE, 5.0, 0.3)
    assert ratios.method == method and ratios.embedding == 0.3
    assert ratios.encoder == pytest.approx(encoder, rel=1e-12)
    assert budget(BERT_BASE, ratios) == pytest.approx(BERT_BASE.total / 5.0, rel=1e-12)
    assert (ratios.svd == encoder) == svd_is_encoder and (ratios.weight == encoder) == weight_is_encoder
    if method == "hybrid":
        assert ratios.svd == pytest.approx(ratios.weight)  # half the reduction (in log terms) each


@pytest.mark.parametrize("embedding, target, shown", [(0.9, 5.0, "-0.5118"), (0.001, 1.2, "1.5841")])
def test_split_ratios_rejects_encoder_outside_unit_interval(embedding, target, shown):
    with pytest.raises(LadaError, match=f"embedding ratio {embedding:.4f} leaves the encoder ratio {shown} at "
                                        f"{target:g}x, outside"):
        split_ratios(TINY, target, embedding, 0.5, "hybrid")


def test_feasible_embedding_bounds_leave_encoder_in_range():
    low, high = feasible_embedding(BERT_BASE, 5.0)
    assert encoder_ratio(BERT_BASE, 5.0, high) == pytest.approx(0.005)
    assert encoder_ratio(BERT_BASE, 5.0, low) == pytest.approx(1.0) or low == 1e-6
    low2, high2 = feasible_embedding(BERT_BASE, 5.0, min_encoder=0.1)
    assert low2 == low and high2 < high and encoder_ratio(BERT_BASE, 5.0, high2) == pytest.approx(0.1)


def test_feasible_embedding_unreachable_target():
    with pytest.raises(LadaError, match=r"target 30x is unreachable for this model: the dense part alone is 5,954 "
                                        r"of a 4,653-parameter budget"):
        feasible_embedding(TINY, 30.0)


# --------------------------------------------------------------------------- the methods


@pytest.mark.parametrize("name, fixes, split, shares", [
    ("hybrid", None, 0.5, {"embedding": (0.2, 0.2), "encoder": (0.5, 0.25)}),
    ("svd", "weight", 1.0, {"embedding": (0.2, None), "encoder": (0.25, None)}),
    ("prune", "svd", 0.0, {"embedding": (None, 0.2), "encoder": (None, 0.25)}),
])
def test_methods_say_what_each_matrix_keeps(name, fixes, split, shares):
    method = get_method(name)
    ratios = Ratios(0.2, *{"hybrid": (0.5, 0.5), "svd": (0.25, 1.0), "prune": (1.0, 0.25)}[name], method=name)
    assert (method.fixes, method.default_split, method.free_split) == (fixes, split, fixes is None)
    for group, expected in shares.items():
        assert method.matrix_shares(group, ratios) == expected
    assert name in method_names()


def test_unknown_method_names_the_methods():
    with pytest.raises(LadaError, match="unknown method 'lowrank'; allowed: hybrid, prune, svd"):
        get_method("lowrank")


COUNTS = ParamCount(embedding=1_000_000, encoder=2_000_000, dense=100_000)


@pytest.mark.parametrize("target", [2.5, 5.0, 10.0])
def test_budget_uniform_ratio_spends_exactly_the_target(target):
    plan = Budget(COUNTS, target)
    r = plan.uniform_ratio()
    kept = r * COUNTS.embedding + r * COUNTS.encoder + COUNTS.dense
    assert kept == pytest.approx(COUNTS.total / target)
    assert encoder_ratio(COUNTS, target, r) == pytest.approx(r)   # the solver agrees: every matrix alike


@pytest.mark.parametrize("source, dest", [(5.0, 10.0), (10.0, 2.5)])
def test_budget_moves_an_embedding_ratio_keeping_its_share(source, dest):
    moved = Budget(COUNTS, dest).embedding_ratio_for(Budget(COUNTS, source).embedding_share(0.2))
    assert Budget(COUNTS, dest).embedding_share(moved) == pytest.approx(Budget(COUNTS, source).embedding_share(0.2))
    assert moved == pytest.approx(0.2 * Budget(COUNTS, dest).compressible / Budget(COUNTS, source).compressible)


@pytest.mark.parametrize("achieved, reached", [(9.9, True), (9.8999, False), (10.0, True), (12.0, True), (9.0, False)])
def test_budget_at_target_rule(achieved, reached):
    assert Budget(COUNTS, 10.0).reached(achieved) is reached


@pytest.mark.parametrize("counts, target, low_encoder", [
    (COUNTS, 5.0, None),                                                      # the encoder cannot keep it all
    (ParamCount(embedding=2_000_000, encoder=500_000, dense=100_000), 2.5, 1.0),   # it can: low keeps it whole
])
def test_budget_feasible_embedding_matches_the_solver(counts, target, low_encoder):
    low, high = Budget(counts, target).feasible_embedding()
    assert encoder_ratio(counts, target, high) == pytest.approx(0.005)
    if low_encoder is None:
        assert low == 1e-6 and encoder_ratio(counts, target, low) < 1.0
    else:
        assert encoder_ratio(counts, target, low) == pytest.approx(low_encoder)
