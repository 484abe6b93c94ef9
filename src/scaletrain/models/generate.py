"""Autoregressive sampling from a language model: greedy, temperature, top-k, top-p.

A model with ``new_cache(batch_size, max_length)`` (``gpt``, ``rnn``) gets the prompt
prefilled into its cache and then one token per forward; any other module (a user's) is
called on the last ``context`` tokens each step, which costs a full pass per new token.
Pure torch, no parallelism: the caller puts the model on its device and in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from scaletrain.errors import UserError


@dataclass(frozen=True)
class Sampling:
    """How the next token is drawn from the logits; ``temperature`` 0 means greedy."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def check(self) -> None:
        """One line for a value that cannot sample."""
        if not self.temperature >= 0:
            raise UserError(f"temperature: must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise UserError(f"top_k: must be >= 1 (or unset for no limit), got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UserError(f"top_p: must be in (0, 1] (1 = no nucleus cut), got {self.top_p}")


@dataclass(frozen=True)
class Generated:
    """The new token ids (B, N) and how much of the prompt the model saw."""

    token_ids: Tensor
    prompt_tokens_dropped: int  # leading prompt tokens beyond the model's context


def filter_logits(logits: Tensor, *, top_k: int | None, top_p: float | None) -> Tensor:
    """Top-k, then top-p (nucleus) filtering of (B, V) logits: cut tokens get -inf.

    The nucleus keeps the smallest set of most likely tokens whose probability reaches
    ``top_p``; the most likely token always stays, so a tiny ``top_p`` is greedy.
    """
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # drop a token when the tokens before it already reach top_p
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_token(logits: Tensor, sampling: Sampling, generator: torch.Generator | None) -> Tensor:
    """(B, V) logits -> (B, 1) token ids."""
    logits = logits.float()
    if sampling.temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = filter_logits(
        logits / sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p
    )
    probs = logits.softmax(dim=-1)
    # sampled on the CPU: a seeded CPU generator gives the same text on every device
    return torch.multinomial(probs.cpu(), 1, generator=generator).to(logits.device)


def model_context(model: nn.Module) -> int | None:
    """The longest sequence the model takes (``model.context``), or None when it has none."""
    context = getattr(model, "context", None)
    return context if isinstance(context, int) and context > 0 else None


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt_ids: Tensor,
    *,
    max_new_tokens: int,
    sampling: Sampling = Sampling(),
    seed: int | None = None,
    eos_id: int | None = None,
) -> Generated:
    """Continue (B, T) prompt ids by up to ``max_new_tokens`` tokens (stops early when every
    row has produced ``eos_id``). The model returns (B, T, V) next-token logits.

    Args:
        model: a language model in eval mode on its device.
        prompt_ids: int64 token ids (B, T), T >= 1.
        max_new_tokens: how many tokens to add (>= 1).
        sampling: temperature / top-k / top-p.
        seed: seeds the sampling generator; the same seed gives the same tokens.
        eos_id: a token that ends a row (later tokens of that row repeat it).
    """
    sampling.check()
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens: must be >= 1, got {max_new_tokens}")
    if prompt_ids.ndim != 2 or prompt_ids.shape[1] < 1:
        raise UserError(
            f"prompt: needs at least one token (ids shaped (B, T)), got {tuple(prompt_ids.shape)}"
        )
    context = model_context(model)
    dropped = max(0, prompt_ids.shape[1] - context) if context else 0
    prompt_ids = prompt_ids[:, dropped:]
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    cached = hasattr(model, "new_cache")
    stepper = (_CachedSteps if cached else _RecomputedSteps)(
        model, prompt_ids, capacity=context or prompt_ids.shape[1] + max_new_tokens
    )
    logits, tokens, done = stepper.first(), [], None
    for _ in range(max_new_tokens):
        token = next_token(logits, sampling, generator)  # (B, 1)
        if eos_id is not None:
            done = token == eos_id if done is None else done | (token == eos_id)
            token = torch.where(done, torch.full_like(token, eos_id), token)
        tokens.append(token)
        if len(tokens) == max_new_tokens or (done is not None and bool(done.all())):
            break
        logits = stepper.advance(token)
    return Generated(torch.cat(tokens, dim=1), dropped)


class _CachedSteps:
    """(B, V) logits of the next token: the prompt prefilled once, then one token per forward.

    Past the capacity (the context) the cache is refilled from the last ``capacity // 2``
    tokens, a sliding window in halves: one prefill per half context, not one per token.
    """

    def __init__(self, model: nn.Module, prompt_ids: Tensor, *, capacity: int) -> None:
        self.model, self.capacity, self.window = model, capacity, prompt_ids

    def first(self) -> Tensor:
        return self._prefill()

    def advance(self, token: Tensor) -> Tensor:
        self.window = torch.cat((self.window, token), dim=1)
        if self.num_cached + 1 > self.capacity:
            self.window = self.window[:, -max(1, self.capacity // 2) :]
            return self._prefill()
        self.num_cached += 1
        return self.model(token, cache=self.cache)[:, -1]

    def _prefill(self) -> Tensor:
        self.cache = self.model.new_cache(self.window.shape[0], self.capacity)
        self.num_cached = self.window.shape[1]
        return self.model(self.window, cache=self.cache)[:, -1]


class _RecomputedSteps:
    """(B, V) logits of a model without a cache: a full pass over the last ``capacity`` tokens."""

    def __init__(self, model: nn.Module, prompt_ids: Tensor, *, capacity: int) -> None:
        self.model, self.capacity, self.window = model, capacity, prompt_ids

    def first(self) -> Tensor:
        return self.model(self.window)[:, -1]

    def advance(self, token: Tensor) -> Tensor:
        self.window = torch.cat((self.window, token), dim=1)[:, -self.capacity :]
        return self.model(self.window)[:, -1]
