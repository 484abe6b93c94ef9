"""The typed, frozen config: one section per package, validated at the edge.

Each section is read by exactly one builder (``build_optimizer(cfg.optim, model)`` …).
Loading goes YAML/dict -> dotted overrides -> pydantic; any failure becomes one
``ConfigError`` line naming the key path, what was received and what is expected.
"""

from __future__ import annotations

import difflib
import re
import typing
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    ValidationError,
    model_validator,
)

from scaletrain import choices
from scaletrain.config.base import (
    BatchSize,
    Float,
    Fraction,
    Int,
    NonNegFloat,
    NonNegInt,
    PositiveFloat,
    PositiveInt,
    Section,
    Seed,
)
from scaletrain.config.dims import DimsConfig
from scaletrain.config.distill import DistillConfig, check_distill
from scaletrain.config.ensemble import (
    EnsembleConfig,
    SubsampleConfig,
    check_member_batch,
    check_member_strategy,
    check_row_weights,
    check_snapshot,
    member_overrides,
    member_raw,
    num_runs,
)
from scaletrain.config.models import (
    CNNConfig as CNNConfig,
)
from scaletrain.config.models import (
    GPTConfig as GPTConfig,
)
from scaletrain.config.models import (
    InitConfig as InitConfig,
)
from scaletrain.config.models import (
    MLPConfig as MLPConfig,
)
from scaletrain.config.models import (
    ModelConfig,
)
from scaletrain.config.models import (
    ResNetConfig as ResNetConfig,
)
from scaletrain.config.models import (
    TextCNNConfig as TextCNNConfig,
)
from scaletrain.config.models import (
    UserModelConfig as UserModelConfig,
)
from scaletrain.config.pipeline import check_pipeline
from scaletrain.errors import ConfigError
from scaletrain.typed_yaml import field_at, load_value, takes_text


# --------------------------------------------------------------------------- run
class RunConfig(Section):
    name: str = Field(
        "run",
        description="Run name; the run directory is `<out_dir>/<name>`: letters, digits, "
        "`.`, `_`, `-` (no path separators, no leading dot), at most 128 characters "
        "(checked where the run directory is made).",
    )
    seed: Seed = Field(
        0, description="Seed for data split, shuffling, init and dropout (0 .. 2^32 - 1)."
    )
    out_dir: str = Field("runs", description="Parent folder of run directories.")


# --------------------------------------------------------------------------- data
class TableConfig(Section):
    categorical: list[str] = Field(
        [], description="Columns holding categories (any text); the other features must be numbers."
    )
    categorical_encoding: Literal["onehot", "index"] = Field(
        "onehot",
        description="`onehot` columns, or one index column (0 = unknown, 1..K = train categories).",
    )
    impute: Literal["none", "mean", "median", "constant"] = Field(
        "none",
        description="Missing/NaN/Inf numbers: `none` = error naming file:row:column; else fill "
        "with the train split's mean/median or `impute_value` (categories: the unknown bucket).",
    )
    impute_value: Float = Field(0.0, description="Fill value for `impute: constant`.")


class TextConfig(Section):
    column: str = Field("text", description="Text column (text_csv) or key (text_jsonl).")
    lowercase: bool = Field(False, description="Lowercase text before vectorizing.")
    strip_accents: bool = Field(False, description="Drop accents (NFKD, combining marks).")
    vectorizer: Literal["bpe", "char", "byte", "words", "ngrams", "tfidf"] = Field(
        "bpe",
        description="Token-id sequences (`bpe` byte-level BPE, `char`, `byte`, `words`: the "
        "ids of a text's word n-grams in a count vectorizer's vocabulary) or vectors for MLPs "
        "(`ngrams` counts, `tfidf`); fit on the train split only.",
    )
    vocab_size: PositiveInt = Field(
        4096, description="BPE vocabulary size; the vocabulary cap for char/words/ngrams/tfidf."
    )
    min_frequency: PositiveInt = Field(
        1, description="Train-split count a token/n-gram/char needs to enter the vocabulary."
    )
    ngram_max: PositiveInt = Field(
        1, description="words/ngrams/tfidf: word n-grams of 1..ngram_max (2: words and bigrams)."
    )
    stop_words: Literal["none", "english"] = Field(
        "none",
        description="words/ngrams/tfidf: words dropped before n-grams are formed (`english`: "
        "scikit-learn's 318-word list; compared after `lowercase`).",
    )
    max_length: PositiveInt = Field(
        256, description="Token sequences are cut or padded (id 0) to this length."
    )

    @model_validator(mode="after")
    def _word_options_need_words(self) -> TextConfig:
        if self.vectorizer in ("bpe", "char", "byte") and self.stop_words != "none":
            raise ValueError(
                f"data.text.stop_words: applies to word vectorizers only, got "
                f"data.text.vectorizer={self.vectorizer}; use words, ngrams or tfidf"
            )
        return self


class ImageConfig(Section):
    size: tuple[PositiveInt, PositiveInt] | None = Field(
        None, description="Resize every image to [height, width]; default: all must match."
    )
    mode: Literal["RGB", "L", "keep"] = Field(
        "RGB", description="Convert every image to this Pillow mode; `keep`: all must agree."
    )


class AugmentConfig(Section):
    crop_padding: NonNegInt = Field(0, description="Random crop after zero-padding this many px.")
    hflip: Annotated[Float, Field(ge=0, le=1)] = Field(
        0.0, description="Probability of a horizontal flip."
    )
    rotation: NonNegFloat = Field(0.0, description="Random rotation within +-degrees.")
    color_jitter: Annotated[Float, Field(ge=0, le=1)] = Field(
        0.0, description="Brightness/contrast/saturation jitter strength (RGB in [0, 1])."
    )
    noise_std: NonNegFloat = Field(0.0, description="Gaussian noise std (normalized units).")
    cutout: Annotated[Float, Field(ge=0, lt=1)] = Field(
        0.0, description="Zero one random square of this share of the image side."
    )
    mixup_alpha: NonNegFloat = Field(0.0, description="Mixup Beta(alpha, alpha); 0 = off.")
    cutmix_alpha: NonNegFloat = Field(0.0, description="CutMix Beta(alpha, alpha); 0 = off.")


class ShardsConfig(Section):
    verify: Literal["full", "size"] = Field(
        "full", description="`full`: SHA-256 of every shard at start; `size`: file sizes only."
    )
    max_open: PositiveInt = Field(
        16, description="Shards memory-mapped at once per process (bounds address space)."
    )
    read_mib: PositiveInt = Field(
        8,
        description="MiB the loader gathers per read (whole micro batches, at least one): "
        "larger reads mean fewer hand-offs between loader threads; the loader holds about "
        "(2 x data.num_workers + 1) reads.",
    )


class DataConfig(Section):
    source: Literal[
        "builtin",
        "csv",
        "parquet",
        "npy",
        "npz",
        "image_folder",
        "text_csv",
        "text_jsonl",
        "text_corpus",
        "shards",
        "tensors",
    ] = Field(
        "builtin", description="Where samples come from (`tensors` = passed to the Python API)."
    )
    name: str = Field("digits", description="Built-in dataset name (`scaletrain list datasets`).")
    path: str | None = Field(
        None, description="File, folder or glob to read; for `shards`, the prepared folder."
    )
    label: str = Field(
        "label",
        description="Label column (csv/parquet/text_csv), key (npz/text_jsonl), column index or "
        "`last` (npy).",
    )
    features: Annotated[list[str], Field(min_length=1)] | None = Field(
        None, description="Feature columns; default all but label."
    )
    task: Literal["auto", "classification", "regression", "language_model"] = Field(
        "auto",
        description="`auto`: classification for class names or few distinct integer labels.",
    )
    classes: Annotated[list[str], Field(min_length=1)] | None = Field(
        None, description="Declared class names; a label outside them is an error."
    )
    layout: Literal["auto", "image", "flat"] = Field(
        "auto", description="`image` keeps (C, H, W) inputs (digits: 1x8x8); `flat` flattens."
    )
    val_fraction: Fraction = Field(0.1, description="Share of samples held out for validation.")
    test_fraction: Fraction = Field(0.2, description="Share of samples held out for testing.")
    stratify: bool = Field(True, description="Keep class proportions in each split.")
    normalize: Literal["standardize", "minmax", "none"] = Field(
        "standardize", description="Feature scaling fit on the train split only."
    )
    normalize_target: Literal["standardize", "none"] = Field(
        "standardize",
        description="Regression only: train on targets standardized with train-split mean and "
        "std; predictions and metrics are turned back into the original units.",
    )
    context_length: PositiveInt = Field(
        128, description="language_model: tokens per sample (windows of context_length + 1)."
    )
    sampler: Literal["shuffle", "balanced"] = Field(
        "shuffle",
        description="`balanced`: draw train samples with replacement, weighted 1/class count.",
    )
    num_workers: NonNegInt | Literal["auto"] = Field(
        "auto",
        description="Loader workers: threads of the training process for shards (a gather "
        "releases the GIL, so no batch crosses processes), DataLoader worker processes for "
        "user Datasets; `auto`: none on CPU or for shards (on CUDA one read-ahead thread "
        "anyway), up to 4 processes for user Datasets on CUDA; in-memory tensors need none.",
    )
    drop_last: bool = Field(False, description="Drop the last incomplete training batch.")
    split_seed: Seed | None = Field(
        None,
        description="Seed of the train/val/test split; default `run.seed` (ensemble members "
        "share the ensemble's split while their own seeds differ).",
    )
    subsample: SubsampleConfig | None = Field(
        None,
        description="Train on a random sample of the train split (a bagging member's "
        "bootstrap); val/test untouched; absent: the whole split.",
    )
    table: TableConfig = TableConfig()
    text: TextConfig = TextConfig()
    image: ImageConfig = ImageConfig()
    augment: AugmentConfig = AugmentConfig()
    shards: ShardsConfig = ShardsConfig()

    @model_validator(mode="after")
    def _check_fractions(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                "data.val_fraction + data.test_fraction: must add up to < 1, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        return self

    @model_validator(mode="after")
    def _check_source_keys(self) -> DataConfig:
        """A key set away from its default that the chosen source never reads is a mistake
        (a csv path under `source: builtin` would train on digits)."""
        # `tensors`: the Python API's data replaced the configured source. `shards`: one config
        # prepares the shards and then trains on them (data.source=shards), so the keys of
        # the source they were prepared from stay, as `data.shards` does under that source.
        if self.source in ("tensors", "shards"):
            return self
        for key, readers in _SOURCE_KEYS.items():
            if self.source in readers:
                continue
            default = type(self).model_fields[key].default
            changed = _first_change(getattr(self, key), default, key)
            if changed is not None:
                path, value = changed
                raise ValueError(
                    f"data.{path}: data.source={self.source} does not read it (got "
                    f"{_echo(value)}); remove it, or use a source that does: {', '.join(readers)}"
                )
        return self


# The data keys only some sources read.
_FILE_SOURCES = ("csv", "parquet", "npy", "npz", "image_folder", "text_csv", "text_jsonl")
_SOURCE_KEYS = {
    "name": ("builtin",),
    "path": (*_FILE_SOURCES, "text_corpus", "shards"),
    "label": ("csv", "parquet", "npy", "npz", "text_csv", "text_jsonl"),
    "features": ("csv", "parquet"),
    "table": ("csv", "parquet"),
    "text": ("text_csv", "text_jsonl", "text_corpus", "builtin"),  # builtin: stdlib_text
    "image": ("image_folder",),
}


def _first_change(value: Any, default: Any, path: str) -> tuple[str, Any] | None:
    """(dotted path, value) of the first leaf that differs from its default, or None."""
    if value == default:
        return None
    if isinstance(value, BaseModel) and isinstance(default, BaseModel):
        for name in type(value).model_fields:
            changed = _first_change(getattr(value, name), getattr(default, name), name)
            if changed is not None:
                return f"{path}.{changed[0]}", changed[1]
    return path, value


def _echo(value: Any, limit: int = 200) -> str:
    """repr(value), cut to ``limit`` characters: an error line quotes what it received."""
    try:
        text = repr(value)
    except ValueError:  # an int of more than 4300 digits has no repr
        return f"an {type(value).__name__} too long to print"
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


# --------------------------------------------------------------------------- optim
class ScheduleConfig(Section):
    name: Literal[
        "constant",
        "step",
        "multistep",
        "exponential",
        "cosine",
        "cosine_restarts",
        "linear",
        "onecycle",
    ] = Field("constant", description="LR multiplier shape over training steps.")
    warmup_steps: NonNegInt = Field(
        0, description="Linear warmup steps: multiplier (s+1)/(W+1), then the shape."
    )
    warmup_ratio: Fraction = Field(0.0, description="Warmup as a share of total steps.")
    min_lr_ratio: Annotated[Float, Field(ge=0, le=1)] = Field(
        0.0, description="Final multiplier for cosine/linear decay."
    )
    step_size: PositiveInt = Field(100, description="`step`: decay every this many steps.")
    milestones: list[PositiveInt] = Field([], description="`multistep`: steps that decay.")
    gamma: PositiveFloat = Field(0.1, description="Decay factor for step/multistep/exponential.")
    pct_start: Annotated[Float, Field(gt=0, lt=1)] = Field(0.3, description="`onecycle` rise.")
    div_factor: PositiveFloat = Field(25.0, description="`onecycle`: start = 1/div_factor.")
    final_div_factor: PositiveFloat = Field(1e4, description="`onecycle`: end divisor.")
    cycles: PositiveInt = Field(
        1, description="`cosine_restarts`: equal cosine cycles, each back to the full lr."
    )

    @model_validator(mode="after")
    def _one_warmup(self) -> ScheduleConfig:
        if self.warmup_steps and self.warmup_ratio:
            raise ValueError(
                "optim.schedule: set only one of warmup_steps and warmup_ratio, not both"
            )
        return self


class PenaltyConfig(Section):
    l1: NonNegFloat = Field(0.0, description="L1 coefficient added to the loss.")
    l2: NonNegFloat = Field(0.0, description="L2 coefficient (times sum of squares) in the loss.")
    include_bias_and_norm: bool = Field(False, description="Also penalize biases and norms.")


class ClipConfig(Section):
    mode: Literal["none", "norm", "value"] = Field("none", description="Gradient clipping.")
    max: PositiveFloat = Field(1.0, description="Max total norm (norm) or abs value (value).")


class OptimConfig(Section):
    name: Literal["sgd", "adam", "adamw", "rmsprop", "adagrad"] = Field(
        "adamw", description="Optimizer."
    )
    lr: PositiveFloat = Field(1e-3, description="Peak learning rate.")
    weight_decay: NonNegFloat = Field(0.0, description="Decoupled for adamw, coupled otherwise.")
    momentum: Annotated[Float, Field(ge=0, lt=1)] = Field(0.0, description="sgd/rmsprop.")
    nesterov: bool = Field(False, description="sgd: Nesterov momentum.")
    betas: tuple[Fraction, Fraction] = Field((0.9, 0.999), description="adam/adamw betas.")
    eps: PositiveFloat = Field(1e-8, description="Denominator epsilon.")
    alpha: Fraction = Field(0.99, description="rmsprop smoothing.")
    implementation: Literal["auto", "foreach", "fused", "loop"] = Field(
        "auto", description="`auto`: fused where supported, else foreach."
    )
    schedule: ScheduleConfig = ScheduleConfig()
    penalty: PenaltyConfig = PenaltyConfig()
    clip: ClipConfig = ClipConfig()

    @model_validator(mode="after")
    def _check_momentum(self) -> OptimConfig:
        if self.momentum and self.name not in ("sgd", "rmsprop"):
            raise ValueError(
                f"optim.momentum: only sgd and rmsprop use it, got optim.name={self.name}; "
                "remove it (adam/adamw use optim.betas)"
            )
        if self.nesterov and self.name != "sgd":
            raise ValueError(
                f"optim.nesterov: Nesterov momentum is an sgd option, got optim.name="
                f"{self.name}; set optim.name=sgd or optim.nesterov=false"
            )
        if self.nesterov and self.momentum == 0:
            raise ValueError(
                "optim.nesterov: needs optim.momentum > 0, got 0; set optim.momentum=0.9 "
                "or optim.nesterov=false"
            )
        return self


class LossConfig(Section):
    name: Literal["auto", "cross_entropy", "bce_with_logits", "mse", "mae", "huber", "kl_div"] = (
        Field("auto", description="`auto`: cross_entropy for classification, mse otherwise.")
    )
    label_smoothing: Fraction = Field(0.0, description="cross_entropy label smoothing.")
    class_weights: (
        Literal["none", "balanced"] | Annotated[list[PositiveFloat], Field(min_length=1)]
    ) = Field("none", description="cross_entropy class weights; `balanced` from train counts.")
    huber_delta: PositiveFloat = Field(1.0, description="huber threshold.")


# --------------------------------------------------------------------------- train
class MonitorConfig(Section):
    metric: str = Field("val.loss", description="`<split>.<metric>` used by best/early stop.")
    mode: Literal["min", "max"] = Field("min", description="Whether lower or higher is better.")


class EarlyStoppingConfig(Section):
    patience: NonNegInt = Field(0, description="Evals without improvement before stop; 0 = off.")
    min_delta: NonNegFloat = Field(0.0, description="Smallest change that counts as better.")


class SpikeConfig(Section):
    threshold: PositiveFloat | None = Field(
        None,
        description="A step whose loss is this many standard deviations above the mean of the "
        "last `window` good steps is a spike (handled like a non-finite step); null = off.",
    )
    window: Annotated[Int, Field(ge=8)] = Field(
        50, description="Good steps in the moving window (no spike is called before it fills)."
    )


class GuardConfig(Section):
    nonfinite: Literal["skip", "rollback", "stop", "off"] = Field(
        "skip",
        description="On a NaN/Inf loss or gradient on any rank (or a spike): `skip` that "
        "optimizer step on every rank; `rollback` to the last checkpoint with a lower lr, "
        "skipping the offending batches; `stop` with a checkpoint; `off`: no per-step check.",
    )
    max_consecutive_bad: PositiveInt = Field(
        3,
        description="skip: stop after this many bad steps in a row; rollback: roll back "
        "once this many are seen in a row (a spike rolls back at once).",
    )
    lr_backoff: Annotated[Float, Field(gt=0, le=1)] = Field(
        0.5, description="rollback: multiply the learning rate by this at every rollback."
    )
    max_rollbacks: PositiveInt = Field(
        3, description="rollback: stop (with a checkpoint) once this many did not help."
    )
    spike: SpikeConfig = SpikeConfig()


# Lightning's spellings too: `32`, `32-true` and the number 32 (YAML reads `precision=32`
# as an int) are "32"; `16`/16 is 16-mixed and `bf16` is bf16-mixed, as in Lightning.
_PRECISION_ALIASES = {"32": "32", "32-true": "32", "16": "16-mixed", "bf16": "bf16-mixed"}


def _precision_alias(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return _PRECISION_ALIASES.get(value, value) if isinstance(value, str) else value


Precision = Annotated[
    Literal["auto", "32", "bf16-mixed", "16-mixed", "bf16-true"],
    BeforeValidator(_precision_alias),
]


class TrainConfig(Section):
    max_epochs: PositiveInt | None = Field(10, description="Epochs to train (or max_steps).")
    max_steps: PositiveInt | None = Field(None, description="Optimizer steps; wins if set.")
    batch_size: BatchSize = Field(
        64, description="Global batch: samples per optimizer step (at most 2^24)."
    )
    micro_batch_size: BatchSize | Literal["auto"] | None = Field(
        None,
        description="Samples per forward pass per rank, at most batch_size; default "
        "batch_size / world size. "
        "`auto`: start there and halve it on an out-of-memory error in the first steps "
        "(one process), accumulating more so the global batch stays the same.",
    )
    precision: Precision = Field(
        "auto",
        description="`auto`: bf16-mixed where the device has fast bf16 (a GPU from sm80, a CPU "
        "with AMX or AVX512-BF16) and, on a CPU, the model's products are large enough for it "
        "to pay (>= 10 MFLOP forward per Linear/conv/RNN layer at `batch_size`; below that "
        "its casts cost more than it saves), else 32; `summary.json` says which. Lightning's "
        "spellings are accepted: `32`/`32-true` (= 32), `16` (= 16-mixed), `bf16` (= bf16-mixed).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Device to train on.")
    compile: bool = Field(
        False,
        description="torch.compile each block of the model (regional: faster cold start); "
        "the first step's seconds, compilation included, go to summary.json `compile_s`. "
        "On CPU, for models as small as the built-in ones, it was measured slower than eager "
        "(bench/README.md).",
    )
    channels_last: bool | Literal["auto"] = Field(
        "auto",
        description="Models with 2-D convolutions and their image inputs in channels_last "
        "memory format. `auto`: on for one CPU process (0.77-0.79x the step time on this "
        "project's CPU, bench/README.md); elsewhere only when set to true.",
    )
    num_threads: PositiveInt | None = Field(
        None,
        description="CPU intra-op threads for this process; default: PyTorch's (one per "
        "core, 1 per rank under torchrun). 1 is fastest for small models on shared cores.",
    )
    deterministic: bool = Field(False, description="torch deterministic algorithms.")
    eval_every_steps: PositiveInt | None = Field(None, description="Default: once per epoch.")
    monitor: MonitorConfig = MonitorConfig()
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    guard: GuardConfig = GuardConfig()

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.max_epochs is None and self.max_steps is None:
            raise ValueError("train: set max_epochs or max_steps (both are null)")
        micro = self.micro_batch_size
        if isinstance(micro, int) and micro > self.batch_size:
            raise ValueError(
                f"train.micro_batch_size: {micro} is larger than train.batch_size "
                f"({self.batch_size}), the samples of one optimizer step on all ranks together; "
                f"set it to at most {self.batch_size} (or raise train.batch_size)"
            )
        return self


# --------------------------------------------------------------------------- checkpoint
class CheckpointConfig(Section):
    every_steps: PositiveInt | None = Field(None, description="Save every N steps.")
    every_epochs: NonNegInt = Field(
        0,
        description="Save at the end of every N epochs; 0 = off (the default: by time, below, "
        "plus the final and the best checkpoint; a save cost more than a small epoch).",
    )
    every_minutes: PositiveFloat | None = Field(
        10.0,
        description="Save when this many minutes passed since the last save (null = off). "
        "The final checkpoint, and one on SIGTERM/SIGINT, are written whatever this says.",
    )
    keep_last: PositiveInt = Field(
        2,
        description="Step checkpoints kept (plus best and final); older ones are deleted only "
        "after a newer one is committed.",
    )
    save_best: bool = Field(
        True,
        description="Keep the best checkpoint by train.monitor. In one process it is held as a "
        "CPU copy and written once, before the next step checkpoint (every_minutes, final, "
        "signal); several ranks write it when it improves.",
    )
    async_save: bool = Field(
        False,
        description="Copy the state to CPU memory, then write in a background thread: training "
        "stalls only for the copy (logged as `stall_s`); one save in flight at a time.",
    )


# --------------------------------------------------------------------------- log
class LogConfig(Section):
    every_steps: PositiveInt = Field(10, description="Log train loss/lr/throughput every N.")
    progress: bool = Field(
        True,
        description="Console output of a run: the model summary at the start and a rich "
        "progress bar (plain lines when not a TTY).",
    )
    tensorboard: bool = Field(True, description="Write TensorBoard events to `tb/`.")
    report: bool = Field(True, description="Write `report.html` at the end of the run.")
    histograms_every: PositiveInt | None = Field(
        None, description="TensorBoard weight/gradient histograms every N steps (costly)."
    )


# --------------------------------------------------------------------------- parallel
class DDPConfig(Section):
    bucket_cap_mb: PositiveFloat = Field(
        25.0, description="Gradient bucket size: larger buckets mean fewer, bigger all-reduces."
    )
    static_graph: bool = Field(
        False, description="The graph is the same every step: lets DDP skip unused-param checks."
    )
    gradient_as_bucket_view: bool = Field(
        True, description="Gradients live in the all-reduce buckets (saves one gradient copy)."
    )


class FSDPConfig(Section):
    reshard_after_forward: bool = Field(
        True, description="`true`: free gathered params after forward (ZeRO-3); `false`: ZeRO-2."
    )
    hybrid: bool = Field(
        False, description="Shard within a node, replicate across nodes (HSDP, 2-D mesh)."
    )
    block_types: list[str] | None = Field(
        None, description="Module class names sharded as units; default: the model's blocks."
    )


class PSConfig(Section):
    servers: PositiveInt = Field(
        1, description="`async_ps`: processes holding parameters (the last ranks); the rest train."
    )
    staleness: NonNegInt = Field(
        0, description="`async_ps`: the most updates a pushed gradient may be behind (tau)."
    )
    stale: Literal["drop", "scale"] = Field(
        "drop", description="An older gradient: `drop` it, or `scale` it down and apply it."
    )
    update: Literal["optim"] = Field(
        "optim", description="How servers step: `optim` = the run's optim.* (name, lr schedule)."
    )
    shards_dir: str | None = Field(
        None,
        description="Servers keep parameters and optimizer state memory-mapped here (resumable).",
    )
    flush_every: PositiveInt = Field(
        100, description="`shards_dir`: commit the shards every N updates (a crash loses fewer)."
    )
    window_mb: PositiveFloat | None = Field(
        None, description="`shards_dir`: map at most this much of a tensor at a time (huge models)."
    )
    spare_workers: NonNegInt = Field(
        0,
        description="`async_ps`: extra worker processes that wait and take over a lost worker "
        "(not worker 0) from its last step; `--nproc` counts workers + spares + servers.",
    )
    transport: Literal["auto", "tcp"] = Field(
        "auto",
        description="RPC between processes: `auto` lets TensorPipe use shared memory between "
        "processes of one host; `tcp` sends everything over the network, as between machines.",
    )


class LocalConfig(Section):
    steps: PositiveInt = Field(
        8,
        description="Local optimizer steps between syncs (H): bytes sent fall H-fold, the "
        "replicas drift apart in between.",
    )
    outer_lr: PositiveFloat = Field(
        0.7, description="diloco: learning rate of the outer SGD on the averaged deltas."
    )
    outer_momentum: float = Field(
        0.9, ge=0.0, lt=1.0, description="diloco: momentum of the outer SGD (0: none)."
    )
    outer_nesterov: bool = Field(
        True, description="diloco: Nesterov momentum for the outer SGD (needs outer_momentum > 0)."
    )


LOCAL_STRATEGIES = ("local_sgd", "diloco")
_OUTER_KEYS = ("outer_lr", "outer_momentum", "outer_nesterov")


class PipelineConfig(Section):
    """Pipeline parallelism (`parallel.strategy: pp`, or `fsdp` with `parallel.dims.pp > 1`);
    checks in `config/pipeline.py`."""

    size: int = Field(
        2, ge=2, description="`strategy: pp`: pipeline ranks, the world size (fsdp: dims.pp)."
    )
    schedule: Literal["gpipe", "1f1b", "interleaved_1f1b"] = Field(
        "1f1b",
        description="`gpipe`: all forwards, then all backwards (activations of every "
        "microbatch held); `1f1b`: one forward, one backward (at most `size` held); "
        "`interleaved_1f1b`: `stages_per_rank` stages per rank, a smaller bubble.",
    )
    microbatches: PositiveInt = Field(
        4, description="Pieces each micro batch is cut into; must divide the micro batch."
    )
    stages_per_rank: PositiveInt = Field(
        1, description="Stages each rank holds: 1, or >= 2 for `interleaved_1f1b`."
    )


class ParallelConfig(Section):
    strategy: Literal["single", "ddp", "fsdp", "auto", "local_sgd", "diloco", "async_ps", "pp"] = (
        Field(
            "auto",
            description="`auto`: single for one process, else the cheapest that fits (`scaletrain "
            "plan`); `local_sgd`/`diloco`: ranks train alone, synced every `parallel.local.steps`; "
            "`async_ps`: asynchronous parameter server; `pp`: pipeline stages of a `gpt` "
            "(`parallel.pp`) (docs/distributed.md).",
        )
    )
    timeout_s: PositiveInt = Field(
        600, description="Seconds a collective or the process-group start may wait for peers."
    )
    ddp: DDPConfig = DDPConfig()
    fsdp: FSDPConfig = FSDPConfig()
    local: LocalConfig = LocalConfig()
    offload: Literal["none", "cpu"] = Field(
        "none", description="`cpu`: FSDP keeps params, grads and optimizer state in host memory."
    )
    activation_checkpointing: Literal["none", "full", "every_n"] = Field(
        "none", description="Recompute block activations in backward: `full` = every block."
    )
    activation_checkpointing_every: PositiveInt = Field(
        2, description="`every_n`: checkpoint blocks 0, n, 2n, ... (first block included)."
    )
    device_memory_gb: PositiveFloat | None = Field(
        None, description="Memory per device for `auto` and the planner; default: measured."
    )
    ps: PSConfig = PSConfig()
    dims: DimsConfig = DimsConfig()
    pp: PipelineConfig = PipelineConfig()

    @model_validator(mode="after")
    def _check(self) -> ParallelConfig:
        if self.offload == "cpu" and self.strategy not in ("fsdp", "auto"):
            raise ValueError(
                f"parallel.offload: `cpu` needs parallel.strategy=fsdp, got {self.strategy!r}"
            )
        if self.fsdp.hybrid and self.strategy not in ("fsdp", "auto"):
            raise ValueError(
                f"parallel.fsdp.hybrid: needs parallel.strategy=fsdp, got {self.strategy!r}"
            )
        self._check_local()
        if self.ps.spare_workers and self.strategy != "async_ps":
            raise ValueError(
                "parallel.ps.spare_workers: spare workers take over lost parameter-server "
                f"workers; needs parallel.strategy=async_ps, got {self.strategy!r}"
            )
        _check_dims(self)
        return self

    def _check_local(self) -> None:
        """`parallel.local.*` only means something to local_sgd/diloco, `outer_*` to diloco.
        A changed value counts, not a key present: a resolved config.yaml lists every key."""
        default = LocalConfig()
        given = [
            key
            for key in LocalConfig.model_fields
            if getattr(self.local, key) != getattr(default, key)
        ]
        if given and self.strategy not in LOCAL_STRATEGIES:
            raise ValueError(
                f"parallel.local.{given[0]}: only used by parallel.strategy=local_sgd or "
                f"diloco, got {self.strategy!r}; remove it or pick one of those"
            )
        outer = [key for key in given if key in _OUTER_KEYS]
        if outer and self.strategy == "local_sgd":
            raise ValueError(
                f"parallel.local.{outer[0]}: local_sgd averages parameters without an outer "
                "optimizer; use parallel.strategy=diloco or remove it"
            )
        if self.local.outer_nesterov and self.local.outer_momentum == 0:
            raise ValueError(
                "parallel.local.outer_nesterov: Nesterov needs parallel.local.outer_momentum "
                "> 0; set parallel.local.outer_nesterov=false for plain outer SGD"
            )


def _check_dims(cfg: ParallelConfig) -> None:
    """Only fsdp composes a mesh of several dims; the others keep every rank a replica."""
    if cfg.dims.is_default():
        return
    key = f"parallel.dims.{cfg.dims.first_changed()}"
    if cfg.strategy != "fsdp":
        raise ValueError(
            f"{key}: a mesh of dims is built by parallel.strategy=fsdp, got {cfg.strategy!r}; "
            "set parallel.strategy=fsdp or leave parallel.dims at its defaults"
        )
    if cfg.fsdp.hybrid and cfg.dims.dp_replicate != 1:
        raise ValueError(
            "parallel.fsdp.hybrid: it sets parallel.dims.dp_replicate to the node count; "
            "give one of the two, not both"
        )


# --------------------------------------------------------------------------- root
class Config(Section):
    run: RunConfig = RunConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = CNNConfig()
    optim: OptimConfig = OptimConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    log: LogConfig = LogConfig()
    parallel: ParallelConfig = ParallelConfig()
    ensemble: EnsembleConfig | None = Field(
        None, description="Train several members and combine them (docs/ensembles.md)."
    )
    distill: DistillConfig | None = Field(
        None, description="Distil a trained teacher run into this model (docs/compress.md)."
    )

    @model_validator(mode="before")
    @classmethod
    def _targets_as_probabilities(cls, raw: Any) -> Any:
        """bce_with_logits and kl_div read regression targets as probabilities: unless the
        config says otherwise, they are not standardized (which would leave [0, 1])."""
        if not isinstance(raw, dict) or _loss_name(raw) not in PROBABILITY_LOSSES:
            return raw
        data = raw.get("data")
        if data is None or (isinstance(data, dict) and "normalize_target" not in data):
            return {**raw, "data": {**(data or {}), "normalize_target": "none"}}
        return raw

    @model_validator(mode="after")
    def _cross_fields(self) -> Config:
        if self.train.precision == "16-mixed" and self.train.device == "cpu":
            raise ValueError(
                "train.precision: `16-mixed` needs a CUDA device; use `bf16-mixed` on CPU"
            )
        if self.loss.name in PROBABILITY_LOSSES and self.data.normalize_target != "none":
            raise ValueError(
                "data.normalize_target: `standardize` moves regression targets out of [0, 1], "
                f"which loss.name={self.loss.name} reads as probabilities; set it to `none`"
            )
        if self.parallel.strategy == "async_ps":
            _check_async_ps(self)
        if self.parallel.dims.tp > 1:
            _check_tensor_parallel(self)
        check_distill(self)  # first: a teacher under pp is refused for the teacher's sake
        check_pipeline(self)
        check_row_weights(self)
        if self.ensemble is not None and self.ensemble.method == "snapshot":
            check_snapshot(self.train.model_dump(), self.ensemble)
        if self.ensemble is not None:
            strategy, member_nproc = self.parallel.strategy, self.ensemble.member_nproc
            check_member_strategy(strategy, member_nproc, key="parallel.strategy")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


PROBABILITY_LOSSES = ("bce_with_logits", "kl_div")


def _check_tensor_parallel(cfg: Config) -> None:
    """What splitting heads and the vocabulary over `parallel.dims.tp` ranks cannot honour."""
    tp = cfg.parallel.dims.tp
    for key in ("n_head", "n_kv_head"):
        heads = getattr(cfg.model, key, None)
        if isinstance(heads, int) and heads % tp:
            raise ValueError(
                f"parallel.dims.tp: {tp} does not divide model.{key}={heads}; each rank holds "
                f"whole attention heads: pick a tp that divides {heads}"
            )
    hidden = getattr(cfg.model, "mlp_hidden", None)
    if hidden is not None and hidden % tp:
        raise ValueError(
            f"parallel.dims.tp: {tp} does not divide model.mlp_hidden={hidden}; each rank holds "
            f"an equal share of the MLP hidden units: pick a tp that divides {hidden}, or a "
            "model.mlp_hidden (a --prune fraction) that tp divides"
        )
    if cfg.loss.label_smoothing:
        raise ValueError(
            "loss.label_smoothing: the loss from vocabulary-split logits (parallel.dims.tp > 1, "
            "torch's loss_parallel) has none; set it to 0 or use parallel.dims.tp=1"
        )


def _check_async_ps(cfg: Config) -> None:
    """What the asynchronous parameter server cannot honour, named by its key."""
    servers_step = "the servers step the parameters, not the workers"
    if cfg.train.precision in ("16-mixed", "bf16-true"):
        raise ValueError(
            f"train.precision: `{cfg.train.precision}` with parallel.strategy=async_ps: "
            f"{servers_step}, in fp32 without a grad scaler; use `bf16-mixed` or `32`"
        )
    if cfg.checkpoint.async_save:
        raise ValueError(
            "checkpoint.async_save: with parallel.strategy=async_ps only worker 0 saves and it "
            "has no process group for background saves; set it to false"
        )
    if cfg.train.guard.nonfinite == "rollback":
        raise ValueError(
            "train.guard.nonfinite: `rollback` with parallel.strategy=async_ps cannot roll the "
            f"servers back ({servers_step}); use `skip` or `stop`"
        )


def _loss_name(raw: dict) -> Any:
    loss = raw.get("loss")
    return loss.get("name") if isinstance(loss, dict) else getattr(loss, "name", None)


# --------------------------------------------------------------------------- loading
def load_config(source: str | Path | dict | Config, overrides: list[str] = ()) -> Config:
    """Build a validated Config from a YAML path, a dict or a Config, plus dotted overrides."""
    if isinstance(source, Config):
        if not overrides:
            return source
        raw = source.to_dict()
        explicit = {s.path: _fields_set(source, s.path) for s in _SWITCHES}
    elif isinstance(source, dict):
        raw = _deep_copy(source)
        explicit = choices.explicit_keys(raw, _SWITCHES)
    else:
        raw = _read_yaml(Path(source))
        explicit = choices.explicit_keys(raw, _SWITCHES)
    before = {switch.path: choices.choice_before(raw, switch) for switch in _SWITCHES}
    for item in overrides:
        _apply_override(raw, item)
    notes = choices.drop_switched_options(
        raw,
        _SWITCHES,
        explicit=explicit,
        override_keys=[tuple(item.partition("=")[0].split(".")) for item in overrides],
        before=before,
        where=str(source) if isinstance(source, str | Path) else "the config",
    )
    cfg = validate_config(raw)
    choices.warn_notes(notes)  # only for a config that is used: a refusal stays one line
    return cfg


def load_run_config(path: Path) -> Config:
    """A run directory's resolved config.yaml; a value it refuses names the file, which the
    user never typed (edited since, or written by another version)."""
    try:
        return load_config(path)
    except ConfigError as exc:
        if str(exc).startswith(str(path)):
            raise
        problems = [f"{path}: {line}" for line in exc.problems]
        raise ConfigError(f"{path}: {exc}", problems=problems) from None


def _fields_set(cfg: BaseModel, path: tuple[str, ...]) -> set[str]:
    """The keys a Config's section was given (not its defaults)."""
    for part in path:
        cfg = getattr(cfg, part)
    return set(cfg.model_fields_set)


def validate_config(raw: dict) -> Config:
    model = raw.get("model")
    if isinstance(model, dict) and "name" not in model:
        raw = {**raw, "model": {"name": "cnn", **model}}
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(group, raw) for group in _by_key(exc.errors())]
        raise ConfigError(problems[0], problems=problems) from None
    if cfg.ensemble is not None:
        member_configs(cfg)  # a member override that does not load is named by its member
    return cfg


def member_configs(cfg: Config) -> list[Config]:
    """Each ensemble member's config: a normal run in the ensemble's `members/` folder (a
    snapshot ensemble: its one run, whose cycle ends are the members)."""
    raw = cfg.to_dict()
    members = []
    for index in range(num_runs(cfg.ensemble)):
        overrides = member_overrides(cfg.ensemble, index)
        try:
            with warnings.catch_warnings():  # a member's model switch is what it asked for
                warnings.simplefilter("ignore", choices.ConfigNote)
                member = load_config(member_raw(raw, index), overrides)
            check_member_strategy(
                member.parallel.strategy, cfg.ensemble.member_nproc, key="parallel.strategy"
            )
            check_member_batch(member, cfg.ensemble.member_nproc)
            members.append(member)
        except (ConfigError, ValueError) as exc:
            where = (
                f"ensemble.member_overrides.{index}" if overrides else f"ensemble member {index}"
            )
            raise ConfigError(f"{where}: {exc}") from None
    return members


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}); a config is a YAML text file saved as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror})") from None
    raw = load_value(text, Config, where=str(path), file=True)
    if raw is None:
        raise ConfigError(
            f"{path}: the config is empty (or only comments); give at least one section, "
            "or `{}` to train every default"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    return raw


def _apply_override(raw: dict, item: str) -> None:
    """Set ``section.key=value``; the value is YAML read as the field's type (a string
    field takes `off` or `32` as written, a list field a YAML list)."""
    key, sep, text = item.partition("=")
    parts = key.split(".")
    if not sep or not key:
        raise ConfigError(f"override {_echo(item)}: expected KEY=VALUE, e.g. optim.lr=3e-4")
    if not all(parts):
        raise ConfigError(
            f"override {_echo(item)}: the key {_echo(key)} has an empty part; write "
            "section.key=value, e.g. optim.lr=3e-4"
        )
    field = field_at(Config, raw, parts)
    annotation = field.annotation if field is not None else None
    try:
        value = load_value(text, annotation, where=key, default=field and field.default)
    except ConfigError as exc:
        if not takes_text(annotation, text):
            raise ConfigError(f"{exc} in override {_echo(item)}") from None
        value = text  # not YAML, but a string field takes the text as written
    if text == "":
        value = ""
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {_echo(item)}: `{part}` is not a section")
        node = child
    node[parts[-1]] = value


def _deep_copy(raw: Any) -> Any:
    if isinstance(raw, dict):
        return {key: _deep_copy(value) for key, value in raw.items()}
    if isinstance(raw, list):
        return [_deep_copy(value) for value in raw]
    return raw


_MODEL_CLASSES = {cls.model_fields["name"].default: cls for cls in ModelConfig.__args__[0].__args__}


def _data_options(source: str) -> set[str] | None:
    """The data keys a source reads; `tensors` and `shards` keep them all (see DataConfig)."""
    if source in ("tensors", "shards"):
        return None
    unread = {key for key, readers in _SOURCE_KEYS.items() if source not in readers}
    return set(DataConfig.model_fields) - unread


def _options_of(table: dict[str, tuple[str, ...]], *shared: str):
    return lambda name: set(table[name]) | set(shared) if name in table else None


# Sections chosen by a name: an override that switches it drops the file's options the new
# choice does not take, with a note (`choices.py`).
_SWITCHES = (
    choices.Switch(
        ("model",),
        "name",
        "cnn",
        lambda name: set(_MODEL_CLASSES[name].model_fields) if name in _MODEL_CLASSES else None,
    ),
    choices.Switch(
        ("optim",),
        "name",
        "adamw",
        _options_of(choices.OPTIMIZER_OPTIONS, *choices.OPTIM_SECTIONS),
    ),
    choices.Switch(
        ("optim", "schedule"), "name", "constant", _options_of(choices.SCHEDULE_OPTIONS)
    ),
    choices.Switch(("loss",), "name", "auto", _options_of(choices.LOSS_OPTIONS)),
    choices.Switch(("data",), "source", "builtin", _data_options),
)


def _by_key(errors: list[dict]) -> list[list[dict]]:
    """pydantic's errors grouped by the key they are about (a union's members each report
    one for the same key, a list's items one under it), in the order first reported."""
    groups: list[tuple[tuple, list[dict]]] = []
    for error in errors:
        loc = _clean_loc(error["loc"])
        for key, group in groups:
            if loc[: len(key)] == key or key[: len(loc)] == loc:
                group.append(error)
                break
        else:
            groups.append((loc, [error]))
    return [group for _, group in groups]


def _describe(errors: list[dict], raw: dict) -> str:
    """Turn the errors about one key into one line: key path, received, expected, fix."""
    error = _first_error(errors)
    loc = _clean_loc(error["loc"], unions=error["type"] != "extra_forbidden")  # a key as typed
    path = ".".join(str(part) for part in loc) or "<root>"
    if error["type"] == "extra_forbidden":
        hint = _did_you_mean(loc, raw)
        return f"unknown key `{path}`{hint}"
    if error["type"] == "union_tag_invalid":
        names = ", ".join(sorted(_MODEL_CLASSES))
        return f"{path}.name: unknown model {error['ctx']['tag']!r}; expected one of {names}"
    if error["type"] == "value_error":
        return str(error["ctx"]["error"]) if "ctx" in error else error["msg"]
    received = error.get("input")
    message = error["msg"][:1].lower() + error["msg"][1:]
    return f"{path}: {message}, got {_echo(received)}"


def _first_error(errors: list[dict]) -> dict:
    """The first error, or where a union's members all failed at that key, the member that
    took the value's type (`[]` for `"none" | list`: the list is too short, not "not none")."""
    loc = _clean_loc(errors[0]["loc"])
    for error in errors:
        if _clean_loc(error["loc"])[: len(loc)] != loc:
            continue
        kind = error["type"]
        if not (kind.endswith(("_type", "_parsing")) or kind in _WRONG_KIND):
            return error
    return errors[0]


_WRONG_KIND = {"literal_error", "none_required", "bool_not_number", "model_type"}


# pydantic names a union member it tried in the error's location: `int`, `none`,
# `literal['auto']`, `function-after[...]`, `list[...]`; the key path is the rest.
_UNION_TAG = re.compile(r"^(int|float|str|bool|none|[a-z-]+\[.*\])$", re.DOTALL)


def _clean_loc(loc: tuple, *, unions: bool = True) -> tuple:
    """Drop pydantic's union tags from paths like ('model', 'mlp', 'hidden')."""
    if len(loc) >= 2 and loc[0] == "model" and loc[1] in _MODEL_CLASSES:
        loc = (loc[0], *loc[2:])
    if not unions:
        return tuple(loc)
    return tuple(part for part in loc if not (isinstance(part, str) and _UNION_TAG.match(part)))


def _did_you_mean(loc: tuple, raw: dict) -> str:
    section_cls = _section_class(loc[:-1], raw)
    if section_cls is None:
        return ""
    matches = difflib.get_close_matches(str(loc[-1]), list(section_cls.model_fields), n=1)
    if not matches:
        return f"; valid keys: {', '.join(section_cls.model_fields)}"
    return f"; did you mean `{'.'.join([*map(str, loc[:-1]), matches[0]])}`?"


def _section_class(parents: tuple, raw: dict) -> type[BaseModel] | None:
    cls: type[BaseModel] = Config
    node: Any = raw
    for part in parents:
        node = node.get(part, {}) if isinstance(node, dict) else {}
        if part == "model" and cls is Config:
            name = node.get("name", "cnn") if isinstance(node, dict) else "cnn"
            cls = _MODEL_CLASSES.get(name, CNNConfig)
            continue
        annotation = cls.model_fields.get(str(part))
        if annotation is None:
            return None
        # an optional section (`ensemble`, `distill`: `X | None`) suggests X's keys
        kinds = typing.get_args(annotation.annotation) or (annotation.annotation,)
        sections = [
            kind for kind in kinds if isinstance(kind, type) and issubclass(kind, BaseModel)
        ]
        if len(sections) != 1:
            return None
        cls = sections[0]
    return cls
