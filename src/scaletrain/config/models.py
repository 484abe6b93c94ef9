"""The ``model`` section: one pydantic class per registered model, chosen by ``name``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from scaletrain.config.base import Fraction, Int, NonNegInt, PositiveFloat, PositiveInt, Section


# --------------------------------------------------------------------------- model
class InitConfig(Section):
    name: Literal[
        "default",
        "zeros",
        "normal",
        "uniform",
        "xavier_uniform",
        "xavier_normal",
        "kaiming_uniform",
        "kaiming_normal",
        "orthogonal",
    ] = Field("default", description="Weight init for Linear/Conv/Embedding; biases zero.")
    std: PositiveFloat = Field(0.02, description="Standard deviation for `normal`.")
    bound: PositiveFloat = Field(0.05, description="Half-width for `uniform`.")
    gain: PositiveFloat = Field(1.0, description="Gain for xavier/orthogonal.")


Activation = Literal["relu", "gelu", "tanh", "sigmoid", "silu", "leaky_relu"]


class MLPConfig(Section):
    name: Literal["mlp"] = "mlp"
    hidden: list[PositiveInt] = Field([128, 128], description="Hidden layer widths.")
    activation: Activation = Field("relu", description="Activation between layers.")
    dropout: Fraction = Field(0.0, description="Dropout after each hidden layer.")
    batch_norm: bool = Field(False, description="BatchNorm1d after each hidden linear layer.")
    init: InitConfig = InitConfig()


class CNNConfig(Section):
    name: Literal["cnn"] = "cnn"
    channels: list[PositiveInt] = Field(
        [32, 64], min_length=1, description="Output channels per conv block (at least one)."
    )
    kernel_size: PositiveInt = Field(3, description="Conv kernel size (same padding).")
    pool: Literal["max", "avg", "none"] = Field("max", description="2x2 pooling per block.")
    batch_norm: bool = Field(True, description="BatchNorm2d after each conv.")
    dropout: Fraction = Field(0.0, description="Dropout in the head.")
    head: list[PositiveInt] = Field([128], description="Hidden widths of the MLP head.")
    activation: Activation = "relu"
    init: InitConfig = InitConfig()


class TextCNNConfig(Section):
    name: Literal["textcnn"] = "textcnn"
    embed_dim: PositiveInt = Field(64, description="Token embedding size.")
    kernel_sizes: list[PositiveInt] = Field(
        [3, 4, 5], min_length=1, description="Widths of parallel convs (at least one)."
    )
    num_filters: PositiveInt = Field(64, description="Filters per kernel width.")
    padding: Literal["valid", "same"] = Field(
        "valid", description="Conv padding: `valid` (none) or `same` (output length = input)."
    )
    hidden: NonNegInt = Field(
        0, description="Width of a ReLU layer between pooling and dropout (Dense 32); 0 = none."
    )
    dropout: Fraction = Field(0.5, description="Dropout before the classifier.")
    vocab_size: PositiveInt | None = Field(None, description="Default: inferred from the data.")
    padding_idx: Int | None = Field(0, description="Token id that pads sequences.")
    init: InitConfig = InitConfig()


class GPTConfig(Section):
    name: Literal["gpt"] = "gpt"
    n_layer: PositiveInt = Field(4, description="Transformer blocks.")
    n_head: PositiveInt = Field(4, description="Attention heads; must divide model.d_model.")
    d_model: PositiveInt = Field(128, description="Width of the residual stream.")
    context: PositiveInt | None = Field(
        None,
        description="Longest sequence (positions, KV cache); null = data.context_length. A "
        "data window longer than this is refused.",
    )
    norm: Literal["rmsnorm", "layernorm"] = Field("rmsnorm", description="Pre-norm layer type.")
    positions: Literal["rope", "learned"] = Field(
        "rope", description="Rotary embeddings on q/k, or a learned position table."
    )
    mlp: Literal["swiglu", "gelu"] = Field(
        "swiglu",
        description="`swiglu`: silu(w_gate x) * w_in x, hidden = 2/3 * mlp_ratio * d_model "
        "rounded up to a multiple of 8; `gelu`: hidden = mlp_ratio * d_model.",
    )
    mlp_ratio: PositiveFloat = Field(4.0, description="MLP hidden width over d_model.")
    mlp_hidden: PositiveInt | None = Field(
        None,
        description="MLP hidden units per block, overriding mlp_ratio (set by `scaletrain "
        "compress --structured`); null: from mlp_ratio.",
    )
    tie_weights: bool = Field(
        True, description="language_model: the output head shares the token embedding."
    )
    dropout: Fraction = Field(0.0, description="Dropout on embeddings, attention and residuals.")
    bias: bool = Field(False, description="Biases in the linear layers and LayerNorm.")
    vocab_size: PositiveInt | None = Field(None, description="Default: inferred from the data.")
    padding_idx: Int | None = Field(
        0,
        description="classification: token id left out of the mean over positions (null: "
        "every position counts).",
    )
    init: InitConfig = InitConfig()

    @model_validator(mode="after")
    def _check_heads(self) -> GPTConfig:
        if self.d_model % self.n_head:
            raise ValueError(
                f"model.d_model: must be divisible by model.n_head ({self.n_head}), got "
                f"{self.d_model}; choose a multiple of {self.n_head}"
            )
        head_dim = self.d_model // self.n_head
        if self.positions == "rope" and head_dim % 2:
            raise ValueError(
                f"model.n_head: rope needs an even head size (model.d_model / model.n_head), "
                f"got {self.d_model} / {self.n_head} = {head_dim}; change n_head or d_model, "
                "or set model.positions=learned"
            )
        return self


class RNNConfig(Section):
    name: Literal["rnn"] = "rnn"
    cell: Literal["lstm", "gru", "rnn"] = Field(
        "lstm", description="Recurrent cell: `lstm`, `gru` or a plain tanh `rnn`."
    )
    embed_dim: PositiveInt = Field(64, description="Token embedding size.")
    hidden: PositiveInt = Field(128, description="Hidden state size per direction.")
    layers: PositiveInt = Field(1, description="Stacked recurrent layers.")
    bidirectional: bool = Field(
        False, description="Also read right to left (classification only: an LM would see ahead)."
    )
    dropout: Fraction = Field(
        0.0, description="Dropout between recurrent layers (as torch does) and before the head."
    )
    pool: Literal["last", "mean", "max"] = Field(
        "last",
        description="Classification: each sequence's true last step, or mean/max over its "
        "non-padding steps.",
    )
    vocab_size: PositiveInt | None = Field(None, description="Default: inferred from the data.")
    padding_idx: Int | None = Field(
        0, description="Token id that pads sequences (trailing); null: every step counts."
    )
    init: InitConfig = InitConfig()


class ResNetConfig(Section):
    name: Literal["resnet"] = "resnet"
    depth: Literal[18, 34] = Field(
        18,
        description="Basic-block ResNet depth: 18 (stages of [2, 2, 2, 2] blocks) or 34 "
        "([3, 4, 6, 3]).",
    )
    width: PositiveInt = Field(
        64, description="Channels of the first stage, doubled at each of the next three."
    )
    stem: Literal["auto", "small", "large"] = Field(
        "auto",
        description="`small`: 3x3 conv, stride 1, no max pool (CIFAR-style); `large`: 7x7 "
        "conv, stride 2, then 3x3 max pool, stride 2 (ImageNet-style). `auto`: `small` when "
        "the images' shorter side is under 64 px, else `large`.",
    )
    zero_init_residual: bool = Field(
        False,
        description="Start each block's last BatchNorm scale at zero, so every block starts "
        "as the identity on its residual path (Goyal et al. 2017).",
    )
    inner_keep: Annotated[float, Field(gt=0, le=1)] = Field(
        1.0,
        description="Share of each basic block's inner channels (between its two convs) "
        "kept; below 1 after `scaletrain compress --structured`.",
    )
    dropout: Fraction = Field(0.0, description="Dropout on the pooled features, before the head.")
    init: InitConfig = InitConfig()


class UserModelConfig(Section):
    """Placeholder recorded when the Python API is given an ``nn.Module``."""

    name: Literal["user"] = "user"
    class_name: str = Field("", description="Class of the user module (recorded, not built).")
    init: InitConfig = InitConfig()


ModelConfig = Annotated[
    MLPConfig | CNNConfig | TextCNNConfig | ResNetConfig | GPTConfig | RNNConfig | UserModelConfig,
    Field(discriminator="name"),
]
