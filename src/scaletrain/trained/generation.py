"""Text in, text out: a language-model run's tokenizer around ``models.generate``."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from scaletrain.data import DataSpec, Preprocessor
from scaletrain.data.transforms.text import TextEncoder
from scaletrain.errors import UserError
from scaletrain.models.generate import Sampling, generate
from scaletrain.train.precision import Precision
from scaletrain.trained.inference import device_of


class GenerationNote(UserWarning):
    """Something the user should know about a generation (the CLI prints ``note: ...``)."""


@dataclass(frozen=True)
class TextGeneration:
    """The prompt with its continuation, and the continuation's token count."""

    text: str
    continuation: str
    num_new_tokens: int


def run_tokenizer(spec: DataSpec, preprocessor: Preprocessor, *, where: str) -> TextEncoder:
    """The run's text encoder; a run that is no language model is one line."""
    if spec.task != "language_model":
        raise UserError(
            f"{where}: generate needs a language model (data.task=language_model); this run's "
            f"task is {spec.task!r}: use `scaletrain predict` for it"
        )
    encoder = preprocessor.encoder
    if not isinstance(encoder, TextEncoder) or encoder.tokenizer is None:
        raise UserError(f"{where}: preprocess.json holds no tokenizer; was it edited?")
    return encoder


def generate_text(
    model: nn.Module,
    prompt: str,
    *,
    encoder: TextEncoder,
    precision: Precision,
    max_new_tokens: int,
    sampling: Sampling,
    seed: int | None,
) -> TextGeneration:
    """Encode ``prompt`` as in training, sample a continuation, decode it."""
    if not isinstance(prompt, str):
        raise UserError(f"prompt: expected a string, got {type(prompt).__name__}")
    prompt_ids = [int(i) for i in encoder.token_ids([prompt])[0]]
    if not prompt_ids:
        raise UserError("prompt: gives no tokens; pass at least one character")
    tokens = torch.tensor([prompt_ids], device=device_of(model))
    was_training = model.training
    model.eval()
    try:
        with precision.autocast():
            result = generate(
                model, tokens, max_new_tokens=max_new_tokens, sampling=sampling, seed=seed
            )
    finally:
        model.train(was_training)
    if result.prompt_tokens_dropped:
        kept = len(prompt_ids) - result.prompt_tokens_dropped
        warnings.warn(
            f"prompt: {len(prompt_ids)} tokens, more than the model's context; generating "
            f"from its last {kept} tokens",
            GenerationNote,
            stacklevel=2,
        )
    new_ids = result.token_ids[0].tolist()
    return TextGeneration(
        prompt + _continuation(encoder, prompt_ids, new_ids),
        _decode(encoder, new_ids),
        len(new_ids),
    )


def _decode(encoder: TextEncoder, ids: list[int]) -> str:
    return encoder.tokenizer.decode(ids)


def _continuation(encoder: TextEncoder, prompt_ids: list[int], new_ids: list[int]) -> str:
    """The new text as decoded together with the prompt: a byte-level token that completes
    a character begun in the prompt decodes right only beside it."""
    whole, head = _decode(encoder, prompt_ids + new_ids), _decode(encoder, prompt_ids)
    return whole[len(head) :] if whole.startswith(head) else _decode(encoder, new_ids)
