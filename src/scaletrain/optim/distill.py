"""The distillation loss: alpha · KL(softmax(t/T) ‖ softmax(s/T)) · T² + (1 − alpha) · task loss.

The T² keeps the soft term's gradients on the task loss's scale as T grows (Hinton et al.,
2015). Logits are ``(B, C)`` or per token ``(B, T, C)`` (language models: every window
position is a real token, so nothing is masked); the KL is the mean over samples (tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from scaletrain.config.distill import DistillConfig


def soft_target_loss(
    student: torch.Tensor, teacher: torch.Tensor, *, temperature: float
) -> torch.Tensor:
    """KL(softmax(teacher/T) ‖ softmax(student/T)) · T², mean over samples (or tokens)."""
    student = student.float().flatten(0, -2) / temperature  # (N, C), N = samples or tokens
    teacher = teacher.float().flatten(0, -2) / temperature
    kl = F.kl_div(
        F.log_softmax(student, dim=-1),
        F.log_softmax(teacher, dim=-1),
        reduction="batchmean",
        log_target=True,  # exact where the teacher's probability underflows to 0
    )
    return kl * temperature**2


class DistillLoss(nn.Module):
    """The task loss blended with the teacher's soft targets; `teacher_logits` per call."""

    def __init__(self, cfg: DistillConfig, task_loss: nn.Module):
        super().__init__()
        self.task_loss = task_loss
        self.temperature, self.alpha = cfg.temperature, cfg.alpha

    def forward(
        self, output: torch.Tensor, target: torch.Tensor, teacher_logits: torch.Tensor
    ) -> torch.Tensor:
        soft = soft_target_loss(output, teacher_logits, temperature=self.temperature)
        if self.alpha == 1.0:
            return soft
        return self.alpha * soft + (1.0 - self.alpha) * self.task_loss(output, target)
