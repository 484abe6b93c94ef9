"""Tensor parallelism applied from outside the model: one plan per registered model name.

A plan maps submodule names to `torch.distributed.tensor.parallel` styles (Megatron's split:
column-wise Q/K/V and MLP-in, row-wise out-projections), with sequence parallelism for the
norms (activations between blocks stay split along the sequence, 1/tp of them per rank) and
loss parallelism for the vocabulary projection (the logits stay split along the vocabulary;
`torch.distributed.tensor.parallel.loss_parallel` computes the cross-entropy from the
shards). The model code knows nothing of it: `Attention` derives its local head count from
the projection's output width, so a column-wise shard of Q/K/V is a shard of heads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

from scaletrain.errors import ConfigError


@dataclass(frozen=True)
class TensorParallelPlan:
    """How one registered model is split: `check` refuses what cannot be (before the run
    directory exists), `apply` parallelizes the model in place."""

    apply: Callable[[nn.Module, DeviceMesh], None]
    check: Callable[[nn.Module, int], None]


TP_PLANS: dict[str, TensorParallelPlan] = {}  # model name -> its plan


def tp_plan_for(model_name: str | None, *, tp: int) -> TensorParallelPlan:
    """The plan of `model.name`, or one line saying that this model cannot be split."""
    plan = TP_PLANS.get(model_name or "")
    if plan is None:
        raise ConfigError(
            f"parallel.dims.tp: {tp} needs a tensor-parallel plan, and model.name={model_name} "
            f"has none (plans: {', '.join(sorted(TP_PLANS))}); use parallel.dims.tp=1 and "
            "shard it with dp_shard instead"
        )
    return plan


def check_tensor_parallel(model: nn.Module, *, model_name: str | None, tp: int) -> None:
    """One line for a model that `tp` ranks cannot split; nothing else happens."""
    tp_plan_for(model_name, tp=tp).check(model, tp)


def apply_tensor_parallel(model: nn.Module, tp_mesh: DeviceMesh, *, model_name: str | None):
    """Split `model` over `tp_mesh` in place by its registered plan."""
    plan = tp_plan_for(model_name, tp=tp_mesh.size())
    plan.check(model, tp_mesh.size())
    plan.apply(model, tp_mesh)


class FullOutput(nn.Module):
    """Evaluation's view of a tensor-parallel model: whole logits, as plain tensors.

    Metrics, predictions and generation read the logits outside `loss_parallel`; gathering
    them costs one all-gather per batch, acceptable outside the training step.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        return full_value(self.model(*args, **kwargs))


def local_value(tensor):
    """A replicated DTensor's value as a plain tensor (the loss under loss parallel)."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def full_value(tensor):
    """A split DTensor gathered whole (logits kept for training metrics); else as it is."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def parallelize_gpt(model: nn.Module, tp_mesh: DeviceMesh) -> None:
    """torchtitan's Llama plan, for `models/gpt.py` (its module names are the contract); a
    pipeline stage (`pipeline_split.StageModule`) gets the plan of the parts it holds."""
    tied = _is_tied(model)  # before: the split gives the head a weight of its own
    parallelize_module(model, tp_mesh, _top_plan(model))
    if tied:
        # the embedding's row-wise and the head's column-wise split both cut the (vocab,
        # d_model) weight along dim 0 on one mesh: one DTensor serves both, tied again
        model.head.weight = model.tok_emb.weight
    blocks = model.blocks.values() if isinstance(model.blocks, nn.ModuleDict) else model.blocks
    for block in blocks:
        parallelize_module(block, tp_mesh, _block_plan(block))


def _is_tied(model: nn.Module) -> bool:
    head, embedding = model.head, model.tok_emb
    return head is not None and embedding is not None and head.weight is embedding.weight


def _top_plan(model: nn.Module) -> dict:
    """The embeddings (first stage) and the final norm and head (last stage)."""
    top = {}
    if model.tok_emb is not None:
        # each rank looks up the rows of its vocabulary shard; the sum over ranks is
        # reduce-scattered along the sequence: blocks start sequence-parallel
        top["tok_emb"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(1))
    if getattr(model, "pos_emb", None) is not None:
        # positions (T,) -> (T, C): each rank keeps the rows of its sequence shard
        top["pos_emb"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(0))
    if model.head is not None:
        top["norm"] = SequenceParallel()
        # logits stay split along the vocabulary: the loss runs under loss_parallel
        top["head"] = ColwiseParallel(
            input_layouts=Shard(1), output_layouts=Shard(-1), use_local_output=False
        )
    return top


def _block_plan(block: nn.Module) -> dict:
    """Norms on sequence shards; attention and MLP on head / hidden shards (Megatron)."""
    plan = {
        "attn_norm": SequenceParallel(),
        # (x, kv): the sequence gathered for attention; the KV cache is left alone
        "attn": PrepareModuleInput(
            input_layouts=(Shard(1), None), desired_input_layouts=(Replicate(), None)
        ),
        "attn.q_proj": ColwiseParallel(),
        "attn.k_proj": ColwiseParallel(),
        "attn.v_proj": ColwiseParallel(),
        "attn.out_proj": RowwiseParallel(output_layouts=Shard(1)),
        "mlp_norm": SequenceParallel(),
        "mlp": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
        "mlp.w_in": ColwiseParallel(),
        "mlp.w_out": RowwiseParallel(output_layouts=Shard(1)),
    }
    if getattr(block.mlp, "w_gate", None) is not None:  # SwiGLU
        plan["mlp.w_gate"] = ColwiseParallel()
    return plan


def check_gpt(model: nn.Module, tp: int) -> None:
    """Whole heads per rank, and per-token logits (a pooled classifier would average only
    its rank's part of the sequence)."""
    if getattr(model, "task", "language_model") != "language_model":
        raise ConfigError(
            f"parallel.dims.tp: {tp} splits gpt for data.task=language_model only; its "
            f"{model.task} head averages over the sequence, which sequence parallelism "
            "splits: use parallel.dims.tp=1"
        )
    attn = model.blocks[0].attn
    head_dim = attn.head_dim
    for name in ("q_proj", "k_proj"):
        heads = getattr(attn, name).out_features // head_dim
        if heads % tp:
            raise ConfigError(
                f"parallel.dims.tp: {tp} does not divide the model's {heads} "
                f"{'query' if name == 'q_proj' else 'key/value'} heads (model.n_head); "
                "each rank holds whole heads: pick a tp that divides it"
            )
    hidden = model.blocks[0].mlp.w_in.out_features  # DTensor cannot split it unevenly
    if hidden % tp:
        raise ConfigError(
            f"parallel.dims.tp: {tp} does not divide the MLP's {hidden} hidden units "
            "(model.mlp_hidden, or model.mlp_ratio x model.d_model); set model.mlp_hidden to "
            f"a multiple of {tp}"
        )


TP_PLANS["gpt"] = TensorParallelPlan(apply=parallelize_gpt, check=check_gpt)
