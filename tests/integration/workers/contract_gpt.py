"""A tiny GPT following models/gpt.py's module contract (names the TP plan relies on)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.head_dim = d_model // n_head
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x, kv=None):
        batch, length, _ = x.shape
        q, k, v = (
            proj(x).view(batch, length, -1, self.head_dim).transpose(1, 2)  # local heads
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out_proj(y.transpose(1, 2).reshape(batch, length, -1))


class FeedForward(nn.Module):
    def __init__(self, d_model: int):
        super().__init__()
        self.w_in = nn.Linear(d_model, 4 * d_model, bias=False)
        self.w_gate = nn.Linear(d_model, 4 * d_model, bias=False)
        self.w_out = nn.Linear(4 * d_model, d_model, bias=False)

    def forward(self, x):
        return self.w_out(F.silu(self.w_gate(x)) * self.w_in(x))


class GPTBlock(nn.Module):
    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.attn_norm = nn.RMSNorm(d_model)
        self.attn = Attention(d_model, n_head)
        self.mlp_norm = nn.RMSNorm(d_model)
        self.mlp = FeedForward(d_model)

    def forward(self, x):
        x = x + self.attn(self.attn_norm(x), None)
        return x + self.mlp(self.mlp_norm(x))


class GPT(nn.Module):
    def __init__(self, *, vocab=48, d_model=32, n_head=4, n_layer=2, context=16, tie=True):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, d_model)
        self.pos_emb = nn.Embedding(context, d_model)
        self.drop = nn.Dropout(0.0)
        self.blocks = nn.ModuleList(GPTBlock(d_model, n_head) for _ in range(n_layer))
        self.norm = nn.RMSNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        if tie:
            self.head.weight = self.tok_emb.weight
        for name, param in self.named_parameters():
            std = (
                0.02 / math.sqrt(2 * n_layer)
                if name.endswith(("out_proj.weight", "w_out.weight"))
                else 0.02
            )
            if param.dim() > 1:
                nn.init.normal_(param, std=std)

    def forward(self, idx):
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(positions))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))
