"""Decoder-only transformer (GPT): pre-norm blocks of causal self-attention and an MLP.

Attention runs through ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels
where the device has them). The code holds no parallelism: tensor parallelism shards
``q/k/v_proj`` and ``w_in/w_gate`` column-wise and ``out_proj``/``w_out`` row-wise from
outside, so ``Attention`` reads its number of local heads off the projection's output.
Initialization is GPT-2's: normal(0, 0.02), residual output projections scaled by
1/sqrt(2 * n_layer), biases zero (``model.init.name: default`` keeps it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scaletrain.config.models import GPTConfig
from scaletrain.errors import ConfigError, UserError
from scaletrain.models.kv_cache import KVCache, LayerKV
from scaletrain.models.registry import register_model, token_vocab_size

INIT_STD = 0.02
ROPE_BASE = 10_000.0


def swiglu_hidden(d_model: int, mlp_ratio: float) -> int:
    """2/3 of ``mlp_ratio * d_model`` (SwiGLU's three matrices cost what GELU's two do),
    rounded up to a multiple of 8 for matmul-friendly shapes."""
    return 8 * math.ceil(2 / 3 * mlp_ratio * d_model / 8)


class Rotary(nn.Module):
    """Rotary position embedding (RoPE, rotate-half form); cos/sin tables are not saved."""

    def __init__(self, head_dim: int, max_positions: int) -> None:
        super().__init__()
        exponents = torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim
        angles = torch.outer(
            torch.arange(max_positions, dtype=torch.float64), ROPE_BASE**-exponents
        )
        self.register_buffer("cos", angles.cos().float(), persistent=False)  # (P, head_dim/2)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x: Tensor, start: int) -> Tensor:  # (B, h, T, Q), absolute first position
        positions = slice(start, start + x.shape[2])
        cos, sin = self.cos[positions].to(x.dtype), self.sin[positions].to(x.dtype)
        first, second = x.chunk(2, dim=-1)
        return torch.cat((first * cos - second * sin, first * sin + second * cos), dim=-1)


class Attention(nn.Module):
    """Causal multi-head self-attention; heads = projection width / head_dim (TP-shardable)."""

    def __init__(self, cfg: GPTConfig, context: int) -> None:
        super().__init__()
        d_model = cfg.d_model
        self.head_dim = d_model // cfg.n_head
        self.q_proj = nn.Linear(d_model, d_model, bias=cfg.bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=cfg.bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=cfg.bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=cfg.bias)
        # one table per layer, not one shared module: torch.func.functional_call (the meta
        # FLOP count) does not put a shared module's buffers back
        self.rotary = Rotary(self.head_dim, context) if cfg.positions == "rope" else None
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def _heads(self, x: Tensor) -> Tensor:  # (B, T, h*Q) -> (B, h, T, Q)
        return x.view(x.shape[0], x.shape[1], -1, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, kv: LayerKV | None = None) -> Tensor:  # (B, T, C) -> (B, T, C)
        q, k, v = (
            self._heads(self.q_proj(x)),
            self._heads(self.k_proj(x)),
            self._heads(self.v_proj(x)),
        )
        start = kv.start if kv is not None else 0
        if self.rotary is not None:
            q, k = self.rotary(q, start), self.rotary(k, start)
        dropout = self.dropout if self.training else 0.0
        if kv is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            k, v = kv.append(k, v)  # (B, h, start + T, Q)
            num_new = q.shape[2]
            # new token i sits at start + i and sees cached positions 0..start + i
            mask = torch.ones(num_new, start + num_new, dtype=torch.bool, device=q.device)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.tril(diagonal=start))
        y = y.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)  # (B, T, h*Q)
        return self.resid_drop(self.out_proj(y))


def mlp_hidden(cfg: GPTConfig) -> int:
    """Hidden units of each block's MLP: ``model.mlp_hidden`` where set, else from the ratio."""
    if cfg.mlp_hidden is not None:
        return cfg.mlp_hidden
    if cfg.mlp == "swiglu":
        return swiglu_hidden(cfg.d_model, cfg.mlp_ratio)
    return round(cfg.mlp_ratio * cfg.d_model)


class FeedForward(nn.Module):
    """SwiGLU (``silu(w_gate x) * w_in x``) or GELU MLP."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        swiglu = cfg.mlp == "swiglu"
        hidden = mlp_hidden(cfg)
        self.w_in = nn.Linear(cfg.d_model, hidden, bias=cfg.bias)
        self.w_gate = nn.Linear(cfg.d_model, hidden, bias=cfg.bias) if swiglu else None
        self.w_out = nn.Linear(hidden, cfg.d_model, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, C) -> (B, T, C)
        if self.w_gate is not None:
            hidden = F.silu(self.w_gate(x)) * self.w_in(x)
        else:
            hidden = F.gelu(self.w_in(x))
        return self.drop(self.w_out(hidden))


def _norm(cfg: GPTConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.d_model, eps=1e-5)
    return nn.LayerNorm(cfg.d_model, eps=1e-5, bias=cfg.bias)


class GPTBlock(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: GPTConfig, context: int) -> None:
        super().__init__()
        self.attn_norm = _norm(cfg)
        self.attn = Attention(cfg, context)
        self.mlp_norm = _norm(cfg)
        self.mlp = FeedForward(cfg)

    def forward(self, x: Tensor, kv: LayerKV | None = None) -> Tensor:
        x = x + self.attn(self.attn_norm(x), kv)
        return x + self.mlp(self.mlp_norm(x))


class GPT(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, vocab) for a language model, else
    (B, num_outputs) per sequence (classification, regression) from the mean over tokens."""

    def __init__(
        self, cfg: GPTConfig, *, vocab_size: int, num_outputs: int, context: int, task: str
    ) -> None:
        super().__init__()
        self.context, self.task, self.padding_idx = context, task, cfg.padding_idx
        self.tok_emb = nn.Embedding(vocab_size, cfg.d_model)
        learned = cfg.positions == "learned"
        self.pos_emb = nn.Embedding(context, cfg.d_model) if learned else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(GPTBlock(cfg, context) for _ in range(cfg.n_layer))
        self.norm = _norm(cfg)
        self.head = nn.Linear(cfg.d_model, num_outputs, bias=False)
        self._init_gpt2(cfg.n_layer)
        if cfg.tie_weights and task == "language_model":
            self.head.weight = self.tok_emb.weight

    def _init_gpt2(self, n_layer: int) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:  # residual outputs: the stream's variance grows per layer
            for layer in (block.attn.out_proj, block.mlp.w_out):
                nn.init.normal_(layer.weight, mean=0.0, std=INIT_STD / math.sqrt(2 * n_layer))

    def new_cache(self, batch_size: int, max_length: int) -> KVCache:
        """An empty KV cache for generation, on the model's device and dtype."""
        if max_length > self.context:
            raise UserError(
                f"KV cache: max_length {max_length} exceeds model.context {self.context}"
            )
        attn = self.blocks[0].attn
        weight = attn.k_proj.weight
        return KVCache(
            num_layers=len(self.blocks),
            batch_size=batch_size,
            num_heads=attn.k_proj.out_features // attn.head_dim,  # local heads under TP
            max_length=max_length,
            head_dim=attn.head_dim,
            device=weight.device,
            dtype=weight.dtype,
        )

    def forward(self, token_ids: Tensor, cache: KVCache | None = None) -> Tensor:
        num_tokens = token_ids.shape[1]
        start = 0
        if cache is not None:
            cache.check_room(token_ids.shape[0], num_tokens)
            start = cache.length
        if start + num_tokens > self.context:
            raise UserError(
                f"model.context: {start + num_tokens} positions exceed the model's context "
                f"{self.context}; shorten the sequence or raise model.context"
            )
        x = self.tok_emb(token_ids)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(start, start + num_tokens, device=x.device))
        x = self.drop(x)
        for index, block in enumerate(self.blocks):
            x = block(x, cache.layer(index) if cache is not None else None)
        if cache is not None:
            cache.length += num_tokens
        x = self.norm(x)
        if self.task == "language_model":
            return self.head(x)  # (B, T, vocab)
        return self.head(self.pool_tokens(x, token_ids))  # (B, num_outputs)

    def pool_tokens(self, x: Tensor, token_ids: Tensor | None) -> Tensor:  # (B, T, C) -> (B, C)
        """The mean over non-padding tokens; the pipeline's last stage calls it with the
        token ids the schedule hands it (None, as in the planner's meta pass: every token)."""
        if self.padding_idx is None or token_ids is None:
            return x.mean(dim=1)
        keep = (token_ids != self.padding_idx).unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        return (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1)

    # ------------------------------------------------------------------ FLOPs (MFU)
    def matmul_params(self) -> tuple[int, int]:
        """(N of the blocks, N of the head): weights of Linear layers, the ones a matmul reads;
        embeddings (lookups), norms and biases do no matmul and are left out."""
        blocks = sum(
            module.weight.numel()
            for module in self.blocks.modules()
            if isinstance(module, nn.Linear)
        )
        return blocks, self.head.weight.numel()

    def train_flops_per_sample(self, input_shape: tuple[int, ...]) -> int:
        """Forward + backward FLOPs of one sequence of T tokens: (6N + 12·L·H·Q·T) per token,
        the head once per sequence for classification (it reads the pooled vector)."""
        seq_len = input_shape[0]
        blocks, head = self.matmul_params()
        attn = self.blocks[0].attn
        num_heads = attn.q_proj.out_features // attn.head_dim
        attention = 12 * len(self.blocks) * num_heads * attn.head_dim * seq_len
        per_sequence_head = 6 * head * (seq_len if self.task == "language_model" else 1)
        return (6 * blocks + attention) * seq_len + per_sequence_head

    def flops_formula(self, input_shape: tuple[int, ...]) -> str:
        """The per-token formula with its numbers, for the model summary."""
        blocks, head = self.matmul_params()
        attn = self.blocks[0].attn
        num_heads = attn.q_proj.out_features // attn.head_dim
        return (
            f"6N + 12·L·H·Q·T per token with N = {blocks + head:,} (Linear weights, head "
            f"included, embeddings not), L = {len(self.blocks)}, H = {num_heads}, "
            f"Q = {attn.head_dim}, T = {input_shape[0]}"
        )


@register_model("gpt", config_class=GPTConfig, block_types=(GPTBlock,))
def build_gpt(
    cfg: GPTConfig,
    *,
    input_shape: tuple[int, ...],
    num_outputs: int,
    vocab_size: int | None = None,
    task: str = "classification",
) -> GPT:
    """Decoder-only transformer (RoPE/learned positions, SwiGLU/GELU, RMSNorm/LayerNorm)."""
    vocab_size = token_vocab_size("gpt", cfg, input_shape=input_shape, vocab_size=vocab_size)
    if task == "language_model" and vocab_size != num_outputs:
        raise ConfigError(
            f"model.vocab_size: a language model predicts the data's {num_outputs} tokens, got "
            f"{vocab_size}; leave model.vocab_size null"
        )
    context = cfg.context or input_shape[0]
    if input_shape[0] > context:
        raise ConfigError(
            f"model.context: the data's windows are {input_shape[0]} tokens, longer than "
            f"model.context={context}; raise model.context or lower data.context_length"
        )
    return GPT(cfg, vocab_size=vocab_size, num_outputs=num_outputs, context=context, task=task)
