"""One training sample through the model before training: a model that does not fit the data
(4 features into ``nn.Linear(5, 3)``, 2 logits for 3 classes) is one line naming the input
shape and the outputs the data needs, instead of a matmul or index error deep in the loop."""

from __future__ import annotations

import torch
from torch import nn

from scaletrain.data import DataBundle, DataSpec, Split
from scaletrain.errors import UserError

# what a failed forward raises when shapes, ranks or dtypes do not fit
_FORWARD_ERRORS = (RuntimeError, ValueError, IndexError, TypeError)


def check_model_fits(model: nn.Module, bundle: DataBundle, *, loss_name: str = "auto") -> None:
    """Forward one train sample (eval mode, no grad; BatchNorm with 1 sample is fine there),
    restore the mode, and check the output against the data's classes or targets."""
    inputs, targets = _one_sample(bundle.train)
    spec = bundle.spec
    parameter = next(model.parameters(), None)
    if parameter is not None:
        inputs = inputs.to(parameter.device)
        if inputs.is_floating_point() and parameter.is_floating_point():
            inputs = inputs.to(parameter.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(inputs)
    except _FORWARD_ERRORS as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(
            f"model: {type(model).__name__} fails on one training sample of shape "
            f"{_shape(inputs)} ({reason}); {_needs(spec, targets, loss_name)}"
        ) from None
    finally:
        model.train(was_training)
    if isinstance(output, torch.Tensor):  # other outputs are the user's loss's business
        _check_output(model, output, inputs, targets, spec, loss_name=loss_name)


def _one_sample(split: Split) -> tuple[torch.Tensor, torch.Tensor]:
    """The first train sample as a batch of one, as the loader hands it to the model."""
    if split.inputs is not None:
        return split.inputs[:1], split.targets[:1]
    sample = split.dataset[0]
    inputs = torch.as_tensor(sample[0]).unsqueeze(0)
    targets = torch.as_tensor(sample[1]).unsqueeze(0)
    if split.transform is not None:
        inputs = split.transform(inputs)
    return inputs, targets


def _check_output(model, output, inputs, targets, spec: DataSpec, *, loss_name: str) -> None:
    expected = _expected_output(spec, targets, loss_name=loss_name)
    if tuple(output.shape) in expected:
        return
    raise UserError(
        f"model: {type(model).__name__} returns shape {_shape(output)} for one training sample "
        f"of shape {_shape(inputs)}; {_needs(spec, targets, loss_name)}"
    )


def _expected_output(spec: DataSpec, targets: torch.Tensor, *, loss_name: str) -> set[tuple]:
    """Output shapes the loss accepts for a batch of one."""
    if spec.task == "classification":
        shapes = {(1, spec.num_outputs)}
        if spec.num_outputs == 2 and loss_name == "bce_with_logits":
            shapes.add((1, 1))  # one logit for a binary problem
        return shapes
    if spec.task == "language_model":
        return {(*targets.shape, spec.num_outputs)}  # logits over the vocabulary per token
    width = targets[0].numel()
    shapes = {(1, width), tuple(targets.shape)}
    if width == 1:
        shapes.add((1,))
    return shapes


def _needs(spec: DataSpec, targets: torch.Tensor, loss_name: str) -> str:
    """What the data needs of the model, in its shapes."""
    wanted = f"the data needs a model taking inputs of shape (N, {_dims(spec.input_shape)})"
    if spec.task == "classification":
        binary = " (or 1 with loss bce_with_logits)" if spec.num_outputs == 2 else ""
        return (
            f"{wanted} and returning (N, {spec.num_outputs}): one logit for each of the "
            f"{spec.num_outputs} classes{binary}"
        )
    if spec.task == "language_model":
        return (
            f"{wanted} (token ids) and returning (N, {spec.input_shape[0]}, {spec.num_outputs}): "
            f"logits over the vocabulary of {spec.num_outputs} tokens"
        )
    width = targets[0].numel()
    noun = "target" if width == 1 else "targets"
    return f"{wanted} and returning (N, {width}): one value for each of the {width} {noun}"


def _shape(tensor: torch.Tensor) -> str:
    return f"({_dims(tensor.shape)})"


def _dims(shape) -> str:
    return ", ".join(str(size) for size in shape)
