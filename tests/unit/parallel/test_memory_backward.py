"""The meta pass's backward: what is alive at the worst moment, against a real CPU run."""

from __future__ import annotations

import torch
from torch import nn

from scaletrain.config import MLPConfig
from scaletrain.config.models import TextCNNConfig
from scaletrain.models import MODELS, MLPBlock, build_model
from scaletrain.parallel.blocks import find_blocks
from scaletrain.parallel.memory_backward import LiveBytes, backward_peak_bytes
from scaletrain.parallel.memory_plan import backward_bytes
from scaletrain.parallel.memory_probe import measure_model


def _meta_and_real(model: nn.Module, example: torch.Tensor, name: str):
    """The probe's count on meta, and the same count over a real forward/backward on CPU."""
    blocks = find_blocks(model, block_types=MODELS[name].block_types)
    facts = measure_model(model, blocks=blocks, example_input=example)
    live = LiveBytes(ignore=[*model.parameters(), example])
    with live:  # the real forward under the count too: its peak is below backward's
        output = model(example)
    real = backward_peak_bytes(output, list(model.parameters()), live)
    return facts, real


def test_textcnn_backward_holds_the_summed_input_gradient_and_conv_buffers():
    batch = 16
    torch.manual_seed(0)
    model = build_model(TextCNNConfig(), input_shape=(64,), num_outputs=10, vocab_size=500)
    facts, real = _meta_and_real(model, torch.randint(1, 500, (batch, 64)), "textcnn")
    assert facts.peak_live_bytes == real  # meta frees what a CPU backward frees, when it does
    # the embedding's output (B, E, T) feeds 3 convs: at the middle conv's backward its
    # gradient summed so far, the conv's own input gradient and oneDNN's copies of its
    # (non-contiguous) input are alive beside the saved tensors: > 3 such tensors more
    embedded = batch * 64 * 64 * 4
    beyond_saved = facts.peak_live_bytes - facts.saved_bytes
    assert beyond_saved > 3 * embedded > facts.largest_saved_bytes
    assert backward_bytes(facts, "none", 1) == beyond_saved  # the planner's transient


class TwoBranches(nn.Module):
    """Two MLP blocks read one hidden tensor (as textcnn's convs read the embedding)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(64, 256)
        self.branches = nn.ModuleList(MLPBlock(256, 256, activation="relu") for _ in range(2))
        self.head = nn.Linear(256, 10)

    def forward(self, inputs):
        hidden = self.stem(inputs)
        return self.head(sum(branch(hidden) for branch in self.branches))


def test_parameter_gradients_and_the_output_are_left_to_the_planner():
    torch.manual_seed(0)
    model, example = TwoBranches(), torch.randn(16, 64)
    facts = measure_model(model, blocks=list(model.branches), example_input=example)
    live = LiveBytes(ignore=[*model.parameters(), example])
    with live:
        output = model(example)
    assert facts.peak_live_bytes == backward_peak_bytes(output, list(model.parameters()), live)
    # parameter gradients (> 256 KB each here) are counted as `grads`, not as activations:
    # the peak stays below the saved tensors plus three (16, 256) gradients
    row = 16 * 256 * 4
    assert facts.saved_bytes < facts.peak_live_bytes < facts.saved_bytes + 3 * row
    assert facts.param_bytes > 256 * 256 * 4


def test_a_chain_of_blocks_keeps_the_single_tensor_transient():
    model = build_model(MLPConfig(hidden=[256, 256]), input_shape=(64,), num_outputs=10)
    blocks = find_blocks(model, block_types=MODELS["mlp"].block_types)
    facts = measure_model(model, blocks=blocks, example_input=torch.empty(16, 64))
    assert facts.peak_live_bytes == 0  # no replay: no two blocks read one tensor
    assert backward_bytes(facts, "none", 1) == facts.largest_saved_bytes


def test_a_model_without_a_meta_backward_falls_back_to_the_saved_count():
    class NoMetaBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, inputs):
            return inputs * 2

        @staticmethod
        def backward(ctx, grad):
            raise NotImplementedError("no meta kernel")

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(8, 8)

        def forward(self, inputs):
            return NoMetaBackward.apply(self.linear(inputs))

    facts = measure_model(Model(), blocks=[], example_input=torch.empty(4, 8))
    assert facts.peak_live_bytes == 0
    assert facts.saved_bytes == 4 * 8 * 4  # the forward's count is kept
