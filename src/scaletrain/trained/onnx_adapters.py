"""Export-only rewrites of built-in modules that torch's ONNX exporters cannot trace as they
are, each equal to the original (checked on the parity inputs before export).

A classifying rnn with ``pool: last`` reads the final hidden state of packed sequences,
which the legacy exporter (the only one that traces packing) fails on for most cells. The
same numbers are in the unpacked outputs: the forward direction's output at each sequence's
true last step and the backward direction's at step 0 are the top layer's final states.
"""

from __future__ import annotations

import torch
from torch import nn

from scaletrain.errors import UserError
from scaletrain.models.rnn import RNN
from scaletrain.trained.onnx_int8 import with_int8_linears

TOLERANCE = 1e-6  # rewrite vs original, fp32 (the same arithmetic, another read-out)


class LastStepFromOutputs(nn.Module):
    """An `RNN` classifier with ``pool: last``, its last states read from its outputs."""

    def __init__(self, network: RNN):
        super().__init__()
        self.network = network

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        network = self.network
        x = network.embedding(token_ids).transpose(0, 1)  # (T, B, E)
        lengths = network._lengths(token_ids)
        outputs, _ = network.recurrent(x, lengths)  # (T, B, D * H), zeros past a length
        hidden = network.recurrent.rnn.hidden_size
        batch = torch.arange(outputs.shape[1], device=outputs.device)
        last = outputs.shape[0] - 1 if lengths is None else lengths - 1
        pooled = outputs[last, batch, :hidden]  # forward direction at the true last step
        if network.num_directions == 2:  # backward direction: it ends at step 0
            pooled = torch.cat([pooled, outputs[0, :, hidden:]], dim=1)
        return network.head(network.dropout(pooled))


def exportable(network: nn.Module) -> nn.Module:
    """`network`, or its export-only rewrite where it needs one (a copy with torchao's
    int8-dynamic linears in their ONNX form, see onnx_int8.py; an rnn's last states)."""
    network = with_int8_linears(network)
    if isinstance(network, RNN) and network.pool == "last" and not network.language_model:
        return LastStepFromOutputs(network)
    return network


def check_rewrite(original: nn.Module, rewrite: nn.Module, inputs: torch.Tensor) -> None:
    """The rewrite gives the original's outputs on `inputs`, or the export stops here."""
    with torch.no_grad():
        difference = (rewrite(inputs) - original(inputs)).abs().max().item()
    if not difference <= TOLERANCE:
        raise UserError(
            f"onnx: the export form of this {type(original).__name__} differs from it by "
            f"{difference:.3g}; please report this (export safetensors meanwhile)"
        )
