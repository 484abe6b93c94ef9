"""Structured pruning of a recurrent stack (lstm, gru, tanh rnn): every layer and direction
keeps the same number of hidden units, so `model.hidden` says the new width. A unit is its
rows in every gate block of weight_ih / weight_hh and both biases, its column of weight_hh,
and the columns that read it (the next layer's weight_ih, both directions; else the head).
Each direction ranks its own units: a bidirectional layer may keep different units left to
right and right to left (equal counts)."""

from __future__ import annotations

import torch
from torch import Tensor

from scaletrain.config.models import RNNConfig
from scaletrain.models.rnn import RNN


def shrunk_rnn_config(model_cfg: RNNConfig, fraction: float) -> RNNConfig:
    """`hidden` = round(hidden x (1 - fraction)), at least one unit."""
    return model_cfg.model_copy(update={"hidden": max(1, round(model_cfg.hidden * (1 - fraction)))})


def rnn_hidden_units(model_cfg: RNNConfig) -> list[int]:
    """Each layer's and direction's hidden width."""
    return [model_cfg.hidden] * model_cfg.layers * (2 if model_cfg.bidirectional else 1)


def kept_hidden(model: RNN, width: int) -> list[list[Tensor]]:
    """[layer][direction] -> indices (ascending) of the `width` units of largest
    ||incoming gate rows|| x ||outgoing columns|| (L2, over every gate block)."""
    rnn = model.recurrent.rnn
    hidden, params = rnn.hidden_size, dict(rnn.named_parameters())
    kept = []
    for layer in range(rnn.num_layers):
        reader = _reader(model, layer)  # (rows, D * H): what reads this layer's outputs
        per_direction = []
        for direction, suffix in enumerate(_suffixes(model)):
            w_ih = params[f"weight_ih_l{layer}{suffix}"].detach().float()  # (G * H, in)
            w_hh = params[f"weight_hh_l{layer}{suffix}"].detach().float()  # (G * H, H)
            rows = torch.cat((w_ih, w_hh), dim=1).view(-1, hidden, w_ih.shape[1] + hidden)
            incoming = rows.pow(2).sum(dim=(0, 2)).sqrt()  # (H,) over all gates
            columns = reader[:, direction * hidden : (direction + 1) * hidden]
            outgoing = torch.cat((w_hh, columns), dim=0).norm(dim=0)  # (H,)
            per_direction.append((incoming * outgoing).topk(width).indices.sort().values)
        kept.append(per_direction)
    return kept


def copy_kept_hidden(source: RNN, target: RNN) -> None:
    """`target` = `source` with each layer's and direction's strongest hidden units; the
    embedding and the head's bias whole."""
    rnn, width = source.recurrent.rnn, target.recurrent.rnn.hidden_size
    hidden, params = rnn.hidden_size, dict(rnn.named_parameters())
    state = dict(source.state_dict())
    inputs: Tensor | None = None  # the embedding's features: all kept
    for layer, per_direction in enumerate(kept_hidden(source, width)):
        for keep, suffix in zip(per_direction, _suffixes(source), strict=True):
            gates = params[f"weight_hh_l{layer}{suffix}"].shape[0] // hidden
            rows = torch.cat([gate * hidden + keep for gate in range(gates)])
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                name = f"{kind}_l{layer}{suffix}"
                value = params[name].detach()[rows]
                if kind == "weight_ih" and inputs is not None:
                    value = value[:, inputs]
                elif kind == "weight_hh":
                    value = value[:, keep]
                state[f"recurrent.rnn.{name}"] = value
        inputs = torch.cat([d * hidden + keep for d, keep in enumerate(per_direction)])
    state["head.weight"] = source.head.weight.detach()[:, inputs]
    with torch.no_grad():
        target.load_state_dict(state)


def _suffixes(model: RNN) -> list[str]:
    return ["", "_reverse"][: model.num_directions]


def _reader(model: RNN, layer: int) -> Tensor:
    """The weights whose columns read `layer`'s outputs (D * H of them)."""
    rnn = model.recurrent.rnn
    if layer == rnn.num_layers - 1:
        return model.head.weight.detach().float()
    names = [f"weight_ih_l{layer + 1}{suffix}" for suffix in _suffixes(model)]
    return torch.cat([getattr(rnn, name).detach().float() for name in names], dim=0)
