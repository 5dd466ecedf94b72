"""Distillation losses: zero at a perfect match, positive otherwise, padding ignored, soft CE gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers.modeling_outputs import SequenceClassifierOutput

from ladasearch.train.distill import TERMS, distill_losses, soft_cross_entropy
from ladasearch.nn.losses import task_loss


def _outputs(model, ids, mask):
    return model(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 1000, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    mask[3, 5:] = 0
    return ids * mask, mask


def _synthetic(seed=0, batch=2, seq=5, hidden=8, heads=2, layers=2, labels=3):
    g = torch.Generator().manual_seed(seed)
    return SequenceClassifierOutput(
        logits=torch.randn(batch, labels, generator=g),
        hidden_states=tuple(torch.randn(batch, seq, hidden, generator=g) for _ in range(layers + 1)),
        attentions=tuple(torch.softmax(torch.randn(batch, heads, seq, seq, generator=g), -1) for _ in range(layers)))


def test_terms_are_the_four_of_the_docstring():
    assert TERMS == ("embedding", "attention", "hidden", "logits")


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("regression", [False, True])
def test_identical_models_give_zero_losses(make_tiny, batch, temperature, regression):
    ids, mask = batch
    teacher, student = make_tiny(0), make_tiny(0)
    with torch.no_grad():
        losses = distill_losses(_outputs(student, ids, mask), _outputs(teacher, ids, mask), mask, temperature,
                                regression)
    assert set(losses) == set(TERMS)
    for name, value in losses.items():
        assert abs(value.item()) < 1e-6, name


def test_different_student_gives_positive_losses(make_tiny, batch):
    ids, mask = batch
    with torch.no_grad():
        student, teacher = make_tiny(1, initializer_range=0.2), make_tiny(0, initializer_range=0.2)
        losses = distill_losses(_outputs(student, ids, mask), _outputs(teacher, ids, mask), mask)
    for name, value in losses.items():
        assert value.item() > 1e-4, name


def test_only_later_layers_differ_leaves_embedding_term_zero(make_tiny, batch):
    ids, mask = batch
    teacher, student = make_tiny(0), make_tiny(0)
    with torch.no_grad():
        student.bert.encoder.layer[1].output.dense.weight.mul_(2.0)
        losses = distill_losses(_outputs(student, ids, mask), _outputs(teacher, ids, mask), mask)
    assert losses["embedding"].item() < 1e-10
    assert losses["hidden"].item() > 1e-4
    assert losses["logits"].item() > 0


def test_padding_positions_are_ignored():
    teacher = _synthetic(0)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    student_hidden = tuple(h.clone() for h in teacher.hidden_states)
    for h in student_hidden:
        h[0, 3:] += 5.0  # differs only where the mask is 0
    student_att = tuple(a.clone() for a in teacher.attentions)
    for a in student_att:
        a[0, :, 3:, :] = 0.0  # query rows of padded positions
    student = SequenceClassifierOutput(logits=teacher.logits.clone(), hidden_states=student_hidden,
                                       attentions=student_att)
    losses = distill_losses(student, teacher, mask)
    for name, value in losses.items():
        assert value.item() == 0.0, name


def test_hidden_term_is_masked_mean_of_squared_error():
    teacher = _synthetic(0)
    student = _synthetic(1)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    losses = distill_losses(student, teacher, mask)
    keep = mask.bool()
    expected = torch.stack([(s - t).pow(2)[keep].mean() for s, t in
                            zip(student.hidden_states[1:], teacher.hidden_states[1:])]).mean()
    torch.testing.assert_close(losses["hidden"], expected)
    expected_emb = (student.hidden_states[0] - teacher.hidden_states[0]).pow(2)[keep].mean()
    torch.testing.assert_close(losses["embedding"], expected_emb)
    # attention: average over heads and keys, masked over queries
    expected_att = torch.stack([(s - t).pow(2).permute(0, 2, 1, 3)[keep].mean() for s, t in
                                zip(student.attentions, teacher.attentions)]).mean()
    torch.testing.assert_close(losses["attention"], expected_att)


def test_depth_mismatch_raises():
    with pytest.raises(ValueError, match="student has 1 layers, teacher 2"):
        distill_losses(_synthetic(0, layers=1), _synthetic(0, layers=2), torch.ones(2, 5))


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_soft_cross_entropy_has_gradient_of_plain_soft_ce(temperature):
    g = torch.Generator().manual_seed(3)
    teacher = torch.randn(6, 3, generator=g)
    student_a = torch.randn(6, 3, generator=g, requires_grad=True)
    student_b = student_a.detach().clone().requires_grad_(True)
    ours = soft_cross_entropy(student_a, teacher, temperature)
    plain = -(F.softmax(teacher / temperature, -1) * F.log_softmax(student_b / temperature, -1)).sum(-1).mean()
    plain = plain * temperature**2
    ours.backward()
    plain.backward()
    torch.testing.assert_close(student_a.grad, student_b.grad, atol=1e-7, rtol=1e-5)
    # and it differs from the plain soft CE by the teacher's entropy (times T^2), a constant
    p = F.softmax(teacher / temperature, -1)
    entropy = -(p * p.log()).sum(-1).mean() * temperature**2
    torch.testing.assert_close(plain - ours, entropy, atol=1e-5, rtol=1e-5)


def test_soft_cross_entropy_zero_at_match_positive_otherwise():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]])
    assert abs(soft_cross_entropy(logits, logits, 2.0).item()) < 1e-7
    assert soft_cross_entropy(logits.flip(-1), logits, 2.0).item() > 0.1


def test_task_loss_classification_and_regression():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0])
    torch.testing.assert_close(task_loss(logits, labels), F.cross_entropy(logits, labels))
    preds = torch.tensor([[1.0], [3.0]])
    assert task_loss(preds, torch.tensor([1.0, 1.0]), regression=True).item() == pytest.approx(2.0)
