"""A stacking ensemble's combiner: a small network over its members' outputs, and its file.

Its input is every member's log-probabilities (classification) or values (regression) side
by side, (B, K * C); its output is what one network's head would give: logits or values.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from scaletrain.errors import UserError

COMBINER_FILE = "combiner.safetensors"  # beside ensemble.json; safetensors, never pickle
MLP_HIDDEN = 32


def stack_features(outputs: torch.Tensor, *, task: str) -> torch.Tensor:
    """Members' outputs (K, B, C) -> the combiner's input (B, K * C)."""
    if task == "classification":
        outputs = outputs.float().log_softmax(dim=2)
    return outputs.float().permute(1, 0, 2).reshape(outputs.shape[1], -1)


def build_combiner(kind: str, *, num_members: int, num_outputs: int) -> nn.Module:
    """`linear` starts as the members' plain mean (so training moves away from it only as far
    as the held-out rows justify); `mlp`: one hidden layer of MLP_HIDDEN, ReLU."""
    width = num_members * num_outputs
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(width, MLP_HIDDEN), nn.ReLU(), nn.Linear(MLP_HIDDEN, num_outputs)
        )
    linear = nn.Linear(width, num_outputs)
    with torch.no_grad():
        linear.weight.copy_(mean_weight(num_members, num_outputs))
        linear.bias.zero_()
    return linear


def mean_weight(num_members: int, num_outputs: int) -> torch.Tensor:
    """The linear weight (C, K * C) that averages the members output by output."""
    return torch.eye(num_outputs).repeat(1, num_members) / num_members


def load_combiner(root: Path, kind: str, *, num_members: int, num_outputs: int) -> nn.Module:
    """The combiner trained for the ensemble at `root` (its weights checked against its shape)."""
    from safetensors.torch import load_file

    path = Path(root) / COMBINER_FILE
    if not path.is_file():
        raise UserError(f"{path}: missing; resume the ensemble to train its combiner")
    combiner = build_combiner(kind, num_members=num_members, num_outputs=num_outputs)
    try:
        combiner.load_state_dict(load_file(str(path)))
    except (RuntimeError, OSError) as exc:  # safetensors' errors and a wrong shape or name
        raise UserError(f"{path}: not the weights of a {kind} combiner ({exc})") from None
    return combiner.eval()
