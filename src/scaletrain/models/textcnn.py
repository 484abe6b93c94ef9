"""Kim (2014) text CNN: embeddings, parallel 1-D convs, max over time, an optional ReLU layer
(the Keras walkthroughs' Dense 32), dropout, linear classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scaletrain.config import TextCNNConfig
from scaletrain.models.registry import register_model, token_vocab_size


class TextConvBlock(nn.Module):
    """One kernel width: Conv1d + ReLU + max over time."""

    def __init__(
        self, embed_dim: int, num_filters: int, *, kernel_size: int, padding: str = "valid"
    ) -> None:
        super().__init__()
        self.conv = nn.Conv1d(embed_dim, num_filters, kernel_size, padding=padding)

    def forward(self, x: Tensor) -> Tensor:  # (B, E, T) -> (B, F)
        return F.relu(self.conv(x)).amax(dim=2)


class TextCNN(nn.Module):
    """Token ids (B, T) -> logits (B, num_outputs)."""

    def __init__(self, cfg: TextCNNConfig, *, vocab_size: int, num_outputs: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=cfg.padding_idx)
        self.blocks = nn.ModuleList(
            TextConvBlock(cfg.embed_dim, cfg.num_filters, kernel_size=size, padding=cfg.padding)
            for size in cfg.kernel_sizes
        )
        self.min_length = max(cfg.kernel_sizes)
        num_features = cfg.num_filters * len(cfg.kernel_sizes)
        # Identity when hidden = 0: no parameters, so older checkpoints keep their keys.
        self.hidden = nn.Identity()
        if cfg.hidden:
            self.hidden = nn.Sequential(nn.Linear(num_features, cfg.hidden), nn.ReLU())
            num_features = cfg.hidden
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(num_features, num_outputs)

    def forward(self, token_ids: Tensor) -> Tensor:  # (B, T) int64 -> (B, num_outputs)
        x = self.embedding(token_ids).transpose(1, 2)  # (B, E, T)
        short_by = self.min_length - x.shape[2]
        if short_by > 0:
            # Zeros equal the (zero) padding embedding, so a short text reads as padded.
            x = F.pad(x, (0, short_by))
        pooled = torch.cat([block(x) for block in self.blocks], dim=1)  # (B, F * num_kernels)
        return self.output(self.dropout(self.hidden(pooled)))


@register_model("textcnn", config_class=TextCNNConfig, block_types=(TextConvBlock,))
def build_textcnn(
    cfg: TextCNNConfig,
    *,
    input_shape: tuple[int, ...],
    num_outputs: int,
    vocab_size: int | None = None,
    task: str = "classification",
) -> TextCNN:
    """Kim (2014) CNN for token-id sequences (B, T)."""
    vocab_size = token_vocab_size("textcnn", cfg, input_shape=input_shape, vocab_size=vocab_size)
    return TextCNN(cfg, vocab_size=vocab_size, num_outputs=num_outputs)
