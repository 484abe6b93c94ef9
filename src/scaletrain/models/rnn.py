"""Recurrent networks (LSTM, GRU, tanh RNN) over token ids: one label per sequence, or the next
token at every step (``task: language_model``) with a hidden-state cache for generation.

Classification reads each sequence only up to its true length: padding (``padding_idx``,
trailing, as ``data/transforms/text.py`` pads) is cut off by packing, so a padded batch gives
every sequence the outputs it gets alone. A sequence's length is its last non-padding position
+ 1 (the count of non-padding tokens when padding is only trailing, as the encoder writes it;
a padding id inside a text is read as a step rather than dropping what follows). An
all-padding sequence is read as one padding step (length clamped to 1: packing refuses 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from scaletrain.config.models import RNNConfig
from scaletrain.errors import ConfigError
from scaletrain.models.registry import register_model, token_vocab_size

CELLS: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}

State = Tensor | tuple[Tensor, Tensor]  # h, or (h, c) for an LSTM; each (layers * D, B, H)


@dataclass
class RNNCache:
    """Hidden state carried between ``RNN.forward`` calls while generating token by token."""

    h: Tensor  # (layers * directions, B, hidden)
    c: Tensor | None  # the LSTM's cell state, shaped like h; None for gru / rnn
    length: int  # tokens read so far
    max_length: int  # tokens this cache was made for (prompt + new), as a GPT's KV cache

    def state(self) -> State:
        return self.h if self.c is None else (self.h, self.c)

    def advance(self, state: State, *, num_tokens: int) -> None:
        # Kept in the cache's dtype: under autocast an LSTM may hand back bf16 states.
        if isinstance(state, tuple):
            self.h, self.c = state[0].to(self.h.dtype), state[1].to(self.h.dtype)
        else:
            self.h = state.to(self.h.dtype)
        self.length += num_tokens


class RecurrentStack(nn.Module):
    """All recurrent layers as one module, so one FSDP / activation-checkpoint unit.

    One unit, not one per layer: torch runs a multi-layer stack in one fused call (cuDNN's
    kernel on a GPU), and its inter-layer dropout is part of that call. Time-major (T, B, ·)
    in and out: ``batch_first`` hands back a transposed view, which FSDP2 warns about.
    """

    def __init__(self, cfg: RNNConfig) -> None:
        super().__init__()
        self.rnn = CELLS[cfg.cell](
            cfg.embed_dim,
            cfg.hidden,
            num_layers=cfg.layers,
            dropout=cfg.dropout if cfg.layers > 1 else 0.0,  # torch warns on one layer
            bidirectional=cfg.bidirectional,
        )

    def forward(
        self, x: Tensor, lengths: Tensor | None = None, state: State | None = None
    ) -> tuple[Tensor, State]:  # (T, B, E) -> (T, B, D * H), final state
        if lengths is None or x.is_meta:  # meta (a FLOPs count): no lengths to read, count all T
            return self.rnn(x, state)
        # packing needs the lengths on the CPU: one device sync per batch on a GPU
        packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        outputs, final = self.rnn(packed, state)
        outputs, _ = pad_packed_sequence(outputs, total_length=x.shape[0])  # zeros past a length
        return outputs, final


class RNN(nn.Module):
    """Token ids (B, T) -> logits (B, num_outputs), or (B, T, vocab) for a language model."""

    def __init__(
        self, cfg: RNNConfig, *, vocab_size: int, num_outputs: int, language_model: bool
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=cfg.padding_idx)
        self.recurrent = RecurrentStack(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.num_directions = 2 if cfg.bidirectional else 1
        self.head = nn.Linear(cfg.hidden * self.num_directions, num_outputs)
        self.language_model = language_model
        self.pool = cfg.pool
        self.padding_idx = self.embedding.padding_idx  # torch makes a negative id positive

    def forward(self, token_ids: Tensor, cache: RNNCache | None = None) -> Tensor:
        x = self.embedding(token_ids).transpose(0, 1)  # (T, B, E)
        if self.language_model:
            return self._next_token_logits(x, cache)
        if cache is not None:
            raise ValueError("RNN: a cache is for language models (generation) only")
        return self.head(self.dropout(self._pooled(token_ids, x)))  # (B, num_outputs)

    def new_cache(self, batch_size: int, max_length: int) -> RNNCache:
        """A zero hidden state for reading up to ``max_length`` tokens per sequence."""
        if not self.language_model:
            raise ValueError("RNN: a cache is for language models (generation) only")
        rnn = self.recurrent.rnn
        weight = rnn.weight_hh_l0
        shape = (rnn.num_layers * self.num_directions, batch_size, rnn.hidden_size)
        h = torch.zeros(shape, dtype=weight.dtype, device=weight.device)
        c = torch.zeros_like(h) if isinstance(rnn, nn.LSTM) else None
        return RNNCache(h=h, c=c, length=0, max_length=max_length)

    def _next_token_logits(self, x: Tensor, cache: RNNCache | None) -> Tensor:
        """Every position's next-token logits; a cache is continued from and advanced."""
        state = None
        if cache is not None:
            if cache.length + x.shape[0] > cache.max_length:
                raise ValueError(
                    f"RNN: the cache was made for {cache.max_length} tokens; it holds "
                    f"{cache.length} and was given {x.shape[0]} more"
                )
            state = cache.state()
        outputs, final = self.recurrent(x, None, state)  # full windows: nothing to pack
        if cache is not None:
            cache.advance(final, num_tokens=x.shape[0])
        return self.head(self.dropout(outputs.transpose(0, 1)))  # (B, T, vocab)

    def _pooled(self, token_ids: Tensor, x: Tensor) -> Tensor:
        """One feature vector per sequence (B, D * H) from its non-padding steps only."""
        lengths = self._lengths(token_ids)
        outputs, final = self.recurrent(x, lengths)  # (T, B, D * H)
        if self.pool == "last":
            h = final[0] if isinstance(final, tuple) else final  # (layers * D, B, H)
            # the top layer: forward direction at each true last step, backward at step 0
            return torch.cat(tuple(h[-self.num_directions :]), dim=1)
        if lengths is None:
            return outputs.mean(dim=0) if self.pool == "mean" else outputs.amax(dim=0)
        if self.pool == "mean":  # padded steps are zeros after unpacking
            return outputs.sum(dim=0) / lengths.unsqueeze(1).to(outputs.dtype)
        steps = torch.arange(outputs.shape[0], device=outputs.device).unsqueeze(1)  # (T, 1)
        padded = (steps >= lengths.unsqueeze(0)).unsqueeze(2)  # (T, B, 1)
        return outputs.masked_fill(padded, float("-inf")).amax(dim=0)

    def _lengths(self, token_ids: Tensor) -> Tensor | None:
        """(B,) last non-padding position + 1, at least 1; None without a padding id."""
        if self.padding_idx is None:
            return None
        positions = torch.arange(1, token_ids.shape[1] + 1, device=token_ids.device)
        real = token_ids != self.padding_idx
        return torch.where(real, positions, 0).amax(dim=1).clamp(min=1)


@register_model("rnn", config_class=RNNConfig, block_types=(RecurrentStack,))
def build_rnn(
    cfg: RNNConfig,
    *,
    input_shape: tuple[int, ...],
    num_outputs: int,
    vocab_size: int | None = None,
    task: str = "classification",
) -> RNN:
    """LSTM / GRU / tanh RNN over token ids: a label per sequence, or every next token."""
    vocab_size = token_vocab_size("rnn", cfg, input_shape=input_shape, vocab_size=vocab_size)
    _check(cfg, task=task)
    return RNN(
        cfg,
        vocab_size=vocab_size,
        num_outputs=num_outputs,
        language_model=task == "language_model",
    )


def _check(cfg: RNNConfig, *, task: str) -> None:
    """Refuse what cannot be built, naming the key."""
    if cfg.bidirectional and task == "language_model":
        raise ConfigError(
            "model.bidirectional: a bidirectional language model reads the tokens it must "
            "predict; set model.bidirectional=false for data.task: language_model"
        )
