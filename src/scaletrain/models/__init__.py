"""Models: a plain-dict registry (``MODELS``) filled by the model modules, init, FLOPs, summary."""

from scaletrain.models import cnn, gpt, mlp, resnet, rnn, textcnn  # noqa: F401  (registration side effects)
from scaletrain.models.cnn import CNN, ConvBlock
from scaletrain.models.flops import (
    TRAIN_FLOPS_FACTOR,
    count_flops_per_sample,
    forward_flops_per_layer,
    train_flops_per_sample,
)
from scaletrain.models.gpt import GPT, GPTBlock
from scaletrain.models.init import INITS, apply_init
from scaletrain.models.mlp import MLP, MLPBlock
from scaletrain.models.registry import (
    MODELS,
    ModelEntry,
    block_types_of,
    build_model,
    default_block_types,
    register_model,
)
from scaletrain.models.resnet import BasicBlock, ResNet
from scaletrain.models.rnn import RNN, RecurrentStack, RNNCache
from scaletrain.models.summary import LayerSummary, ModelSummary, summarize_model, summary_table
from scaletrain.models.textcnn import TextCNN, TextConvBlock

__all__ = [
    "CNN",
    "BasicBlock",
    "INITS",
    "MLP",
    "MODELS",
    "RNN",
    "TRAIN_FLOPS_FACTOR",
    "ConvBlock",
    "GPT",
    "GPTBlock",
    "LayerSummary",
    "MLPBlock",
    "ModelEntry",
    "ModelSummary",
    "RNNCache",
    "RecurrentStack",
    "ResNet",
    "TextCNN",
    "TextConvBlock",
    "apply_init",
    "block_types_of",
    "build_model",
    "count_flops_per_sample",
    "default_block_types",
    "register_model",
    "forward_flops_per_layer",
    "train_flops_per_sample",
    "summarize_model",
    "summary_table",
]
