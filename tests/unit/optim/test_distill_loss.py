"""The distillation loss against a float64 computation written out by hand."""

import math

import pytest
import torch

from scaletrain.config.distill import DistillConfig
from scaletrain.optim.distill import DistillLoss, soft_target_loss
from scaletrain.optim.losses import CrossEntropy


def _by_hand(student, teacher, targets, *, temperature: float, alpha: float) -> float:
    """alpha · mean_n Σ_c p_t log(p_t / p_s) · T² + (1 − alpha) · mean_n −log softmax(s)[y]."""
    rows_s = student.double().reshape(-1, student.shape[-1]).tolist()
    rows_t = teacher.double().reshape(-1, teacher.shape[-1]).tolist()
    labels = targets.reshape(-1).tolist()

    def softmax(row, scale):
        peak = max(value / scale for value in row)
        exps = [math.exp(value / scale - peak) for value in row]
        return [e / sum(exps) for e in exps]

    kl = cross_entropy = 0.0
    for row_s, row_t, label in zip(rows_s, rows_t, labels, strict=True):
        p_s, p_t = softmax(row_s, temperature), softmax(row_t, temperature)
        kl += sum(t * (math.log(t) - math.log(s)) for s, t in zip(p_s, p_t, strict=True))
        cross_entropy -= math.log(softmax(row_s, 1.0)[label])
    count = len(labels)
    return alpha * kl / count * temperature**2 + (1 - alpha) * cross_entropy / count


@pytest.mark.parametrize(
    ("shape", "temperature", "alpha"),
    [((7, 5), 4.0, 0.7), ((7, 5), 1.0, 0.0), ((7, 5), 2.5, 1.0), ((3, 6, 11), 2.0, 0.5)],
)
def test_loss_matches_a_float64_hand_computation(shape, temperature, alpha):
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(shape, generator=generator) * 3
    teacher = torch.randn(shape, generator=generator) * 3
    targets = torch.randint(0, shape[-1], shape[:-1], generator=generator)
    loss_fn = DistillLoss(
        DistillConfig(teacher="t", temperature=temperature, alpha=alpha),
        CrossEntropy(weight=None, label_smoothing=0.0),
    )
    loss = loss_fn(student, targets, teacher)
    expected = _by_hand(student, teacher, targets, temperature=temperature, alpha=alpha)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_the_soft_term_is_zero_only_when_the_student_matches_the_teacher():
    logits = torch.randn(4, 10)
    assert soft_target_loss(logits, logits, temperature=3.0).abs().item() < 1e-6
    assert soft_target_loss(logits, logits.flip(-1), temperature=3.0).item() > 0.01


def test_gradient_reaches_the_student_only_and_matches_float64():
    student = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(5, 4, dtype=torch.float64)
    soft_target_loss(student.float(), teacher.float(), temperature=2.0).backward()
    # d/ds of KL(p_t || softmax(s/T)) · T² = T · (softmax(s/T) − p_t) / N
    expected = 2.0 * (torch.softmax(student / 2, -1) - torch.softmax(teacher / 2, -1)) / 5
    torch.testing.assert_close(student.grad, expected.detach(), rtol=1e-5, atol=1e-6)


def test_bf16_logits_are_upcast():
    student, teacher = torch.randn(6, 3).bfloat16(), torch.randn(6, 3).bfloat16()
    loss = soft_target_loss(student, teacher, temperature=2.0)
    expected = soft_target_loss(student.float(), teacher.float(), temperature=2.0)
    assert loss.dtype == torch.float32 and loss.item() == expected.item()
